"""Fetch a day's small objects once, into a local directory, for the embedded engine to read.

Read through ClickHouse's s3(), each tiny object costs ~1.5 ms of ClickHouse CPU and as much of
the S3 server's, whatever is read of it, and a small Parquet file was read twice (its footer,
then its rows). Here Python GETs every small object once (urllib3 with botocore's SigV4 signer,
a few threads: ~1 ms of CPU per object), keeps the ETag each GET returned, and writes the bytes
to a temporary directory; the embedded engine then reads footers and rows with `file()`
(usage/native.py). Only for the embedded engine: a ClickHouse server's `file()` reads the
server's disk, so a server DSN keeps reading s3().

A failed GET (the object was deleted after the listing, a 5xx after the retries, a connection
that stays down) is not an error here: the file is returned with the reason and goes the Python
way, which decides what that means (usage/load.py). No key, URL or credential is logged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from usage_etl import crash_points

THREADS = 4
ATTEMPTS = 3  # GETs per object for connection errors and 5xx (the first included)
BACKOFF_SECONDS = 0.1  # before the second GET; doubled before each further one
# A Parquet file ends in one of these magics (PARE: encrypted footer) and is at least this long;
# Arrow's footer reader refuses anything else (usage/native.py screens on this).
FOOTER_MAGICS = (b"PAR1", b"PARE")
MIN_PARQUET_BYTES = 12


@dataclass(frozen=True)
class Fetched:
    """One object as its GET returned it: where its bytes are, the ETag (unquoted) they have."""

    key: str
    path: str = ""  # "" when the GET failed
    etag: str = ""
    size: int = 0
    footer_magic: bool = False  # the bytes could be a Parquet file (length and last 4 bytes)
    error: str = ""  # why the GET failed (status or exception class), never the URL
    footer: ParquetFooter | None = None  # read from the bytes (Parquet copies only), if readable


@dataclass(frozen=True)
class ParquetFooter:
    """A Parquet footer as ClickHouse's `ParquetMetadata` gives it: the row count and, per leaf
    column, (its own name, physical type, logical type, max repetition level). Both print types
    with parquet-cpp's names (`INT64`, `Timestamp(isAdjustedToUTC=true, timeUnit=…)`)."""

    rows: int
    columns: tuple[tuple[str, str, str, int], ...]


def parquet_footer(body: bytes) -> ParquetFooter | None:
    """The footer of a fetched Parquet file, read by Arrow from the bytes in memory (~0.1 ms;
    ClickHouse's footer query on the local copy costs ~0.5 ms of CPU a file). None when Arrow
    cannot read it: ClickHouse's own footer query then decides, as for every file before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(pa.BufferReader(body))
        schema = metadata.schema
        columns = tuple(
            (column.name, column.physical_type, str(column.logical_type),
             column.max_repetition_level)
            for column in (schema.column(i) for i in range(len(schema)))
        )  # fmt: skip
        return ParquetFooter(metadata.num_rows, columns)
    except Exception:  # any failure to read it leaves the verdict to ClickHouse
        return None


PREFIX = "usage-etl-fetch-"
STALE_SECONDS = 86_400  # a fetch directory this old is a killed run's: no day takes that long


def sweep_stale(older_than_seconds: float = STALE_SECONDS) -> list[str]:
    """Remove fetch directories a killed run left in the temporary directory (a SIGKILL runs
    no `finally`), as the stale build-table sweep drops its tables. Returns their names."""
    swept = []
    cutoff = time.time() - older_than_seconds
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            if path.is_dir() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)
                swept.append(path.name)
        except OSError:
            continue
    return swept


class FetchedFiles:
    """A temporary directory of fetched objects; `close()` removes it (also on failure)."""

    def __init__(self, files: dict[str, Fetched], directory: str):
        self.files = files
        self.directory = directory

    def get(self, key: str) -> Fetched | None:
        return self.files.get(key)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> FetchedFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _tls(client) -> dict:
    """Verify TLS as the boto3 client does: its CA bundle (AWS_CA_BUNDLE, the profile's
    ca_bundle, or botocore's default), or no verification when the client was made with
    verify=False. Without it a custom CA would fail every GET and send each small file the
    (slower) Python way."""
    verify = getattr(getattr(client, "_endpoint", None), "http_session", None)
    verify = getattr(verify, "_verify", True)
    if verify is False:
        return {"cert_reqs": "CERT_NONE"}
    if isinstance(verify, str):
        return {"cert_reqs": "CERT_REQUIRED", "ca_certs": verify}
    return {"cert_reqs": "CERT_REQUIRED"}


class Fetcher:
    """GETs objects with the boto3 client's endpoint, region, credentials and timeouts."""

    def __init__(self, client, threads: int | None = None, attempts: int | None = None):
        import urllib3

        self.client = client
        self.endpoint = client.meta.endpoint_url.rstrip("/")
        self.region = client.meta.region_name or "us-east-1"
        config = client.meta.config
        self.timeout = urllib3.Timeout(
            connect=config.connect_timeout or 10, read=config.read_timeout or 60
        )
        self.threads, self.attempts = threads or THREADS, attempts or ATTEMPTS
        self.pool = urllib3.PoolManager(
            maxsize=self.threads, retries=False, timeout=self.timeout, **_tls(client)
        )
        # Set when an object's GETs all failed without an answer (timeouts, refused): the rest
        # are not tried, so a stalled endpoint costs one object's timeouts, not every object's
        # (their files go the Python way, whose first read then fails the day).
        self._unreachable = threading.Event()

    def _signer(self):
        from botocore.auth import S3SigV4Auth

        credentials = self.client._request_signer._credentials  # as native.s3_access_from_client
        return S3SigV4Auth(credentials.get_frozen_credentials(), "s3", self.region)

    def _get(self, signer, bucket: str, key: str) -> tuple[int, bytes, str]:
        from botocore.awsrequest import AWSRequest

        url = f"{self.endpoint}/{bucket}/{quote(key, safe='/~')}"
        request = AWSRequest(method="GET", url=url)
        signer.add_auth(request)
        response = self.pool.request(
            "GET", url, headers=dict(request.headers.items()), preload_content=True
        )
        return response.status, response.data, (response.headers.get("ETag") or "").strip('"')

    def _fetch_one(self, signer, bucket: str, key: str, path: str) -> Fetched:
        import urllib3

        error = ""
        for attempt in range(self.attempts):
            if self._unreachable.is_set():
                return Fetched(key, error=f"endpoint unreachable{f' ({error})' if error else ''}")
            if attempt:
                time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
            try:
                status, body, etag = self._get(signer, bucket, key)
            except urllib3.exceptions.HTTPError as exc:
                error = type(exc).__name__
                continue
            if status == 200:
                with open(path, "wb") as out:
                    out.write(body)
                magic = len(body) >= MIN_PARQUET_BYTES and body[-4:] in FOOTER_MAGICS
                footer = parquet_footer(body) if magic and path.endswith(".parquet") else None
                crash_points.fault_point("ingest.fetched_one")
                return Fetched(key, path, etag, len(body), magic, footer=footer)
            error = f"HTTP {status}"
            if status < 500:  # 404 after the listing, 403: retrying cannot help
                break
        if error and not error.startswith("HTTP"):
            self._unreachable.set()
        return Fetched(key, error=error)

    def fetch(self, bucket: str, objects: Iterable[tuple[str, str]]) -> FetchedFiles:
        """Fetch (key, suffix) pairs into a new temporary directory, the n-th as `<n><suffix>`
        (ClickHouse's `file()` picks the compression by the suffix)."""
        objects = list(objects)
        sweep_stale()
        directory = os.path.realpath(tempfile.mkdtemp(prefix=PREFIX))
        try:
            signer = self._signer()
            paths = [str(Path(directory) / f"{n}{suffix}") for n, (_, suffix) in enumerate(objects)]
            with ThreadPoolExecutor(self.threads, thread_name_prefix="rollup-fetch") as pool:
                fetched = list(
                    pool.map(
                        lambda item: self._fetch_one(signer, bucket, item[0][0], item[1]),
                        zip(objects, paths, strict=True),
                    )
                )
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return FetchedFiles({f.key: f for f in fetched}, directory)
