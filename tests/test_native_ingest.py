"""ClickHouse reading rollups from S3 itself (usage/native.py) decides exactly as Python would.

Every test loads the same objects twice into the same database, once through the Python path
only and once with the native path, and compares what each staged, quarantined and recorded.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from rollup_files import PARQUET_SCHEMA, Landing, json_line, ndjson_gz_bytes, parquet_bytes, rollup

from usage_etl.rollups.schema import RollupKey
from usage_etl.usage import native
from usage_etl.usage.ledger import counting_rows_sql
from usage_etl.usage.load import ingest_day
from usage_etl.usage.publish import publish_day
from usage_etl.warehouse.build_tables import drop_stale_build_tables
from usage_etl.warehouse.client import WarehouseError

REPO = Path(__file__).resolve().parents[1]

DAY = date(2026, 10, 5)
STAGED = (
    "source_key, source_etag, source_row, event_id, node_id, region, account_id, project_id, "
    "direction, operation, artifact_kind, network_path, window_start, window_seconds, bytes, "
    "request_count, emitted_at"
)


@pytest.fixture
def landing(s3_server, settings) -> Landing:
    return Landing(s3_server, settings)


@pytest.fixture(autouse=True)
def s3_reads(monkeypatch):
    """These tests read through s3(), the path of a ClickHouse server (and of the embedded
    engine with USAGE_ETL_NATIVE_FETCH=false); the fetched path is tests/test_fetched_ingest.py
    and the "fetched" case below."""
    monkeypatch.setattr(native, "FETCH", False)


def _parquet(rows: list[dict], **casts: pl.DataType) -> bytes:
    frame = pl.DataFrame(rows, schema=PARQUET_SCHEMA)
    frame = frame.with_columns(*(pl.col(name).cast(dtype) for name, dtype in casts.items()))
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def _rows(prefix: str, n: int = 5, **overrides) -> list[dict]:
    return [rollup(f"{prefix}-{i}", minute=i, bytes=100 + i, **overrides) for i in range(n)]


CLEAN = {
    "plain.parquet": lambda: parquet_bytes(_rows("plain")),
    "no-network-path.parquet": lambda: parquet_bytes(_rows("nonet"), drop=("network_path",)),
    "null-project.parquet": lambda: parquet_bytes(_rows("noproj", project_id=None)),
    "int32-nanos-utc.parquet": lambda: _parquet(
        _rows("narrow"),
        bytes=pl.Int32,
        window_seconds=pl.Int32,
        window_start=pl.Datetime("ns", "UTC"),
        emitted_at=pl.Datetime("ns", "UTC"),
    ),
    "naive-micros.parquet": lambda: _parquet(
        _rows("naive"), window_start=pl.Datetime("us"), emitted_at=pl.Datetime("us")
    ),
    # The same event_ids as plain.parquet, corrected later: dedupe must see both paths' rows.
    "plain-corrected.parquet": lambda: parquet_bytes(_rows("plain", emitted_minute=30)),
}
HANDED_BACK = {
    "millis.parquet": (
        lambda: _parquet(
            _rows("ms"), window_start=pl.Datetime("ms", "UTC"), emitted_at=pl.Datetime("ms", "UTC")
        ),
        "column types",
    ),
    "bad-row.parquet": (
        lambda: parquet_bytes([*_rows("badrow"), rollup("neg", bytes=-5)]),
        "rows rejected",
    ),
    "wrong-node.parquet": (
        lambda: parquet_bytes([*_rows("wrongnode"), rollup("other", node_id="node-b")]),
        "rows rejected",
    ),
    "outside-hour.parquet": (
        lambda: parquet_bytes([*_rows("outside"), rollup("late", hour=4)]),
        "rows rejected",
    ),
    "corrupt.parquet": (lambda: b"PAR1 this is not parquet PAR1", "unreadable footer"),
    "bytes-as-text.parquet": (
        lambda: _parquet(_rows("text"), bytes=pl.String),
        "column types",
    ),
}


def _lines(prefix: str, *edits: tuple[str, str], n: int = 3, **overrides) -> list[bytes]:
    """NDJSON lines of `_rows`, with raw text replacements applied to the last line."""
    text = [json_line(row).decode() for row in _rows(prefix, n, **overrides)]
    for old, new in edits:
        assert old in text[-1], old
        text[-1] = text[-1].replace(old, new, 1)
    return [t.encode() for t in text]


def _gz(lines: list[bytes], end: bytes = b"\n") -> bytes:
    return gzip.compress(b"\n".join(lines) + end)


def _edited(prefix: str, old: str, new: str) -> Callable[[], bytes]:
    """A file of three lines whose last has `old` replaced by `new`."""
    return lambda: _gz(_lines(prefix, (old, new)))


def _polars_ndjson(rows: list[dict]) -> bytes:
    """Compact lines, as the simulator (and polars-based writers) produce them."""
    frame = pl.DataFrame(rows, schema=PARQUET_SCHEMA)
    text = frame.with_columns(pl.col("window_start", "emitted_at").dt.strftime("%+"))
    return gzip.compress(text.write_ndjson().encode())


NDJSON_CLEAN = {
    "plain.ndjson.gz": lambda: ndjson_gz_bytes(_rows("json")),
    "compact-polars.ndjson.gz": lambda: _polars_ndjson(_rows("compact")),
    "null-project-no-network.ndjson.gz": lambda: _gz(
        [
            json.dumps({k: v for k, v in json.loads(line).items() if k != "network_path"}).encode()
            for line in _lines("nulls", project_id=None)
        ],
        end=b"",  # no newline after the last line
    ),
    "fractions-and-offsets.ndjson.gz": lambda: _gz(
        [
            *_lines("frac", ('00Z"', '00.5Z"')),
            *_lines("frac6", ('00Z"', '00.123456+00:00"')),
        ]
    ),
    # Of duplicate keys the first counts, on both paths.
    "duplicate-key.ndjson.gz": _edited("dupkey", '"bytes": 102', '"bytes": 7, "bytes": 9'),
    "json-corrected.ndjson.gz": lambda: ndjson_gz_bytes(_rows("json", emitted_minute=30)),
}
REJECTED = "rows rejected"
NDJSON_HANDED_BACK = {
    # Valid lines Python reads, in a shape this path leaves to it.
    "escaped.ndjson.gz": (_edited("esc", '"xcode"', '"xc\\u006fde"'), REJECTED),
    "offset.ndjson.gz": (_edited("off", '03:02:00Z"', '05:02:00+02:00"'), REJECTED),
    "seven-digits.ndjson.gz": (_edited("seven", '00Z"', '00.1234567Z"'), REJECTED),
    "huge-bytes.ndjson.gz": (_edited("huge", '"bytes": 102', f'"bytes": {2**62}'), REJECTED),
    "unknown-key.ndjson.gz": (_edited("unk", "{", '{"colour": "red", '), REJECTED),
    "empty.ndjson.gz": (lambda: gzip.compress(b""), "no rows read"),
    # Lines Python quarantines.
    "bytes-as-text.ndjson.gz": (_edited("btxt", '"bytes": 102', '"bytes": "102"'), REJECTED),
    "feb-30.ndjson.gz": (_edited("feb", "10-05T03:02", "02-30T03:02"), REJECTED),
    "leap-second.ndjson.gz": (_edited("leap", '03:02:00Z"', '03:02:60Z"'), REJECTED),
    "negative.ndjson.gz": (_edited("neg", '"bytes": 102', '"bytes": -102'), REJECTED),
    "blank-line.ndjson.gz": (lambda: _gz([*_lines("blank"), b"", *_lines("blank2")]), REJECTED),
    "cut-line.ndjson.gz": (
        lambda: _gz([*_lines("cut"), b'{"event_id": "cut-x", "sch']),
        REJECTED,
    ),
    "truncated.ndjson.gz": (
        lambda: _gz(_lines("trunc", n=40))[:-30],
        "ClickHouse could not read it",
    ),
}


def _put_day(landing: Landing, files: dict) -> None:
    for name, make in files.items():
        landing.put(name, make() if callable(make) else make[0]())


def _state(warehouse) -> dict[str, list]:
    return {
        "staged": warehouse.query_rows(
            f"SELECT {STAGED} FROM ({counting_rows_sql(warehouse)}) ORDER BY ALL", {"day": DAY}
        ),
        "quarantined": warehouse.query_rows(
            f"SELECT source_key, toString(scope), source_row, rule, field, value "
            f"FROM {warehouse.table('quarantined_rows')} ORDER BY ALL"
        ),
        "ledger": warehouse.query_rows(
            f"SELECT object_key, argMax(etag, recorded_at), toString(argMax(status, recorded_at)),"
            f" argMax(rows_loaded, recorded_at), argMax(rows_quarantined, recorded_at) "
            f"FROM {warehouse.table('ingest_objects')} GROUP BY object_key ORDER BY ALL"
        ),
    }


def _reset(warehouse) -> None:
    for table in ("ingest_objects", "rollup_rows", "quarantined_rows"):
        warehouse.command(f"TRUNCATE TABLE {warehouse.table(table)}")


def _ingest(warehouse, landing: Landing, access: native.S3Access | None, load_id: str):
    return ingest_day(warehouse, landing.area, DAY, load_id=load_id, s3_access=access)


def _statements(monkeypatch, warehouse) -> list[str]:
    """Every command the warehouse runs from now on, in order."""
    seen: list[str] = []
    command = warehouse.command

    def recorded(sql, *args, **kwargs):
        seen.append(sql)
        return command(sql, *args, **kwargs)

    monkeypatch.setattr(warehouse, "command", recorded)
    return seen


def _stage_reads(statements: list[str], source: str = "s3({s3_url") -> list[str]:
    return [s for s in statements if "_build_stage_" in s and source in s]


def _fetched_reads(statements: list[str]) -> list[str]:
    return _stage_reads(statements, "file({file_glob")


def _stage_tables(warehouse) -> list[str]:
    return warehouse.query_rows(
        "SELECT name FROM system.tables WHERE database = {db:String} "
        "AND startsWith(name, '_build_stage_')",
        {"db": warehouse.database},
    )


@pytest.mark.parametrize("path", ["staged", "direct", "fetched"])
def test_native_path_stages_quarantines_and_records_exactly_what_python_does(
    landing, warehouse, monkeypatch, path
):
    """Every native path: small files staged from s3() (a server's path for every file here),
    read directly from s3() (USAGE_ETL_NATIVE_STAGE_ROWS=0, the path of large files), and
    fetched once and staged from the local copies (the embedded engine's path, fetch.py)."""
    _put_day(landing, {**CLEAN, **HANDED_BACK, **NDJSON_CLEAN, **NDJSON_HANDED_BACK})
    python_report = _ingest(warehouse, landing, None, "python")
    by_python = _state(warehouse)
    _reset(warehouse)

    if path == "direct":
        monkeypatch.setattr(native, "STAGE_ROWS", 0)
    monkeypatch.setattr(native, "FETCH", path == "fetched")
    statements = _statements(monkeypatch, warehouse)
    access = native.s3_access_from_client(landing.client)
    report = _ingest(warehouse, landing, access, "native")
    by_native = _state(warehouse)

    assert bool(_stage_reads(statements)) == (path == "staged")
    assert bool(_fetched_reads(statements)) == (path == "fetched")
    assert not _stage_tables(warehouse)
    assert by_native == by_python
    assert report.objects_read_natively == len(CLEAN) + len(NDJSON_CLEAN)
    assert report.objects_handed_back == {
        landing.key(name): why for name, (_, why) in {**HANDED_BACK, **NDJSON_HANDED_BACK}.items()
    }
    assert (report.rows_loaded, report.rows_quarantined, report.objects_quarantined) == (
        python_report.rows_loaded, python_report.rows_quarantined,
        python_report.objects_quarantined,
    )  # fmt: skip
    # The rows staged natively for handed-back files never count, and dedupe spans both paths.
    staged_total = warehouse.query_one(
        f"SELECT count() FROM {warehouse.table('rollup_rows')}", {"day": DAY}
    )
    assert staged_total > len(by_native["staged"])
    # The native inserts write load_key per file: it must still be sql/005's per-row hash.
    assert not warehouse.query_one(
        f"SELECT count() FROM {warehouse.table('rollup_rows')} "
        "WHERE load_key != sipHash128(source_key, source_etag, run_id)"
    )
    published = publish_day(warehouse, DAY, "native")
    # plain.parquet is superseded by plain-corrected.parquet, plain.ndjson.gz by its correction.
    assert published.duplicates == 5 + 5
    assert published.rollups == len(by_native["staged"]) - 10
    # The publish's build and work tables are gone from disk, not only marked dropped.
    assert not warehouse.query_rows(
        "SELECT table FROM system.dropped_tables WHERE database = {db:String} "
        "AND startsWith(table, '_build_')",
        {"db": warehouse.database},
    )


def test_a_corrupt_file_inside_a_chunk_costs_only_itself(landing, warehouse):
    """The chunk query fails on the corrupt file's data pages (its footer reads fine), is split
    and retried: the clean files are still read natively."""
    good = parquet_bytes(_rows("good", n=50))
    footer_at = len(good) - 8 - int.from_bytes(good[-8:-4], "little")
    damaged = good[:4] + b"\xff" * (footer_at - 4) + good[footer_at:]  # pages wiped, footer kept
    for i in range(6):
        landing.put(f"clean-{i}.parquet", parquet_bytes(_rows(f"clean{i}")))
    landing.put("damaged.parquet", damaged)

    report = _ingest(warehouse, landing, native.s3_access_from_client(landing.client), "n")

    assert report.objects_read_natively == 6
    assert set(report.objects_handed_back) == {landing.key("damaged.parquet")}
    assert report.objects_quarantined == 1
    assert report.rows_loaded == 30


def test_a_failed_footer_query_does_not_answer_the_next_one(landing, warehouse):
    """The embedded engine leaves a failed query's unsent rows for the next query; the footer
    query after a failed one must return its own files' footers (else they look unreadable)."""
    clean = [
        landing.put(f"c-{i}.parquet", parquet_bytes(_rows(f"c{i}", n=2000))) for i in range(40)
    ]
    good = parquet_bytes(_rows("good", n=20))
    bad = [*clean, landing.put("truncated.parquet", good[: len(good) // 2])]
    others = [landing.put(f"o-{i}.parquet", parquet_bytes(_rows(f"o{i}"))) for i in range(3)]
    access = native.s3_access_from_client(landing.client)

    assert native._footers(warehouse, access, landing.bucket, bad) is None
    footers = native._footers(warehouse, access, landing.bucket, others)

    assert footers is not None
    assert sorted(f.key for f in footers) == sorted(others)


def test_a_truncated_footer_is_screened_out_in_one_query(landing, warehouse, monkeypatch):
    """A footer group failing on a truncated upload costs one screening query (files without a
    footer magic), not ~2·log2(n) halving queries; every file gets the same verdict as by
    halving alone (a file ending in PAR1 that still fails, corrupt.parquet, is halved out)."""
    good = parquet_bytes(_rows("good", n=20))
    keys = [landing.put(f"clean-{i}.parquet", parquet_bytes(_rows(f"c{i}"))) for i in range(12)]
    keys.insert(5, landing.put("truncated.parquet", good[: len(good) // 2]))
    keys.insert(9, landing.put("short.parquet", b"PAR"))
    access = native.s3_access_from_client(landing.client)
    bucket = landing.bucket
    sizes = {key: 1000 for key in keys}
    statements: list[str] = []
    query_rows = warehouse.query_rows

    def counted(sql, parameters=None, **kw):
        statements.append("RawBLOB" if "RawBLOB" in sql else "footers")
        return query_rows(sql, parameters, **kw)

    monkeypatch.setattr(warehouse, "query_rows", counted)
    halved = native.read_footers(warehouse, access, bucket, keys)
    halving = len(statements)
    statements.clear()
    screened = native.read_footers(warehouse, access, bucket, keys, sizes=sizes)

    assert screened == halved
    assert set(screened) == set(keys) - {
        landing.key("truncated.parquet"),
        landing.key("short.parquet"),
    }
    assert statements == ["footers", "RawBLOB", "footers"]
    assert halving > 2 * len(statements)

    statements.clear()
    with_corrupt = [*keys, landing.put("corrupt.parquet", b"PAR1 this is not parquet PAR1")]
    screened = native.read_footers(warehouse, access, bucket, with_corrupt,
                                   sizes={key: 1000 for key in with_corrupt})  # fmt: skip
    assert screened == halved  # the screen sets two aside, halving finds the third
    assert statements.count("RawBLOB") == 1

    statements.clear()
    native.read_footers(
        warehouse, access, bucket, keys, sizes={key: native.SCREEN_BYTES for key in keys}
    )
    assert "RawBLOB" not in statements  # large groups are only halved (no whole-file reads)


@pytest.mark.parametrize("problem", ["closed port", "wrong secret"])
def test_when_clickhouse_cannot_reach_s3_python_reads_everything(
    landing, warehouse, caplog, problem
):
    _put_day(landing, CLEAN)
    expected = _ingest(warehouse, landing, None, "python")
    by_python = _state(warehouse)
    _reset(warehouse)
    access = native.s3_access_from_client(landing.client)
    secret = "not-the-secret-0123456789"
    if problem == "closed port":
        access = native.S3Access("http://127.0.0.1:9", access.access_key, secret)
    else:
        access = native.S3Access(access.endpoint, access.access_key, secret)

    with caplog.at_level(logging.WARNING):
        report = _ingest(warehouse, landing, access, "native")

    assert report.objects_read_natively == 0
    assert report.rows_loaded == expected.rows_loaded
    assert _state(warehouse) == by_python
    assert "Python reads it" in caplog.text
    assert secret not in caplog.text


@pytest.mark.parametrize(
    ("error", "most_queries"),
    [
        ("Code: 354. inflate failed: (in file/uri bucket/k5) While reading", 2),
        ("Code: 1001. std::exception: something broke", 1 + 2 * 3),  # halves down to one file
    ],
)
def test_a_failing_chunk_hands_back_only_the_file_at_fault(monkeypatch, error, most_queries):
    """Unit: a failed read that names its file costs one retry; one that names none is split."""
    queries: list[list[str]] = []

    def insert_chunk(warehouse, access, bucket, day, chunk, load_id):
        keys = [c.key for c in chunk.files]
        queries.append(keys)
        if "k5" in keys:
            return error
        return {key: native.FileCounts("etag", 3) for key in keys}

    monkeypatch.setattr(native, "_insert_chunk", insert_chunk)
    rollup_key = RollupKey(DAY, 3, "node-a", "x.ndjson.gz")
    candidates = [native.Candidate(f"k{i}", "etag", rollup_key, None, 10) for i in range(8)]

    result = native.load_objects(None, None, "bucket", DAY, candidates, "load")

    assert result.reasons == {"k5": "ClickHouse could not read it"}
    assert sorted(result.loaded) == [f"k{i}" for i in range(8) if i != 5]
    assert len(queries) <= most_queries
    assert all(loaded.rows == 3 for loaded in result.loaded.values())


def test_a_native_run_never_loads_the_python_readers(landing, settings):
    """A day ClickHouse reads alone (plus a stray object, ignored) is ingested without importing
    polars: its ~40 MiB stay out of the run's memory (docs/performance.md, session 6)."""
    landing.put("plain.parquet", parquet_bytes(_rows("plain")))
    landing.put_raw("date=2026-10-05/notes.txt", b"not a rollup")
    script = """
        import sys
        from datetime import date
        from usage_etl.landing import Landing
        from usage_etl.usage.load import ingest_day
        from usage_etl.defs.resources import ClickHouseResource, LandingResource
        landing = LandingResource()
        client = landing.get_client()
        report = ingest_day(
            ClickHouseResource().get_warehouse(), Landing(client, landing.bucket, landing.prefix),
            date(2026, 10, 5), load_id="native-only", s3_access=landing.clickhouse_access(client),
        )
        print(report.objects_read_natively, report.objects_ignored, report.rows_loaded,
              "polars" in sys.modules)
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=True,
    )  # fmt: skip
    assert done.stdout.split() == ["1", "1", "5", "False"]


def test_staged_and_direct_paths_decide_alike_when_objects_change_mid_ingest(
    landing, warehouse, monkeypatch
):
    """The same objects, one Parquet and one NDJSON file overwritten after the listing (their
    ETags move): the staged path stages, quarantines, records and hands back exactly what the
    direct path does, rejected rows, truncated files and rejected lines included."""
    makers = {**CLEAN, **HANDED_BACK, **NDJSON_CLEAN, **NDJSON_HANDED_BACK}
    # Made once: gzip stamps the time, and both paths must read the very same objects.
    files = {name: make() if callable(make) else make[0]() for name, make in makers.items()}
    moved = {"plain.parquet": parquet_bytes(_rows("moved", n=7)),
             "plain.ndjson.gz": ndjson_gz_bytes(_rows("movedjson", n=4))}  # fmt: skip
    read_footers = native.read_footers
    access = native.s3_access_from_client(landing.client)
    outcomes = {}
    for path in ("direct", "staged"):
        _reset(warehouse)
        for name, body in files.items():
            landing.put(name, body)

        def overwritten_after_listing(*args, **kwargs):
            footers = read_footers(*args, **kwargs)
            for name, body in moved.items():
                landing.put(name, body)
            return footers

        with monkeypatch.context() as patch:
            patch.setattr(native, "read_footers", overwritten_after_listing)
            patch.setattr(native, "STAGE_ROWS", native.STAGE_ROWS if path == "staged" else 0)
            statements = _statements(patch, warehouse)
            report = _ingest(warehouse, landing, access, path)
        assert bool(_stage_reads(statements)) == (path == "staged")
        outcomes[path] = (_state(warehouse), report.objects_handed_back, report.rows_loaded,
                          report.rows_quarantined, report.objects_read_natively)  # fmt: skip

    assert outcomes["staged"] == outcomes["direct"]
    handed_back = outcomes["staged"][1]
    # No row passes at the listed ETag (Parquet: fewer rows than the footer's); NDJSON: the
    # lines were all read at another ETag.
    assert handed_back[landing.key("plain.parquet")] == "rows rejected"
    assert handed_back[landing.key("plain.ndjson.gz")] == "etag changed"
    ledger = {key: etag for key, etag, *_ in outcomes["staged"][0]["ledger"]}
    moved_etag = landing.client.head_object(Bucket=landing.bucket,
                                            Key=landing.key("plain.parquet"))["ETag"]  # fmt: skip
    assert ledger[landing.key("plain.parquet")] == moved_etag.strip('"')  # Python read the new one


def test_a_failing_object_in_a_staged_chunk_is_named_and_handed_back(
    landing, warehouse, monkeypatch
):
    """The staging read is the statement that reads S3: a truncated gzip stream fails it, its
    error names the file, and the chunk is read again without it (not halved)."""
    for i in range(6):
        landing.put(f"clean-{i}.ndjson.gz", ndjson_gz_bytes(_rows(f"clean{i}")))
    truncated = landing.put("truncated.ndjson.gz", _gz(_lines("trunc", n=40))[:-30])
    statements = _statements(monkeypatch, warehouse)

    report = _ingest(warehouse, landing, native.s3_access_from_client(landing.client), "n")

    assert report.objects_handed_back == {truncated: "ClickHouse could not read it"}
    assert report.objects_read_natively == 6
    assert (report.rows_loaded, report.objects_quarantined) == (30, 1)  # Python: a broken file
    assert len(_stage_reads(statements)) == 2
    assert not _stage_tables(warehouse)


def test_staging_tables_are_dropped_when_the_validating_insert_fails(
    landing, warehouse, monkeypatch
):
    """A failure of the warehouse itself after staging (here: out of memory) fails the run with
    ClickHouse's words and drops the staging table; no ledger entry names the attempt."""
    landing.put("plain.parquet", parquet_bytes(_rows("plain")))
    landing.put("plain.ndjson.gz", ndjson_gz_bytes(_rows("json")))
    command = warehouse.command

    def out_of_memory(sql, *args, **kwargs):
        if "_build_stage_" in sql and "INSERT INTO" in sql and "rollup_rows" in sql:
            raise WarehouseError("Code: 241. DB::Exception: MEMORY_LIMIT_EXCEEDED")
        return command(sql, *args, **kwargs)

    monkeypatch.setattr(warehouse, "command", out_of_memory)
    with pytest.raises(WarehouseError, match="MEMORY_LIMIT_EXCEEDED"):
        _ingest(warehouse, landing, native.s3_access_from_client(landing.client), "n")

    assert not _stage_tables(warehouse)
    assert not warehouse.query_one(f"SELECT count() FROM {warehouse.table('ingest_objects')}")


def test_a_staging_table_left_by_a_killed_run_is_swept(warehouse):
    """A run killed between creating and dropping its staging table leaves it: the stale
    build-table sweep (run when a run opens the warehouse) covers its name."""
    name = native.stage_table_name("run-1.s3.3")
    warehouse.command(f"CREATE TABLE {warehouse.table(name)} (line String) ENGINE = Memory")

    assert drop_stale_build_tables(warehouse) == []  # younger than a day: maybe a live run's
    assert drop_stale_build_tables(warehouse, older_than_seconds=0) == [name]
    assert not _stage_tables(warehouse)


def test_small_files_are_staged_in_capped_chunks_and_large_ones_read_directly(monkeypatch):
    """Unit: which chunks the day becomes. Parquet files up to STAGE_FILE_ROWS rows (footer)
    and NDJSON.gz files up to STAGE_FILE_BYTES are staged, at most about STAGE_ROWS rows
    (NDJSON: STAGE_CHUNK_BYTES, STAGE_CHUNK_FILES) per chunk, so the staging table's memory is
    bounded and a failing read repeats few files; the others keep
    the direct read. STAGE_ROWS = 0 stages nothing."""
    parquet_rows = [10, 40_000, 20, 30, 16_384, 16_385, 5, 0]
    ndjson_sizes = [1_000, 600 << 10, 499_500, 100, 200, 300, 400]
    parquet = [native.Candidate(f"p{i}", "e", RollupKey(DAY, 3, "node-a", "x.parquet"))
               for i in range(len(parquet_rows))]  # fmt: skip
    ndjson = [native.Candidate(f"j{i}", "e", RollupKey(DAY, 3, "node-a", "x.ndjson.gz"), None, n)
              for i, n in enumerate(ndjson_sizes)]  # fmt: skip
    footers = {
        c.key: native.Footer(c.key, "e", n, True)
        for c, n in zip(parquet, parquet_rows, strict=True)
    }
    monkeypatch.setattr(native, "read_footers", lambda *args, **kwargs: footers)
    monkeypatch.setattr(native, "STAGE_CHUNK_BYTES", 500_000)
    monkeypatch.setattr(native, "STAGE_CHUNK_FILES", 3)

    def chunks_with(stage_rows: int) -> list[tuple[bool, list[str]]]:
        chunks: list[tuple[bool, list[str]]] = []

        def insert_chunk(warehouse, access, bucket, day, chunk, load_id):
            chunks.append((chunk.staged, [c.key for c in chunk.files]))
            return {c.key: native.FileCounts("e", footers[c.key].rows if c.key in footers else 1)
                    for c in chunk.files}  # fmt: skip

        monkeypatch.setattr(native, "_insert_chunk", insert_chunk)
        monkeypatch.setattr(native, "STAGE_ROWS", stage_rows)
        result = native.load_objects(None, None, "bucket", DAY, [*parquet, *ndjson], "load")
        assert len(result.loaded) == len(parquet) + len(ndjson) and not result.reasons
        return chunks

    assert chunks_with(50) == [
        (True, ["p0", "p2", "p3"]),  # 60 rows: the cap is reached with p3
        (True, ["p4"]),  # 16,384 rows: small, alone over the cap
        (True, ["p6", "p7"]),
        (False, ["p1", "p5"]),
        (True, ["j0", "j2"]),  # listed bytes reach STAGE_CHUNK_BYTES with j2
        (True, ["j3", "j4", "j5"]),  # STAGE_CHUNK_FILES
        (True, ["j6"]),
        (False, ["j1"]),
    ]
    assert chunks_with(0) == [
        (False, [f"p{i}" for i in range(8)]),
        (False, [f"j{i}" for i in range(7)]),
    ]


def test_a_staged_validation_failing_otherwise_hands_the_chunk_back(
    landing, warehouse, monkeypatch
):
    """Any error of the validating insert that is not the warehouse's own is treated as the
    direct insert treats it: the chunk is split and its files go the Python way, which decides
    them exactly as before; the staging tables are dropped each time."""
    _put_day(landing, CLEAN)
    _ingest(warehouse, landing, None, "python")
    by_python = _state(warehouse)
    _reset(warehouse)
    command = warehouse.command

    def broken(sql, *args, **kwargs):
        if "_build_stage_" in sql and "INSERT INTO" in sql and "rollup_rows" in sql:
            raise WarehouseError("Code: 1001. DB::Exception: std::exception: something broke")
        return command(sql, *args, **kwargs)

    monkeypatch.setattr(warehouse, "command", broken)
    report = _ingest(warehouse, landing, native.s3_access_from_client(landing.client), "n")

    assert report.objects_read_natively == 0
    assert set(report.objects_handed_back.values()) == {"ClickHouse could not read it"}
    assert len(report.objects_handed_back) == len(CLEAN)
    assert _state(warehouse) == by_python
    assert not _stage_tables(warehouse)


def test_an_attempts_rows_are_counted_per_file_at_the_etag_read(warehouse):
    """The verdict per file rests on these counts: an attempt's passed rows (its load id) and
    rejected rows (its rejected id) per key, at the ETag read, and a key read at two ETags as
    rejected. Other attempts' rows and other days' rows never count."""
    day, attempt = DAY, "run-1.s3.3"
    rejected = native.rejected_id(attempt)
    staged = [
        # (day, key, etag, run_id, rows)
        (day, "a.parquet", "e1", attempt, 3),
        (day, "a.parquet", "e1", "run-1.s3.2", 5),  # an earlier attempt of the same file
        (day, "b.ndjson.gz", "e2", attempt, 2),
        (day, "b.ndjson.gz", "e2", rejected, 1),
        (day, "c.ndjson.gz", "e3", attempt, 1),
        (day, "c.ndjson.gz", "e4", rejected, 1),  # the object changed during the read
        (date(2026, 10, 6), "d.parquet", "e5", attempt, 4),  # another day's rows
    ]
    rows = [
        [on, f"{key}-{etag}-{run}-{n}", key, etag, n, run]
        for on, key, etag, run, count in staged
        for n in range(count)
    ]
    warehouse.insert_rows(
        "rollup_rows",
        rows,
        ["day", "event_id", "source_key", "source_etag", "source_row", "run_id"],
    )

    assert native._file_counts(warehouse, day, attempt) == {
        "a.parquet": native.FileCounts("e1", 3),
        "b.ndjson.gz": native.FileCounts("e2", 2, 1),
        "c.ndjson.gz": native.FileCounts("", 0, 1),
    }
