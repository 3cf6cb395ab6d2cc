"""One place that turns a user's mistake into one line on stderr and exit status 2.

Every `usage-etl` command runs inside `CliGroup.main`: a known exception type (a bad option, a
bad setting, a missing file, an unreachable warehouse, a `UserError` a command raises) prints
`usage-etl: error: <one line>` and exits 2, with no traceback and no library wording. Anything
else is a bug: one line naming the exception, exit 1. `usage-etl --debug COMMAND` (or
`USAGE_ETL_DEBUG=1`) re-raises instead, traceback included.

Commands added later get this for free; a module can teach it a new exception type with
`user_error(MyError, lambda e: "...")`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from typer._click import exceptions as click_errors  # Typer vendors its own click
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit

from usage_etl.settings import CliSettings

PROG = "usage-etl"
USAGE_ERROR = 2
BUG = 1


class UserError(Exception):
    """Something the user can fix (an unknown account, an empty result they asked to fail on)."""


_FORMATTERS: list[tuple[type[BaseException], Callable[[BaseException], str]]] = []


def user_error(kind: type[BaseException], formatter: Callable[[BaseException], str] = str) -> None:
    """Teach the handler a new user-caused exception type (most specific types first wins)."""
    _FORMATTERS.insert(0, (kind, formatter))


# Wording that belongs to a library, not to us: pydantic's prefixes and its help links.
_LIBRARY_NOISE = (
    re.compile(r"\bValue error, "),
    re.compile(r"\bAssertion failed, "),
    re.compile(r"\s*For further information visit \S+"),
    re.compile(r"\s*\[type=[^\]]*\]"),
)


def one_line(text: str) -> str:
    for pattern in _LIBRARY_NOISE:
        text = pattern.sub("", text)
    return " ".join(text.split())


def _click_message(error: BaseException) -> str:
    message = error.format_message()  # type: ignore[attr-defined]
    command = getattr(getattr(error, "ctx", None), "command_path", None)
    if isinstance(error, click_errors.UsageError) and command:
        return f"{message} (see '{command} --help')"
    return message


def _validation_message(error: BaseException) -> str:
    """pydantic's ValidationError of `Settings`: the environment variable and what is wrong."""
    parts = []
    for item in error.errors():  # type: ignore[attr-defined]
        location = ".".join(str(p) for p in item.get("loc", ()))
        message = str(item.get("msg", ""))
        variable = f"USAGE_ETL_{location.upper()}" if location else "a setting"
        parts.append(message if variable in message else f"{variable}: {message}")
    return "; ".join(parts) or str(error)


def _os_message(error: BaseException) -> str:
    assert isinstance(error, OSError)
    target = error.filename or ""
    reason = error.strerror or type(error).__name__
    return f"{target}: {reason}" if target else reason


_ERRNO_REASON = re.compile(r"\[Errno -?\d+\] ([^'\"()\]]+)")
_CLICKHOUSE_CODE = re.compile(r"\(([A-Z_]+)\)")
_CLICKHOUSE_HINTS = {
    "UNKNOWN_DATABASE": "the warehouse has no such database yet: run the pipeline (or "
    "`usage-etl migrate`) first, or check USAGE_ETL_DATABASE",
    "UNKNOWN_TABLE": "a table is missing: run `usage-etl migrate` (or the pipeline) first",
    "AUTHENTICATION_FAILED": "ClickHouse refused the user or password in USAGE_ETL_CLICKHOUSE_DSN",
    "ACCESS_DENIED": "the ClickHouse user lacks a grant this command needs (see `usage-etl roles`)",
}


def _warehouse_message(error: BaseException) -> str:
    """A warehouse failure without the driver's wording: what failed and what to do."""
    text = str(error)
    code = _CLICKHOUSE_CODE.search(text)
    if code and code.group(1) in _CLICKHOUSE_HINTS:
        return f"{_CLICKHOUSE_HINTS[code.group(1)]} ({code.group(1)})"
    if text.startswith("cannot connect to ClickHouse at "):
        target = text.removeprefix("cannot connect to ClickHouse at ").split(": ", 1)[0]
        reason = _ERRNO_REASON.search(text)
        why = reason.group(1).strip() if reason else "no answer"
        return f"cannot connect to ClickHouse at {target}: {why} (USAGE_ETL_CLICKHOUSE_DSN)"
    return text.splitlines()[0] if text else type(error).__name__


def _register_defaults() -> None:
    from pydantic import ValidationError

    from usage_etl.invoicing.price_book import PriceBookError
    from usage_etl.local_stack import ServiceError
    from usage_etl.settings import SettingsError
    from usage_etl.warehouse.client import WarehouseError

    user_error(OSError, _os_message)
    user_error(ServiceError)
    user_error(PriceBookError)
    user_error(SettingsError)
    user_error(WarehouseError, _warehouse_message)
    user_error(ValidationError, _validation_message)
    user_error(UserError)
    user_error(click_errors.ClickException, _click_message)


_register_defaults()


def describe(error: BaseException) -> str | None:
    """The one line for a user-caused error, or None when it is not one we know."""
    for kind, formatter in _FORMATTERS:
        if isinstance(error, kind):
            return one_line(formatter(error))
    return None


def debug_requested(args: Sequence[str]) -> bool:
    return "--debug" in args or CliSettings().debug_on  # or USAGE_ETL_DEBUG


def fail(line: str, status: int) -> None:
    print(f"{PROG}: error: {line}", file=sys.stderr, flush=True)
    sys.exit(status)


class CliGroup(TyperGroup):
    """The root command: Typer's group with the error policy above around every command."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        debug = debug_requested(args)
        if not debug:  # drivers log their own failure text; ours is the one line below
            logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)
        try:
            result = super().main(
                args, prog_name or PROG, complete_var, standalone_mode=False, **extra
            )
        except Exit as done:  # raised by callbacks outside invoke()
            result = done.exit_code
        except Abort:
            if debug:
                raise
            fail("aborted", 130)
        except KeyboardInterrupt:
            if debug:
                raise
            fail("interrupted", 130)
        except SystemExit:
            raise
        except BrokenPipeError:
            _silence_stdout()  # `usage-etl ... | head`: the reader left, nothing to report
            sys.exit(1)
        except BaseException as error:
            if debug:
                raise
            line = describe(error)
            if line is not None:
                fail(line, USAGE_ERROR)
            fail(
                f"unexpected {type(error).__name__}: {one_line(str(error))} "
                f"(run '{PROG} --debug ...' for the traceback)",
                BUG,
            )
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


def _silence_stdout() -> None:
    """After the reader of a pipe left: point stdout at /dev/null so the interpreter's final
    flush does not print `BrokenPipeError` noise."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
