"""The input formats of rollup files (contract §1): the one table every reader consults.

A key names its format by its suffix. Every place that turns a suffix or a format name into
behaviour asks this table: `schema.classify_key` (which names are rollup files at all),
`RollupKey.format`, the Python readers (`usage/readers.py: read_rollup_file`), ClickHouse's
native path (`usage/native.py`: which files it may read and with which input format) and the
simulator (`simulator/writer.py: body`, file names). Nothing falls back to a default: a suffix
or name the table does not know raises `UnknownFormat`, because only a programming error can
bring one there — a listed object with another suffix is ignored by `classify_key` before any
reader sees it.

Adding a format is one entry here and one reader function in `usage/readers.py`. With
`native=None` ClickHouse hands its files back and Python reads them all; naming a ClickHouse
input format native.py already reads ("Parquet", "LineAsString") lets ClickHouse take them too.
The simulator writes only the formats `simulator/writer.py: body` knows and refuses the others.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RollupFormat:
    name: str  # the ledger's `format` column and `RollupKey.format`
    suffix: str  # a rollup key's file name ends with it
    reader: str  # the function of usage_etl/usage/readers.py that parses a file's bytes
    native: str | None  # the ClickHouse input format native.py reads it with; None: Python only


FORMATS: tuple[RollupFormat, ...] = (
    RollupFormat("parquet", ".parquet", reader="read_parquet", native="Parquet"),
    RollupFormat("ndjson.gz", ".ndjson.gz", reader="read_ndjson_gz", native="LineAsString"),
)
SUFFIXES = tuple(f.suffix for f in FORMATS)
_BY_NAME = {f.name: f for f in FORMATS}
# Longest suffix first: a name ending in both ".x.gz" and ".gz" is the more specific format.
_BY_SUFFIX = sorted(FORMATS, key=lambda f: len(f.suffix), reverse=True)


class UnknownFormat(ValueError):
    """A suffix or format name the registry does not know reached code that reads files."""


def is_rollup_name(name: str) -> bool:
    """Does a file name end with a registered suffix?"""
    return name.endswith(SUFFIXES)


def format_of_name(name: str) -> RollupFormat:
    """The format of a rollup file name (or key), by its suffix."""
    for entry in _BY_SUFFIX:
        if name.endswith(entry.suffix):
            return entry
    raise UnknownFormat(
        f"{name!r} has no registered rollup suffix (known: {', '.join(SUFFIXES)}); "
        "register the format in usage_etl/rollups/formats.py"
    )


def rollup_format(fmt: str) -> RollupFormat:
    """A registered format by its name ("parquet", "ndjson.gz")."""
    try:
        return _BY_NAME[fmt]
    except KeyError:
        raise UnknownFormat(
            f"unknown rollup format {fmt!r} (known: {', '.join(_BY_NAME)}); "
            "register the format in usage_etl/rollups/formats.py"
        ) from None
