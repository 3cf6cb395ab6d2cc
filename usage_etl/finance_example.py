"""The demo figures of docs/finance.md, generated from a demo run (never typed by hand).

    bash scripts/demo.sh                  # or: usage-etl demo
    source dagster_home/demo.env
    .venv/bin/python -m usage_etl.finance_example docs/finance.md

replaces what lies between the two markers below with the output of
`usage-etl invoices --period 2026-10 --account globex` on the demo's data (piped, so full
width). Everything outside the markers is left as it is.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BEGIN = "<!-- BEGIN demo-figures (generated: python -m usage_etl.finance_example) -->"
END = "<!-- END demo-figures -->"


def render(period: str, account: str, cli: str | None = None) -> str:
    """The command and its output, as a Markdown code block."""
    cli = cli or str(Path(sys.executable).with_name("usage-etl"))
    args = ["invoices", "--period", period, "--account", account]
    result = subprocess.run([cli, *args], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"usage-etl {' '.join(args)} failed: {result.stderr.strip()}")
    body = "\n".join(f"    {line}".rstrip() for line in result.stdout.rstrip().splitlines())
    return f"    $ usage-etl {' '.join(args)}\n{body}\n"


def replace_block(text: str, block: str) -> str:
    """`text` with the part between BEGIN and END replaced by `block`."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError("expected exactly one BEGIN demo-figures … END demo-figures block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{block.rstrip()}\n\n{END}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="docs/finance.md")
    parser.add_argument("--period", default="2026-10")
    parser.add_argument("--account", default="globex")
    options = parser.parse_args(argv)
    text = options.path.read_text()
    options.path.write_text(replace_block(text, render(options.period, options.account)))
    print(f"updated the demo figures in {options.path}")


if __name__ == "__main__":
    main()
