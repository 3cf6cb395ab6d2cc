"""The embedded engine's fetched path (usage/fetch.py): each small object is fetched once and read
from its local copy, and decides exactly what the s3() path decides.

Each comparison loads the same objects into the same database twice, through s3() (a server's
path) and through the fetched path, and compares what each staged, quarantined and recorded.
"""

from __future__ import annotations

import gzip
import ssl
import tempfile
from datetime import date
from urllib.parse import quote

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rollup_files import PARQUET_SCHEMA, Landing, parquet_bytes, rollup

from usage_etl.simulator import FaultSpec, FleetSpec, Simulator
from usage_etl.usage import fetch, load, native
from usage_etl.usage.ledger import counting_rows_sql
from usage_etl.usage.load import Prefetcher, StorageError, ingest_day
from usage_etl.warehouse.client import WarehouseError

DAYS = [date(2026, 10, 5), date(2026, 10, 6), date(2026, 10, 7)]
# The demo's faults, more often, so that every kind shows on a small day.
FAULTS = FaultSpec(redelivery_rate=0.1, correction_rate=0.02, truncated_rate=0.05,
                   missing_column_rate=0.02, bad_row_rate=0.01, stray_rate=0.02)  # fmt: skip
STAGED = "source_key, source_etag, source_row, event_id, account_id, bytes, request_count"


@pytest.fixture
def landing(s3_server, settings) -> Landing:
    return Landing(s3_server, settings)


@pytest.fixture(autouse=True)
def fetch_dir(tmp_path, monkeypatch):
    """Where fetch.py makes its temporary directories, so a test sees every one left behind."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _left_behind(fetch_dir) -> list[str]:
    return [p.name for p in fetch_dir.glob("usage-etl-fetch-*")]


def _land_demo(landing: Landing, days: list[date]) -> None:
    sim = Simulator(FleetSpec(nodes=4, accounts=10, rows_per_day=600, seed=11), FAULTS)
    for day in days:
        sim.upload(sim.generate_day(day).files, landing.client, landing.bucket, landing.prefix)


def _state(warehouse, days: list[date]) -> dict:
    return {
        "staged": {
            day: warehouse.query_rows(
                f"SELECT {STAGED} FROM ({counting_rows_sql(warehouse)}) ORDER BY ALL", {"day": day}
            )
            for day in days
        },
        "quarantined": warehouse.query_rows(
            "SELECT day, source_key, toString(scope), source_row, rule, field, value "
            f"FROM {warehouse.table('quarantined_rows')} ORDER BY ALL"
        ),
        "ledger": warehouse.query_rows(
            "SELECT day, object_key, argMax(etag, recorded_at), "
            "toString(argMax(status, recorded_at)), argMax(reason, recorded_at), "
            "argMax(rows_loaded, recorded_at), argMax(rows_quarantined, recorded_at) "
            f"FROM {warehouse.table('ingest_objects')} GROUP BY day, object_key ORDER BY ALL"
        ),
    }


def _reset(warehouse) -> None:
    for table in ("ingest_objects", "rollup_rows", "quarantined_rows"):
        warehouse.command(f"TRUNCATE TABLE {warehouse.table(table)}")


def _statements(monkeypatch, warehouse) -> list[str]:
    seen: list[str] = []
    command, query_rows = warehouse.command, warehouse.query_rows

    def recorded(sql, *args, **kwargs):
        seen.append(sql)
        return command(sql, *args, **kwargs)

    def recorded_query(sql, *args, **kwargs):
        seen.append(sql)
        return query_rows(sql, *args, **kwargs)

    monkeypatch.setattr(warehouse, "command", recorded)
    monkeypatch.setattr(warehouse, "query_rows", recorded_query)
    return seen


def _s3_reads(statements: list[str]) -> list[str]:
    return [s for s in statements if "s3({s3_url" in s]


def _file_reads(statements: list[str]) -> list[str]:
    return [s for s in statements if "file({file_glob" in s]


def test_demo_days_fetched_and_prefetched_decide_exactly_as_s3_reads(
    landing, warehouse, monkeypatch, fetch_dir
):
    """Demo days with truncated Parquet uploads, missing columns, bad rows and re-deliveries:
    fetched once (the next day prefetched while a day is loaded, into a directory an earlier
    day's files were in), every day stages, quarantines and records exactly what reading
    through s3() does, and reads no object through s3()."""
    days = [*DAYS, date(2026, 10, 8)]
    _land_demo(landing, days)
    access = native.s3_access_from_client(landing.client)
    with monkeypatch.context() as patch:
        patch.setattr(native, "FETCH", False)
        by_s3 = {day: ingest_day(warehouse, landing.area, day, f"s3-{day}", s3_access=access)
                 for day in days}  # fmt: skip
    expected = _state(warehouse, days)
    _reset(warehouse)

    statements = _statements(monkeypatch, warehouse)
    taken = _directories_taken(monkeypatch)
    reports = {}
    with Prefetcher(landing.area) as prefetcher:
        for n, day in enumerate(days):
            prefetched = prefetcher.take(day)
            assert (prefetched is not None) == (n > 0)
            if n + 1 < len(days):
                prefetcher.start(days[n + 1])
            reports[day] = ingest_day(warehouse, landing.area, day, f"fetched-{day}",
                                      s3_access=access, prefetched=prefetched)  # fmt: skip
    # Days 2-4 were prefetched into two directories: day 4's files over day 2's.
    assert len(taken) == 3 and len(set(taken)) == 2
    assert _state(warehouse, days) == expected
    assert not _s3_reads(statements)
    assert _file_reads(statements)
    assert not _left_behind(fetch_dir)
    reasons = set()
    for day in days:
        assert reports[day].objects_handed_back == by_s3[day].objects_handed_back
        assert reports[day].objects_read_natively == by_s3[day].objects_read_natively
        reasons |= set(reports[day].objects_handed_back.values())
    # The faults were there to be decided: truncated footers and rejected rows.
    assert {"unreadable footer", "rows rejected"} <= reasons
    assert any(rule == "missing_columns" for *_, rule, _, _ in expected["quarantined"])
    assert any(scope == "row" for _, _, scope, *_ in expected["quarantined"])


def _directories_taken(monkeypatch) -> list[str]:
    """Every directory a `FetchDirectories` hands out, in order."""
    taken: list[str] = []
    take = fetch.FetchDirectories.take

    def recorded(self) -> str:
        taken.append(take(self))
        return taken[-1]

    monkeypatch.setattr(fetch.FetchDirectories, "take", recorded)
    return taken


def _put_clean(landing: Landing, n: int = 4) -> list[str]:
    from test_native_ingest import _rows

    return [landing.put(f"clean-{i}.parquet", parquet_bytes(_rows(f"c{i}"))) for i in range(n)]


def _fetch_after(monkeypatch, change) -> None:
    """Change the landing between the listing and the fetch."""
    fetch_day = load.fetch_day

    def changed_first(area, objects):
        change()
        return fetch_day(area, objects)

    monkeypatch.setattr(load, "fetch_day", changed_first)


def test_an_object_overwritten_after_the_listing_goes_to_python_as_etag_changed(
    landing, warehouse, monkeypatch, fetch_dir
):
    """The GET returns another ETag than the listing: the file is handed back before any query,
    and Python records the version it read (the fetched bytes, no second GET)."""
    from test_native_ingest import _rows

    keys = _put_clean(landing)
    moved = parquet_bytes(_rows("moved", n=7))
    _fetch_after(monkeypatch, lambda: landing.put("clean-0.parquet", moved))
    gets = []
    get_object = landing.client.get_object
    monkeypatch.setattr(landing.client, "get_object",
                        lambda **kw: gets.append(kw) or get_object(**kw))  # fmt: skip
    access = native.s3_access_from_client(landing.client)

    report = ingest_day(warehouse, landing.area, DAYS[0], "n", s3_access=access)

    assert report.objects_handed_back == {keys[0]: "etag changed"}
    assert (report.objects_read_natively, report.rows_loaded) == (3, 3 * 5 + 7)
    assert not gets  # Python read the fetched copy
    new_etag = landing.client.head_object(Bucket=landing.bucket, Key=keys[0])["ETag"].strip('"')
    ledger = dict(
        warehouse.query_rows(
            f"SELECT object_key, etag FROM {warehouse.table('ingest_objects')} "
            "WHERE object_key = {k:String}",
            {"k": keys[0]},
        )
    )
    assert ledger == {keys[0]: new_etag}
    assert not _left_behind(fetch_dir)


def test_an_object_deleted_after_the_listing_is_handed_back_and_fails_as_before(
    landing, warehouse, monkeypatch, fetch_dir
):
    """A 404 after the listing: the file goes back to Python with the reason, the other files
    are decided, and Python's read names the object (as the s3() path ends); nothing is left
    in the temporary directory."""
    keys = _put_clean(landing)
    _fetch_after(monkeypatch, lambda: landing.client.delete_object(Bucket=landing.bucket,
                                                                   Key=keys[1]))  # fmt: skip
    results = []
    load_objects = native.load_objects

    def recorded(*args, **kwargs):
        results.append(load_objects(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(native, "load_objects", recorded)
    access = native.s3_access_from_client(landing.client)

    with pytest.raises(StorageError, match=keys[1]):
        ingest_day(warehouse, landing.area, DAYS[0], "n", s3_access=access)

    assert results[0].reasons == {keys[1]: "fetch failed: HTTP 404"}
    assert set(results[0].loaded) == {keys[0], keys[2], keys[3]}
    assert not _left_behind(fetch_dir)


def test_fetched_files_are_removed_when_the_warehouse_fails(
    landing, warehouse, monkeypatch, fetch_dir
):
    _put_clean(landing)
    command = warehouse.command

    def out_of_memory(sql, *args, **kwargs):
        if "_build_stage_" in sql and "INSERT INTO" in sql and "rollup_rows" in sql:
            raise WarehouseError("Code: 241. DB::Exception: MEMORY_LIMIT_EXCEEDED")
        return command(sql, *args, **kwargs)

    monkeypatch.setattr(warehouse, "command", out_of_memory)
    access = native.s3_access_from_client(landing.client)
    with pytest.raises(WarehouseError, match="MEMORY_LIMIT_EXCEEDED"):
        ingest_day(warehouse, landing.area, DAYS[0], "n", s3_access=access)
    assert not _left_behind(fetch_dir)


class _ServerLike:
    """The test's warehouse as a ClickHouse server DSN would be: `file()` reads the server's
    disk there, so nothing may be fetched."""

    embedded = False

    def __init__(self, warehouse):
        self._warehouse = warehouse

    def __getattr__(self, name):
        return getattr(self._warehouse, name)


def test_a_server_dsn_keeps_reading_s3(landing, warehouse, monkeypatch):
    _put_clean(landing)
    monkeypatch.setattr(load, "fetch_day", lambda *a: pytest.fail("fetched for a server"))
    statements = _statements(monkeypatch, warehouse)
    access = native.s3_access_from_client(landing.client)

    report = ingest_day(_ServerLike(warehouse), landing.area, DAYS[0], "n", s3_access=access)

    assert report.objects_read_natively == 4
    assert _s3_reads(statements) and not _file_reads(statements)


def test_a_failed_prefetch_leaves_the_day_to_itself(landing, warehouse, monkeypatch, fetch_dir):
    """A prefetch that fails does not fail the run: the day lists and fetches for itself. A
    prefetch nobody takes is removed when the prefetcher closes."""
    _put_clean(landing)
    access = native.s3_access_from_client(landing.client)
    with Prefetcher(landing.area) as prefetcher:
        with monkeypatch.context() as patch:
            patch.setattr(load, "fetch_day", lambda *a: (_ for _ in ()).throw(OSError("disk")))
            prefetcher.start(DAYS[0])
            assert prefetcher.take(DAYS[0]) is None
        report = ingest_day(warehouse, landing.area, DAYS[0], "n", s3_access=access,
                            prefetched=prefetcher.take(DAYS[0]))  # fmt: skip
        assert report.objects_read_natively == 4
        prefetcher.start(DAYS[0])  # never taken
    assert not _left_behind(fetch_dir)


def test_a_get_is_retried_on_5xx_and_connection_errors_but_not_on_404(
    landing, monkeypatch, fetch_dir
):
    """Unit: the fetcher's retries (no backoff here)."""
    key = _put_clean(landing, 1)[0]
    monkeypatch.setattr(fetch, "BACKOFF_SECONDS", 0)
    fetcher = fetch.Fetcher(landing.client)
    real = fetcher._get
    answers: list = []

    def scripted(signer, bucket, k):
        answer = answers.pop(0)
        if answer == "real":
            return real(signer, bucket, k)
        if isinstance(answer, Exception):
            raise answer
        return answer, b"", ""

    monkeypatch.setattr(fetcher, "_get", scripted)
    answers[:] = [503, ConnectionResetError("reset"), "real"]
    with fetcher.fetch(landing.bucket, [(key, ".parquet")]) as got:
        copy = got.get(key)
        assert copy.path and copy.footer_magic and not copy.error
        assert open(copy.path, "rb").read()[-4:] == b"PAR1"
    answers[:] = [404, "real"]
    with fetcher.fetch(landing.bucket, [(key, ".parquet")]) as got:
        assert got.get(key) == fetch.Fetched(key, error="HTTP 404")
    assert answers == ["real"]
    answers[:] = [500, 502, 503]
    with fetcher.fetch(landing.bucket, [(key, ".parquet")]) as got:
        assert got.get(key).error == "HTTP 503"
    assert not _left_behind(fetch_dir)


def test_a_reused_fetch_directory_holds_exactly_the_later_days_bytes(landing, fetch_dir):
    """A range run's fetch directories pass from day to day: a later day's copy takes an
    earlier copy's name and inode (no new file) and holds exactly its own object's bytes, even
    over a longer earlier file; a directory is in one day's hands at a time; closing twice hands
    it back once; closing the pool removes them all."""
    import os

    long_body = parquet_bytes([rollup(f"e{i}") for i in range(200)])
    short_body = parquet_bytes([rollup("e0")])
    assert len(short_body) < len(long_body)
    first_keys = [landing.put(f"first-{i}.parquet", long_body) for i in range(2)]
    later_keys = [
        landing.put("later-0.parquet", short_body),
        landing.put("later-1.ndjson.gz", b"not gzip"),
    ]
    fetcher = fetch.Fetcher(landing.client, judge=native.eligible_parquet)
    directories = fetch.FetchDirectories()
    first = fetcher.fetch(landing.bucket, [(k, ".parquet") for k in first_keys], directories)
    inode = os.stat(first.get(first_keys[0]).path).st_ino
    first.close()
    first.close()  # once only: a directory handed back twice would serve two days at once

    objects = [(later_keys[0], ".parquet"), (later_keys[1], ".ndjson.gz")]
    later = fetcher.fetch(landing.bucket, objects, directories)
    meanwhile = fetcher.fetch(landing.bucket, objects, directories)
    copy = later.get(later_keys[0])
    assert later.directory == first.directory != meanwhile.directory
    assert os.stat(copy.path).st_ino == inode
    assert open(copy.path, "rb").read() == short_body
    assert open(later.get(later_keys[1]).path, "rb").read() == b"not gzip"
    assert copy.footer is not None and copy.footer.rows == 1
    later.close()
    meanwhile.close()
    assert sorted(_left_behind(fetch_dir)) == sorted(
        os.path.basename(d) for d in (first.directory, meanwhile.directory)
    )
    directories.close()
    assert not _left_behind(fetch_dir)


def test_the_engine_reads_a_file_written_over_in_place_afresh(warehouse, tmp_path):
    """ClickHouse caches Parquet footers (`use_parquet_metadata_cache`): a copy written over an
    earlier day's file of the same size, a moment later, must still be read as it is now, or a
    reused fetch directory would load an earlier day's rows."""
    path = str(tmp_path / "0.parquet")
    first, later = (parquet_bytes([rollup(f"{tag}{i}") for i in range(3)]) for tag in "ab")
    assert len(first) == len(later) and first != later
    source = native.LOCAL_FUNCTION.format(
        fmt=native.PARQUET_INPUT, structure=", {structure:String}"
    )
    read = f"SELECT groupArray(event_id) FROM {source}"
    params = {"file_glob": path, "structure": native.STRUCTURE}
    for body, ids in ((first, ["a0", "a1", "a2"]), (later, ["b0", "b1", "b2"])):
        fetch._write(path, body)
        assert sorted(warehouse.query_one(read, params)) == ids


_LINES = b"".join(b'{"event_id": "e%d"}\n' % i for i in range(2000))
_GZIPPED = gzip.compress(_LINES)


@pytest.mark.parametrize(
    "body, cut_short",
    [
        (_GZIPPED, False),
        (_GZIPPED + gzip.compress(b'{"event_id": "more"}\n'), False),  # two members
        (b"", False),  # no line: ClickHouse reads none, the native path decides
        (_GZIPPED[: len(_GZIPPED) // 2], True),
        (_GZIPPED[:-4], True),  # the trailer's length field missing
        (_GZIPPED[:10], True),  # the header alone
        (_GZIPPED + b"not gzip", True),
    ],
    ids=["whole", "two-members", "empty", "half", "no-length", "header-only", "trailing-bytes"],
)
def test_a_gzip_copy_cut_short_is_one_clickhouse_cannot_read(warehouse, tmp_path, body, cut_short):
    """The fetch's screen of NDJSON.gz copies (`fetch.gzip_cut_short`) hands back exactly the
    copies whose read in ClickHouse fails: such a file would fail its whole chunk's read."""
    path = str(tmp_path / "0.ndjson.gz")
    fetch._write(path, body)
    read = f"SELECT count() FROM {native.LOCAL_FUNCTION.format(fmt='LineAsString', structure='')}"
    assert fetch.gzip_cut_short(body) == cut_short
    if cut_short:
        with pytest.raises(WarehouseError):
            warehouse.query_one(read, {"file_glob": path})
    else:
        warehouse.query_one(read, {"file_glob": path})


def test_a_fetch_directory_left_by_a_killed_run_is_swept(fetch_dir):
    """A SIGKILL runs no `finally`: the next fetch removes directories older than a day."""
    import os

    left = fetch_dir / f"{fetch.PREFIX}killed"
    left.mkdir()
    (left / "0.parquet").write_bytes(b"PAR1")
    fresh = fetch_dir / f"{fetch.PREFIX}live"
    fresh.mkdir()
    os.utime(left, (0, 0))

    assert fetch.sweep_stale() == [left.name]
    assert sorted(_left_behind(fetch_dir)) == [fresh.name]  # maybe a live run's


def test_a_stalled_endpoint_costs_one_objects_timeouts_not_every_objects(
    landing, monkeypatch, fetch_dir
):
    """Unit: once an object's GETs all fail without an answer, the other objects are not tried
    (their files go the Python way, whose first read fails the day, docs/operations.md)."""
    keys = _put_clean(landing, 6)
    monkeypatch.setattr(fetch, "BACKOFF_SECONDS", 0)
    fetcher = fetch.Fetcher(landing.client, threads=1)
    tried = []

    def timing_out(signer, bucket, key):
        tried.append(key)
        raise TimeoutError("timed out")

    monkeypatch.setattr(fetcher, "_get", timing_out)
    with fetcher.fetch(landing.bucket, [(k, ".parquet") for k in keys]) as got:
        errors = [got.get(k).error for k in keys]
    assert tried == [keys[0]] * fetch.ATTEMPTS
    assert errors == ["TimeoutError"] + ["endpoint unreachable"] * 5


def test_the_fetch_verifies_tls_as_the_boto3_client_does(tmp_path, monkeypatch):
    import boto3

    from usage_etl.usage.fetch import Fetcher

    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
    client = boto3.session.Session().client(
        "s3", endpoint_url="https://s3.example.invalid", region_name="us-east-1",
        aws_access_key_id="k", aws_secret_access_key="s",
    )  # fmt: skip
    assert Fetcher(client).tls == {"cert_reqs": "CERT_REQUIRED", "ca_certs": str(bundle)}
    insecure = boto3.session.Session().client(
        "s3", endpoint_url="https://s3.example.invalid", region_name="us-east-1",
        aws_access_key_id="k", aws_secret_access_key="s", verify=False,
    )  # fmt: skip
    assert Fetcher(insecure).tls == {"cert_reqs": "CERT_NONE"}
    assert fetch._ssl_context(Fetcher(insecure).tls).verify_mode == ssl.CERT_NONE
    verified = fetch._ssl_context({"cert_reqs": "CERT_REQUIRED"})
    assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname
    with pytest.raises(ssl.SSLError):  # the bundle is read: an empty one fails every GET
        fetch._ssl_context(Fetcher(client).tls)


@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:8333", "https://S3.Example.com", "https://s3.example.com:8443/base",
     "http://[::1]:9000"],
)  # fmt: skip
@pytest.mark.parametrize("token", [None, "session/token+1=="])
def test_the_fetchers_signature_is_botocores(endpoint, token):
    """fetch.SigV4 signs a GET as botocore's S3SigV4Auth does, header for header, for keys with
    characters that need quoting, a session token, and endpoints with ports, paths and IPv6."""
    import boto3
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="eu-west-1",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="wJalr/K7MDENG+bPxRfi",
        aws_session_token=token,
    )  # fmt: skip
    fetcher = fetch.Fetcher(client)
    signer = fetcher._signer()
    keys = ["rollups/2026/10/05/h=03/node-a.parquet", "a b/ü=1:x,y;z@~!$&'()*+.parquet", "é/%41"]
    for key in keys:
        path = f"{fetcher.base_path}/landing/{quote(key, safe='/~')}"
        url = f"{endpoint.rstrip('/').rsplit('/base', 1)[0]}{path}"
        request = AWSRequest(method="GET", url=url)
        S3SigV4Auth(
            client._request_signer._credentials.get_frozen_credentials(), "s3", "eu-west-1"
        ).add_auth(request)
        expected = {k.lower(): v for k, v in request.headers.items()}
        got = {k.lower(): v for k, v in signer.headers(path, expected["x-amz-date"]).items()}
        expected.setdefault("host", got["host"])  # http.client sends it; botocore signs it
        assert got == expected


@pytest.mark.parametrize("screened", [True, False], ids=["screened", "missed-by-the-screen"])
def test_fetched_ndjson_is_one_chunk_and_a_truncated_stream_costs_only_itself(
    landing, warehouse, monkeypatch, fetch_dir, screened
):
    """More NDJSON.gz files than the s3() path's 64 per chunk, one of them a truncated gzip
    stream: read from local copies they are one chunk. The fetch's screen sets the truncated
    copy aside before any read; should a broken copy get past it, the chunk's failing read
    names the local copy, which alone goes back to Python, and the rest is read again once
    (from disk, not S3)."""
    from rollup_files import ndjson_gz_bytes
    from test_native_ingest import _gz, _lines, _rows

    if not screened:
        monkeypatch.setattr(fetch, "gzip_cut_short", lambda body: False)
    clean = native.STAGE_CHUNK_FILES + 6
    for i in range(clean):
        landing.put(f"clean-{i}.ndjson.gz", ndjson_gz_bytes(_rows(f"clean{i}", n=2)))
    truncated = landing.put("truncated.ndjson.gz", _gz(_lines("trunc", n=40))[:-30])
    statements = _statements(monkeypatch, warehouse)
    access = native.s3_access_from_client(landing.client)

    report = ingest_day(warehouse, landing.area, DAYS[0], "n", s3_access=access)

    assert report.objects_handed_back == {truncated: "ClickHouse could not read it"}
    assert report.objects_read_natively == clean
    assert (report.rows_loaded, report.objects_quarantined) == (2 * clean, 1)
    # Screened: the chunk without the broken file, once. Missed: the whole chunk, then the rest.
    assert len(_file_reads(statements)) == (1 if screened else 2)
    assert not _s3_reads(statements)
    assert not _left_behind(fetch_dir)


def _parquet(table: pa.Table | pl.DataFrame) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table.to_arrow() if isinstance(table, pl.DataFrame) else table, sink)
    return sink.getvalue().to_pybytes()


def _contract_frame(n: int = 3) -> pl.DataFrame:
    return pl.DataFrame([rollup(f"e{i}") for i in range(n)], schema=PARQUET_SCHEMA)


# Footers of every kind the fast path must judge: the contract's own types, other integer and
# time types ClickHouse reads as polars does, types it must refuse, a missing column, a contract
# name inside a struct and a list (leaf names repeat), a dictionary-encoded string.
FOOTER_FILES = {
    "contract": lambda: parquet_bytes([rollup("a"), rollup("b")]),
    "missing project_id": lambda: parquet_bytes([rollup("a")], drop=("project_id",)),
    "int32 counters": lambda: _parquet(
        _contract_frame().with_columns(pl.col("bytes").cast(pl.Int32))
    ),
    "unsigned bytes": lambda: _parquet(
        _contract_frame().with_columns(pl.col("bytes").cast(pl.UInt64))
    ),
    "float bytes": lambda: _parquet(
        _contract_frame().with_columns(pl.col("bytes").cast(pl.Float64))
    ),
    "nanosecond times": lambda: _parquet(
        _contract_frame().with_columns(pl.col("window_start").dt.cast_time_unit("ns"))
    ),
    "millisecond times": lambda: _parquet(
        _contract_frame().with_columns(pl.col("emitted_at").dt.cast_time_unit("ms"))
    ),
    "binary event_id": lambda: _parquet(
        _contract_frame().with_columns(pl.col("event_id").cast(pl.Binary))
    ),
    "nested event_id": lambda: _parquet(
        _contract_frame().with_columns(pl.struct(pl.col("event_id")).alias("extra"))
    ),
    "list column": lambda: _parquet(
        _contract_frame().with_columns(pl.concat_list("bytes").alias("l"))
    ),
    "categorical region": lambda: _parquet(
        _contract_frame().with_columns(pl.col("region").cast(pl.Categorical))
    ),
}


@pytest.mark.parametrize("name", sorted(FOOTER_FILES))
def test_a_footer_read_from_the_fetched_copy_is_the_one_clickhouse_reads(warehouse, tmp_path, name):
    """fetch.py reads a fetched Parquet file's footer from its copy instead of asking ClickHouse
    (`ParquetMetadata` on the local copy): the row count, the columns and the verdict must be
    ClickHouse's own, for files the fast path takes and for files it must refuse."""
    body = FOOTER_FILES[name]()
    path = tmp_path / f"{name.replace(' ', '-')}.parquet"
    path.write_bytes(body)
    footer = fetch.parquet_footer(body)
    assert footer is not None
    rows, columns = warehouse.query_rows(
        "SELECT num_rows, arrayMap(c -> (c.name, c.physical_type, c.logical_type, "
        "c.max_repetition_level), columns) FROM file({path:String}, 'ParquetMetadata')",
        {"path": str(path)},
    )[0]
    assert (footer.rows, footer.columns) == (rows, tuple(tuple(c) for c in columns))
    verdict = fetch.FooterVerdict(footer.rows, native.eligible_parquet(footer.columns))
    copy = fetch.Fetched("k", str(path), "etag-1", len(body), True, footer=verdict)
    by_clickhouse = native._local_footers(warehouse, [copy])
    assert by_clickhouse == [native._fetched_footer(copy)]
    assert by_clickhouse[0].eligible == (
        name in ("contract", "missing project_id", "int32 counters", "nanosecond times",
                 "categorical region")
    )  # fmt: skip


def test_reading_a_footer_leaves_no_cyclic_garbage():
    """A run pauses the cyclic collector: a footer read must free everything it made when it
    returns (pyarrow's `FileMetaData.schema` caches a schema pointing back to it, a cycle that
    kept ~30 KiB a file of a 19,587-file day until the run ended). Only Arrow's objects are
    judged: other threads of the test process (xdist's, leftovers of other tests) may make
    cyclic garbage of their own while the collector is paused."""
    import gc

    body = parquet_bytes([rollup("a"), rollup("b")])
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep what the collector finds, to look at its types
    gc.disable()
    try:
        for _ in range(20):
            assert fetch.parquet_footer(body) is not None
        gc.collect()
        arrow_garbage = [o for o in gc.garbage if type(o).__module__.startswith("pyarrow")]
        assert arrow_garbage == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_a_footer_arrow_cannot_read_is_left_to_clickhouse(landing, warehouse, monkeypatch):
    """A copy whose footer fetch.py cannot read (here: a corrupt footer behind a valid magic)
    has no footer of its own; ClickHouse's footer query judges it as before, and the file goes
    the Python way, which quarantines it."""
    body = parquet_bytes([rollup("a")])
    corrupt = body[:-40] + b"\x00" * 36 + body[-4:]
    assert fetch.parquet_footer(corrupt) is None
    key = landing.put("corrupt.parquet", corrupt)
    statements = _statements(monkeypatch, warehouse)
    report = ingest_day(warehouse, landing.area, DAYS[0], "corrupt-footer",
                        s3_access=native.s3_access_from_client(landing.client))  # fmt: skip
    assert report.objects_handed_back == {key: "unreadable footer"}
    assert report.objects_quarantined == 1
    assert any("ParquetMetadata" in sql for sql in statements)
