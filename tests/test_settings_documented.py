"""Every environment knob the code or scripts read is documented in docs/configuration.md.

A knob is any `USAGE_ETL_*` name in the package, the scripts or the tests' own switches; adding
one without its row in the configuration page fails here."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KNOB = re.compile(r"\bUSAGE_ETL_[A-Z0-9_]*[A-Z0-9]\b")


def knobs_in(paths: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        for name in KNOB.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, path)
    return found


def test_every_usage_etl_knob_has_a_row_in_the_configuration_page():
    sources = [
        *sorted((REPO / "usage_etl").rglob("*.py")),
        *sorted((REPO / "scripts").glob("*.sh")),
        *sorted((REPO / "tests").rglob("*.py")),
    ]
    knobs = knobs_in([p for p in sources if p.name != Path(__file__).name])
    assert len(knobs) > 20  # the scan itself works (the package reads dozens of knobs)
    documented = set(KNOB.findall((REPO / "docs" / "configuration.md").read_text()))
    missing = {name: str(path.relative_to(REPO)) for name, path in knobs.items()
               if name not in documented}  # fmt: skip
    assert not missing, f"add these to docs/configuration.md: {missing}"
