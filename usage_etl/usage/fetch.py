"""Fetch a day's small objects once, into a local directory, for the embedded engine to read.

Read through ClickHouse's s3(), each tiny object costs ~1.5 ms of ClickHouse CPU and as much of
the S3 server's, whatever is read of it, and a small Parquet file was read twice (its footer,
then its rows). Here Python GETs every small object once (a keep-alive connection per thread
and a SigV4 signer of its own, a few threads: ~1 ms of CPU per object, its footer included),
keeps the ETag each GET returned, and writes the bytes to a temporary directory; the embedded
engine then reads the rows with `file()` (usage/native.py). Only for the embedded engine: a
ClickHouse server's `file()` reads the server's disk, so a server DSN keeps reading s3().

A failed GET (the object was deleted after the listing, a 5xx after the retries, a connection
that stays down) is not an error here: the file is returned with the reason and goes the Python
way, which decides what that means (usage/load.py). No key, URL or credential is logged.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import http.client
import os
import shutil
import ssl
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

from botocore.auth import _host_from_url

from usage_etl import crash_points

THREADS = 4
ATTEMPTS = 3  # GETs per object for connection errors and 5xx (the first included)
BACKOFF_SECONDS = 0.1  # before the second GET; doubled before each further one
# A Parquet file ends in one of these magics (PARE: encrypted footer) and is at least this long;
# Arrow's footer reader refuses anything else (usage/native.py screens on this).
FOOTER_MAGICS = (b"PAR1", b"PARE")
MIN_PARQUET_BYTES = 12


@dataclass(frozen=True, slots=True)
class Fetched:
    """One object as its GET returned it: where its bytes are, the ETag (unquoted) they have."""

    key: str
    path: str = ""  # "" when the GET failed
    etag: str = ""
    size: int = 0
    footer_magic: bool = False  # the bytes could be a Parquet file (length and last 4 bytes)
    # A gzip copy whose stream stops inside a member (a truncated upload, `gzip_cut_short`)
    truncated_gzip: bool = False
    error: str = ""  # why the GET failed (status or exception class), never the URL
    # Its footer as read and judged in the fetch (Parquet copies, with a `judge`), if readable
    footer: FooterVerdict | None = None


@dataclass(frozen=True, slots=True)
class FooterVerdict:
    """What a day keeps of a fetched footer: its row count and the judge's verdict on its
    columns (the columns themselves, ~5 KiB of Python objects a file, would hold ~100 MiB for
    the 19,587 files of `200 nodes x 3 files/h` until the day ends)."""

    rows: int
    eligible: bool


# One leaf column of a footer: (its own name, physical type, logical type, max repetition level).
FooterColumn = tuple[str, str, str, int]


@dataclass(frozen=True, slots=True)
class ParquetFooter:
    """A Parquet footer as ClickHouse's `ParquetMetadata` gives it: the row count and each leaf
    column (`FooterColumn`). Both print types with parquet-cpp's names (`INT64`,
    `Timestamp(isAdjustedToUTC=true, timeUnit=…)`)."""

    rows: int
    columns: tuple[FooterColumn, ...]


def parquet_footer(body: bytes) -> ParquetFooter | None:
    """The footer of a fetched Parquet file, read by Arrow from the bytes the GET returned
    (~0.14 ms; from the copy's path, through `pq.read_metadata`, ~0.28 ms: it resolves a
    filesystem, reopens the file and builds a `ParquetFile`; ClickHouse's footer query on the
    copy costs ~0.5 ms of CPU a file). None when Arrow cannot read it: ClickHouse's own footer
    query then decides."""
    import pyarrow.parquet as pq

    try:
        metadata = _footer_metadata(body)
        # Not `metadata.schema`: it caches a schema that points back to the metadata, a cycle
        # per file that only the cyclic collector frees (paused during a run: ~30 KiB a file
        # kept, +0.55 GiB over the 19,587 files of `200 nodes x 3 files/h`).
        schema = pq.ParquetSchema(metadata)
        columns = tuple(
            (column.name, column.physical_type, str(column.logical_type),
             column.max_repetition_level)
            for column in (schema.column(i) for i in range(len(schema)))
        )  # fmt: skip
        return ParquetFooter(metadata.num_rows, columns)
    except Exception:  # any failure to read it leaves the verdict to ClickHouse
        return None


def _footer_metadata(body: bytes):
    """Arrow's FileMetaData of a Parquet file in memory, through the reader `pq.ParquetFile`
    wraps (pyarrow._parquet). Should that API change, every footer fails here and goes to
    ClickHouse's footer query: slower, never wrong, and the footer tests fail."""
    import pyarrow as pa
    from pyarrow._parquet import ParquetReader

    reader = ParquetReader()
    reader.open(pa.BufferReader(body))
    return reader.metadata


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
    """A directory of fetched objects; `close()` removes it (also on failure), or hands it back
    to the `FetchDirectories` it came from."""

    def __init__(
        self,
        files: dict[str, Fetched],
        directory: str,
        on_close: Callable[[str], None] | None = None,
    ):
        self.files = files
        self.directory = directory
        self._on_close = on_close or _remove_directory
        self._closed = False

    def get(self, key: str) -> Fetched | None:
        return self.files.get(key)

    def close(self) -> None:
        if not self._closed:  # handed back twice, one directory would serve two days at once
            self._closed = True
            self._on_close(self.directory)

    def __enter__(self) -> FetchedFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _remove_directory(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _new_directory() -> str:
    return os.path.realpath(tempfile.mkdtemp(prefix=PREFIX))


class FetchDirectories:
    """The fetch directories of a range run, kept from one day to the next: a day's copies
    overwrite an earlier day's files in place (`_write`) instead of new files being created and
    removed for every object. On a filesystem that has just removed many files, creating one
    can cost far more than writing it: on this project's ext4 machine (no journal), creating a
    file scans the recently freed inodes, 1-2 ms of kernel CPU a file during a range run, about
    a third of a CPU-second for a demo day's ~300 objects; overwriting one costs ~20 µs
    (docs/performance.md, session 22). A directory is in one day's hands at a time; `close()`
    removes them all."""

    def __init__(self) -> None:
        self._free: list[str] = []
        self._made: list[str] = []
        self._lock = threading.Lock()

    def take(self) -> str:
        with self._lock:
            if self._free:
                directory = self._free.pop()
                os.utime(directory)  # in use again: not a killed run's for `sweep_stale`
                return directory
        directory = _new_directory()
        with self._lock:
            self._made.append(directory)
        return directory

    def give_back(self, directory: str) -> None:
        with self._lock:
            self._free.append(directory)

    def close(self) -> None:
        with self._lock:
            made, self._made, self._free = self._made, [], []
        for directory in made:
            _remove_directory(directory)


def gzip_cut_short(body: bytes) -> bool:
    """Does a gzip stream stop inside a member, or hold bytes that are no gzip member after its
    last one? A truncated upload does; ClickHouse's read of such a file fails, and with it the
    whole chunk it is read in. An empty body is not cut short (ClickHouse reads no line)."""
    rest = body
    while rest:
        member = zlib.decompressobj(wbits=31)  # gzip framing, one member
        try:
            while rest and not member.eof:
                member.decompress(rest, 1 << 20)  # output bounded: only the framing matters
                rest = member.unconsumed_tail
        except zlib.error:
            return True
        if not member.eof:
            return True
        rest = member.unused_data
    return False


def _local_paths(directory: str, suffixes: list[str]) -> list[str]:
    """`<directory>/<n><suffix>`, n counting the files of each suffix from 0."""
    counts: collections.Counter[str] = collections.Counter()
    paths = []
    for suffix in suffixes:
        paths.append(os.path.join(directory, f"{counts[suffix]}{suffix}"))
        counts[suffix] += 1
    return paths


def _write(path: str, body: bytes) -> None:
    """Write `body` as the whole file at `path`, over any earlier file there in place (same
    inode: see `FetchDirectories`)."""
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
        out.write(body)
        out.truncate()  # at the end of `body`: nothing of a longer earlier file remains


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


def _ssl_context(tls: dict) -> ssl.SSLContext:
    if tls["cert_reqs"] == "CERT_NONE":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=tls.get("ca_certs"))


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_SIGNED_HEADERS = "host;x-amz-content-sha256;x-amz-date"


class SigV4:
    """AWS Signature Version 4 for a GET of one S3 object (path-style, no query, no body).

    botocore's signer (`S3SigV4Auth.add_auth`) took ~0.25 ms of CPU per GET, a quarter of a
    small object's Python cost: it derives the signing key and parses the URL on every request.
    This one derives the key once a day and builds the canonical request from its parts; its
    headers are botocore's, byte for byte (tests/test_fetched_ingest.py compares them)."""

    def __init__(self, credentials, region: str, host: str):
        self.access_key, self.secret_key = credentials.access_key, credentials.secret_key
        self.token = credentials.token
        self.region, self.host = region, host
        self._keys: dict[str, bytes] = {}

    def _signing_key(self, datestamp: str) -> bytes:
        key = self._keys.get(datestamp)
        if key is None:
            key = ("AWS4" + self.secret_key).encode()
            for part in (datestamp, self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {datestamp: key}
        return key

    def headers(self, path: str, amz_date: str | None = None) -> dict[str, str]:
        """The headers of a signed GET of `path` (`/<bucket>/<quoted key>`)."""
        amz_date = amz_date or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        scope = f"{amz_date[:8]}/{self.region}/s3/aws4_request"
        headers = {"Host": self.host, "X-Amz-Date": amz_date,
                   "X-Amz-Content-SHA256": _EMPTY_SHA256}  # fmt: skip
        canonical = (
            f"host:{self.host}\nx-amz-content-sha256:{_EMPTY_SHA256}\nx-amz-date:{amz_date}\n"
        )
        signed = _SIGNED_HEADERS
        if self.token:
            headers["X-Amz-Security-Token"] = self.token
            canonical += f"x-amz-security-token:{self.token}\n"
            signed += ";x-amz-security-token"
        request = f"GET\n{path}\n\n{canonical}\n{signed}\n{_EMPTY_SHA256}"
        digest = hashlib.sha256(request.encode()).hexdigest()
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{digest}"
        signature = hmac.new(self._signing_key(amz_date[:8]), to_sign.encode(), hashlib.sha256)
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature.hexdigest()}"
        )
        return headers


# What a GET can raise short of an answer: refused, reset, timed out, a broken response.
_NO_ANSWER = (OSError, http.client.HTTPException)


class Fetcher:
    """GETs objects with the boto3 client's endpoint, region, credentials, TLS and timeouts:
    one keep-alive `http.client` connection per thread, ~0.3 ms of CPU a GET less than urllib3's
    pool (its URL parsing and checks)."""

    def __init__(
        self,
        client,
        threads: int | None = None,
        attempts: int | None = None,
        judge: Callable[[tuple[FooterColumn, ...]], bool] | None = None,
    ):
        """`judge`: the verdict on a fetched Parquet file's footer columns
        (native.eligible_parquet), given in the fetch thread; without it no footer is read."""
        self.client = client
        self.judge = judge
        endpoint = urlsplit(client.meta.endpoint_url)
        self.https = endpoint.scheme == "https"
        self.hostname = endpoint.hostname or ""
        self.port = endpoint.port or (443 if self.https else 80)
        self.host = _host_from_url(client.meta.endpoint_url)  # the Host header botocore signs
        self.base_path = endpoint.path.rstrip("/")
        self.region = client.meta.region_name or "us-east-1"
        config = client.meta.config
        self.connect_timeout = config.connect_timeout or 10
        self.read_timeout = config.read_timeout or 60
        self.threads, self.attempts = threads or THREADS, attempts or ATTEMPTS
        self.tls = _tls(client)
        self._context: ssl.SSLContext | None = None
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []  # closed when a fetch ends
        self._lock = threading.Lock()
        # Set when an object's GETs all failed without an answer (timeouts, refused): the rest
        # are not tried, so a stalled endpoint costs one object's timeouts, not every object's
        # (their files go the Python way, whose first read then fails the day).
        self._unreachable = threading.Event()

    def _signer(self) -> SigV4:
        credentials = self.client._request_signer._credentials  # as native.s3_access_from_client
        return SigV4(credentials.get_frozen_credentials(), self.region, self.host)

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            if self.https:
                if self._context is None:
                    self._context = _ssl_context(self.tls)
                connection = http.client.HTTPSConnection(
                    self.hostname, self.port, timeout=self.connect_timeout, context=self._context
                )
            else:
                connection = http.client.HTTPConnection(
                    self.hostname, self.port, timeout=self.connect_timeout
                )
            with self._lock:
                self._connections.append(connection)
            connection.connect()
            connection.sock.settimeout(self.read_timeout)
            self._local.connection = connection
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def _get(self, signer: SigV4, bucket: str, key: str) -> tuple[int, bytes, str]:
        path = f"{self.base_path}/{bucket}/{quote(key, safe='/~')}"
        try:
            connection = self._connection()
            connection.request("GET", path, headers=signer.headers(path))
            response = connection.getresponse()
            body = response.read()
        except BaseException:
            self._drop_connection()  # its state is unknown: the next GET opens another
            raise
        if response.will_close:
            self._drop_connection()
        return response.status, body, (response.getheader("ETag") or "").strip('"')

    def _verdict(self, path: str, body: bytes, magic: bool) -> FooterVerdict | None:
        if self.judge is None or not magic or not path.endswith(".parquet"):
            return None
        footer = parquet_footer(body)
        return None if footer is None else FooterVerdict(footer.rows, self.judge(footer.columns))

    def _fetch_one(self, signer: SigV4, bucket: str, key: str, path: str) -> Fetched:
        error = ""
        for attempt in range(self.attempts):
            if self._unreachable.is_set():
                return Fetched(key, error=f"endpoint unreachable{f' ({error})' if error else ''}")
            if attempt:
                time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
            try:
                status, body, etag = self._get(signer, bucket, key)
            except _NO_ANSWER as exc:
                error = type(exc).__name__
                continue
            if status == 200:
                _write(path, body)
                magic = len(body) >= MIN_PARQUET_BYTES and body[-4:] in FOOTER_MAGICS
                crash_points.fault_point("ingest.fetched_one")
                footer = self._verdict(path, body, magic)
                cut_short = path.endswith(".gz") and gzip_cut_short(body)
                return Fetched(key, path, etag, len(body), magic, cut_short, footer=footer)
            error = f"HTTP {status}"
            if status < 500:  # 404 after the listing, 403: retrying cannot help
                break
        if error and not error.startswith("HTTP"):
            self._unreachable.set()
        return Fetched(key, error=error)

    def fetch(
        self,
        bucket: str,
        objects: Iterable[tuple[str, str]],
        directories: FetchDirectories | None = None,
    ) -> FetchedFiles:
        """Fetch (key, suffix) pairs into a directory, the n-th of a suffix as `<n><suffix>`
        (ClickHouse's `file()` picks the compression by the suffix; numbered by suffix, a day's
        files take the names of a day before's with the same suffix): a new temporary directory,
        or one of `directories`, which gets it back when the files are closed."""
        objects = list(objects)
        sweep_stale()
        directory = directories.take() if directories else _new_directory()
        on_close = directories.give_back if directories else _remove_directory
        try:
            signer = self._signer()
            paths = _local_paths(directory, [suffix for _, suffix in objects])
            with ThreadPoolExecutor(self.threads, thread_name_prefix="rollup-fetch") as pool:
                fetched = list(
                    pool.map(
                        lambda item: self._fetch_one(signer, bucket, item[0][0], item[1]),
                        zip(objects, paths, strict=True),
                    )
                )
        except BaseException:
            on_close(directory)
            raise
        finally:
            with self._lock:
                connections, self._connections = self._connections, []
            for connection in connections:
                connection.close()
        return FetchedFiles({f.key: f for f in fetched}, directory, on_close)
