"""One line that says why a run failed, from its step failure (Dagster event data).

The step's own error comes first: a `Failure`'s description, else the exception's message. A
step that used up its retries reports "Exceeded max_retries of N" with the real error as its
cause: the cause is what the operator needs.
"""

from __future__ import annotations

import re

MAX_CHARS = 300
WRAPPERS = {"RetryRequestedFromPolicy", "RetryRequested", "DagsterExecutionStepExecutionError"}
QUALIFIED = re.compile(r"^(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*: )")


def first_line(text: str | None) -> str:
    line = next((part.strip() for part in (text or "").splitlines() if part.strip()), "")
    line = QUALIFIED.sub(r"\1", line)  # usage_etl.x.WarehouseError: … -> WarehouseError: …
    return line if len(line) <= MAX_CHARS else line[: MAX_CHARS - 1] + "…"


def error_line(error) -> str:
    """First line of a SerializableErrorInfo, skipping retry/wrapper errors to their cause."""
    while (
        error is not None
        and error.cause is not None
        and (error.cls_name in WRAPPERS or error.message.startswith("Exceeded max_retries"))
    ):
        error = error.cause
    return first_line(error.message) if error is not None else ""


def step_failure_line(step_failure_data) -> str:
    user = getattr(step_failure_data, "user_failure_data", None)
    if user is not None and user.description:
        return first_line(user.description)
    return error_line(step_failure_data.error)


def run_failure_cause(step_failures, run_failure_message: str | None) -> str:
    """The first failed step's cause, named by step; else the run's own failure message."""
    for event in step_failures:
        line = step_failure_line(event.step_failure_data)
        if line:
            return f"{event.step_key}: {line}"
    return first_line(run_failure_message) or "the run failed (no error message recorded)"
