"""How commands print: full-width when piped, human units with exact `--raw`, typed JSON,
RFC 3339 UTC timestamps.

* A terminal gets rich tables that fold long cells instead of cutting them; anything else (a
  pipe, a file, a report) gets the same tables at their natural width: a figure is never
  shortened to `…`.
* Byte counts show in binary units (`3.26 GiB`, rounded half up from the exact integer, no
  floats); `--raw` prints the exact integers. JSON and CSV always carry exact values.
* JSON keeps types: integers as numbers, NULL as null, exact decimals as strings (money must
  not pass through a float), timestamps as `2026-10-20T00:00:00Z`.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from rich.console import Console
from rich.table import Table

BYTE_UNITS = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
PIPED_WIDTH = 100_000  # wider than any row: rich then lays tables out at their natural width


class Format(StrEnum):
    """`--format` of the commands that print rows."""

    table = "table"
    csv = "csv"
    json = "json"


def stdout_console() -> Console:
    """A console for results: terminal width on a terminal, natural width otherwise."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=PIPED_WIDTH, color_system=None, highlight=False, soft_wrap=True)


def table(title: str, columns: list[tuple[str, bool]]) -> Table:
    """A table whose cells fold (wrap) rather than end in `…` when the terminal is narrow."""
    result = Table(title=title, title_justify="left")
    for name, numeric in columns:
        result.add_column(name, justify="right" if numeric else "left", overflow="fold")
    return result


def human_bytes(value: int) -> str:
    """`3.26 GiB`: the largest binary unit that keeps the number >= 1, two decimals."""
    for unit, size in BYTE_UNITS:
        if abs(value) >= size:
            scaled = (Decimal(value) / Decimal(size)).quantize(Decimal("0.01"), ROUND_HALF_UP)
            return f"{scaled:,} {unit}"
    return f"{value:,} B"


def count(value: int) -> str:
    return f"{value:,}"


def rfc3339(moment: datetime) -> str:
    """UTC with a `Z` (naive values from ClickHouse are UTC by the contract)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def note(text: str) -> None:
    """A remark about the result (not the result): stderr, one unwrapped line."""
    print(text, file=sys.stderr, flush=True)


def csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def json_value(value):
    """Numbers and null keep their JSON type; everything else is spelled as in CSV."""
    if value is None or isinstance(value, bool | int):
        return value
    return csv_value(value)
