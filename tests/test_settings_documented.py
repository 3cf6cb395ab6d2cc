"""Every environment knob is read in usage_etl/settings.py and documented in docs/configuration.md.

A knob is any `USAGE_ETL_*` name in the package, the scripts, the deployment files, the
benchmarks or the tests' own switches, and every field of a settings class (a field is a
variable even where its name is never spelled out). Adding one without its row in the
configuration page fails here, and so does reading the environment anywhere but settings.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pydantic_settings import BaseSettings

from usage_etl import settings

REPO = Path(__file__).resolve().parents[1]
KNOB = re.compile(r"\bUSAGE_ETL_[A-Z0-9_]*[A-Z0-9]\b")
# Reads the environment outside settings.py on purpose: a test-only switch (crash points).
TEST_ONLY_READERS = {"usage_etl/crash_points.py"}


def knobs_in(paths: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        for name in KNOB.findall(path.read_text(encoding="utf-8", errors="replace")):
            found.setdefault(name, path)
    return found


def settings_classes() -> list[type[BaseSettings]]:
    return [
        value
        for value in vars(settings).values()
        if isinstance(value, type) and issubclass(value, BaseSettings) and value is not BaseSettings
    ]


def documented() -> set[str]:
    return set(KNOB.findall((REPO / "docs" / "configuration.md").read_text()))


def test_every_usage_etl_knob_has_a_row_in_the_configuration_page():
    sources = [
        *sorted((REPO / "usage_etl").rglob("*.py")),
        *sorted(p for p in (REPO / "scripts").rglob("*") if p.is_file()),
        *sorted(p for p in (REPO / "deploy").rglob("*") if p.is_file()),
        *sorted((REPO / "bench").rglob("*.py")),
        *sorted((REPO / "tests").rglob("*.py")),
    ]
    knobs = knobs_in([p for p in sources if p.name != Path(__file__).name])
    assert len(knobs) > 20  # the scan itself works (the package reads dozens of knobs)
    missing = {name: str(path.relative_to(REPO)) for name, path in knobs.items()
               if name not in documented()}  # fmt: skip
    assert not missing, f"add these to docs/configuration.md: {missing}"


def test_every_field_of_every_settings_class_has_a_row_in_the_configuration_page():
    classes = settings_classes()
    assert len(classes) >= 6  # Settings, LocationSettings, Tuning, … (the scan itself works)
    fields = {
        f"{cls.model_config.get('env_prefix', '')}{name}".upper(): cls.__name__
        for cls in classes
        for name in cls.model_fields
    }
    missing = {name: cls for name, cls in fields.items() if name not in documented()}
    assert not missing, f"add these to docs/configuration.md: {missing}"


def _environment_reads(tree: ast.AST) -> list[int]:
    """Lines that read os.environ / os.getenv (writes, like the demo's, are not reads)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("getenv", "environ"):
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                lines.append(node.lineno)
    return lines


def _writes(source: str, line: int) -> bool:
    text = source.splitlines()[line - 1]
    return bool(re.search(r"os\.environ(\[[^\]]+\]\s*=[^=]|\.(setdefault|update)\()", text)
                or "{**os.environ" in text)  # fmt: skip


def test_only_settings_reads_the_environment():
    readers = {}
    for path in sorted((REPO / "usage_etl").rglob("*.py")):
        name = str(path.relative_to(REPO))
        if name == "usage_etl/settings.py" or name in TEST_ONLY_READERS:
            continue
        source = path.read_text(encoding="utf-8")
        reads = [n for n in _environment_reads(ast.parse(source)) if not _writes(source, n)]
        if reads:
            readers[name] = reads
        if re.search(r"\(BaseSettings\)", source):
            readers.setdefault(name, []).append("a settings class")
    assert not readers, f"read these knobs in usage_etl/settings.py instead: {readers}"
