"""How a failed step is reported: transient faults are retried within a budget, everything else
fails at once with its cause in one line.

* Permanent faults (S3 refusing the credentials or the bucket, a bad setting, a bad query or bad
  data, the embedded engine held by another process past the lock wait) raise a `dg.Failure`
  that Dagster does not retry: the run fails on its first attempt and the step's failure
  message is the cause.
* Transient faults (timeouts, 5xx, throttling, connection resets) were already retried inside
  the attempt by the clients (boto3, ClickHouse's s3()); Dagster retries the step with backoff
  while the step's time so far, the backoff and one more attempt as long as the last fit in
  USAGE_ETL_RETRY_BUDGET_SECONDS. Past it, or at the policy's last retry, the step fails with
  the cause instead of Dagster's "Exceeded max_retries".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from usage_etl.settings import Settings, SettingsError
from usage_etl.usage.load import StorageError
from usage_etl.warehouse.client import EmbeddedEngineBusy, WarehouseError

log = logging.getLogger(__name__)

# Transient S3/ClickHouse faults are retried with backoff by Dagster (5, 15, 35 s).
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL)

# S3 error codes no retry can fix, with what the operator should check.
PERMANENT_S3_CODES = {
    "SignatureDoesNotMatch": "the S3 secret key is wrong: check AWS_SECRET_ACCESS_KEY",
    "InvalidAccessKeyId": "the S3 access key is unknown: check AWS_ACCESS_KEY_ID",
    "InvalidToken": "the S3 session token is invalid: check AWS_SESSION_TOKEN",
    "ExpiredToken": "the S3 session token expired: renew AWS_SESSION_TOKEN",
    "AuthorizationHeaderMalformed": "the S3 credentials or region are malformed",
    "AccessDenied": "the S3 credentials lack a permission the pipeline needs "
    "(docs/security.md): run `usage-etl doctor`",
    "AllAccessDisabled": "access to the bucket is disabled",
    "NoSuchBucket": "the bucket does not exist: check USAGE_ETL_LANDING_URL",
    "InvalidBucketName": "the bucket name is invalid: check USAGE_ETL_LANDING_URL",
    "403": "S3 refused the request (HTTP 403): check the credentials and bucket policy",
}


def s3_cause(exc: BaseException) -> tuple[str, bool] | None:
    """(operator hint, permanent) for a boto3/botocore error, or None if it is not one."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in PERMANENT_S3_CODES:
            return PERMANENT_S3_CODES[code], True
        return code, False
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", True
    if isinstance(exc, ParamValidationError):
        return "invalid S3 request parameters (check USAGE_ETL_LANDING_URL)", True
    if isinstance(exc, BotoCoreError):
        return type(exc).__name__, False
    return None


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _storage_cause(exc: StorageError, endpoint: str | None) -> tuple[str, bool]:
    """StorageError keeps boto's exception as its context (`raise … from None`)."""
    found = s3_cause(exc.__context__) if exc.__context__ is not None else None
    message = one_line(str(exc))
    where = f" (S3 endpoint {endpoint})" if endpoint and endpoint not in message else ""
    if found is None:
        return f"{message}{where}", False
    hint, permanent = found
    if permanent:
        return f"{message}{where}; {hint}", True
    return f"{message}{where}", False


def _attempt_times(context: dg.OpExecutionContext) -> tuple[float, float] | None:
    """(first attempt start, this attempt start) of the running step, from the event log."""
    try:
        step_key = str(context.op_handle)
        events = context.instance.all_logs(
            context.run_id,
            of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED},
        )
        starts = sorted(e.timestamp for e in events if e.step_key == step_key)
    except Exception:  # the budget is a bound on waiting, never a reason to fail
        log.debug("no step start times", exc_info=True)
        return None
    return (starts[0], starts[-1]) if starts else None


def _retry_budget() -> float:
    try:
        return Settings().retry_budget_seconds
    except SettingsError:
        return Settings.model_fields["retry_budget_seconds"].default


def give_up_reason(policy: dg.RetryPolicy = TRANSIENT_RETRY) -> str | None:
    """Why the running step should not be retried again (None: let Dagster retry it)."""
    try:
        context = dg.OpExecutionContext.get()
    except Exception:
        context = None
    if context is None:
        return None
    attempt = context.retry_number  # 0 on the first attempt
    if attempt >= (policy.max_retries or 0):
        return f"gave up after {attempt + 1} attempts"
    times = _attempt_times(context)
    if times is None:
        return None
    first, this = times
    now = time.time()
    budget = _retry_budget()
    delay = float(policy.calculate_delay(attempt + 1))
    if (now - first) + delay + (now - this) > budget:
        return (
            f"gave up after {attempt + 1} attempt{'s' if attempt else ''} in "
            f"{now - first:.0f} s (USAGE_ETL_RETRY_BUDGET_SECONDS={budget:g})"
        )
    return None


def _transient(what: str, cause: str, exc: BaseException) -> None:
    reason = give_up_reason()
    if reason is None:
        raise exc  # Dagster's retry policy retries it
    raise dg.Failure(f"{what}: {cause} ({reason})", allow_retries=False) from None


@contextmanager
def retry_only_transient(what: str, s3_endpoint: str | None = None) -> Iterator[None]:
    """Re-raise transient faults as they are (RetryPolicy retries them) while the retry budget
    lasts; turn every other error into a Failure that is not retried, so a bad query, bad
    data, refused credentials or a missing bucket fail once, loudly, in one line."""
    try:
        yield
    except SettingsError as exc:
        raise dg.Failure(f"{what}: {exc}", allow_retries=False) from None
    except StorageError as exc:
        cause, permanent = _storage_cause(exc, s3_endpoint)
        if permanent:
            raise dg.Failure(f"{what}: {cause}", allow_retries=False) from None
        _transient(what, cause, exc)
    except EmbeddedEngineBusy as exc:
        # The lock wait was the retry: waiting again would only repeat it.
        raise dg.Failure(f"{what}: {one_line(str(exc))}", allow_retries=False) from None
    except WarehouseError as exc:
        if not exc.transient:
            raise dg.Failure(f"{what}: {one_line(str(exc))}", allow_retries=False) from None
        _transient(what, one_line(str(exc)), exc)
    except (BotoCoreError, ClientError) as exc:  # an S3 call outside ingest's own wrapping
        found = s3_cause(exc)
        cause = one_line(str(exc))
        if found and found[1]:
            raise dg.Failure(f"{what}: {cause}; {found[0]}", allow_retries=False) from None
        _transient(what, cause, exc)
