"""How a failed step is reported: transient faults are retried, everything else is not."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from usage_etl.ingest.load import StorageError
from usage_etl.warehouse.client import WarehouseError

# Transient S3/ClickHouse faults are retried with backoff by Dagster.
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL)


@contextmanager
def retry_only_transient(what: str) -> Iterator[None]:
    """Re-raise transient faults as they are (RetryPolicy retries them); turn every other
    warehouse error into a Failure that is not retried, so a bad query or bad data fails once,
    loudly."""
    try:
        yield
    except StorageError:
        raise
    except WarehouseError as exc:
        if exc.transient:
            raise
        raise dg.Failure(f"{what}: {exc}", allow_retries=False) from None
