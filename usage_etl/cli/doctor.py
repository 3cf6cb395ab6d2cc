"""`usage-etl doctor`: is this deployment able to run the pipeline? One line per check.

Checks every setting, the price book, the node registry, S3 (reachable, and the permissions the
pipeline needs: list and get on the landing prefix, put and delete on the exports prefix), the
warehouse (connectivity and migrations; an embedded engine held by a run is reported busy, not
waited for), and the Dagster instance (tables present, one Alembic head per database).
Exit 1 when any check fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import typer

from usage_etl.settings import Settings, SettingsError

OK, WARN, FAIL = "✓", "⚠", "✗"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" — fix: {self.fix}" if self.fix else ""
        return f"{self.status} {self.name}: {self.detail}{fix}"


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(
    lock_wait: float = typer.Option(
        3.0, help="Seconds to wait for an embedded engine a run may be holding."
    ),
    repair_instance: bool = typer.Option(
        False, "--repair-instance", help="Repair a broken SQLite Dagster instance, then check."
    ),
) -> None:
    """Check settings, price book, S3 permissions, ClickHouse, migrations, Dagster instance."""
    if repair_instance:
        from usage_etl.instance import repair_instance as repair

        for done in repair():
            print(f"repaired {done}")
    failed = False
    for check in run_checks(lock_wait, emit=lambda c: print(c.line(), flush=True)):
        failed |= check.status == FAIL
    raise typer.Exit(1 if failed else 0)


def run_checks(lock_wait: float = 3.0, emit: Callable[[Check], None] | None = None) -> list[Check]:
    done: list[Check] = []

    def add(check: Check) -> Check:
        done.append(check)
        if emit:
            emit(check)
        return check

    try:
        settings = Settings()
    except SettingsError as exc:
        for part in str(exc).split("; "):
            name = part.split(":")[0].split(" ")[0]
            add(Check(name, FAIL, part, "set it to a valid value (docs/configuration.md)"))
        add(Check("instance", *_instance_check()))
        return done
    add(Check("settings", OK, "every USAGE_ETL_* setting is valid"))
    for check in (
        _price_book,
        _node_registry,
        _s3_checks,
        lambda s: _warehouse_checks(s, lock_wait),
        lambda s: [Check("instance", *_instance_check())],
    ):
        result = check(settings)
        for item in result if isinstance(result, list) else [result]:
            add(item)
    return done


def _price_book(settings: Settings) -> Check:
    from usage_etl.invoicing.price_book import load_price_book

    try:
        book = load_price_book(settings.price_book)
    except Exception as exc:
        return Check("price book", FAIL, _one_line(exc), "correct USAGE_ETL_PRICE_BOOK's file")
    return Check("price book", OK, f"{settings.price_book} (version {book.version})")


def _node_registry(settings: Settings) -> Check:
    if settings.node_registry is None:
        return Check("node registry", OK, "none configured: every node is unrestricted")
    from usage_etl.usage.registry import NodeRegistry

    try:
        NodeRegistry.from_file(settings.node_registry)
    except Exception as exc:
        return Check("node registry", FAIL, _one_line(exc), "correct USAGE_ETL_NODE_REGISTRY")
    return Check("node registry", OK, str(settings.node_registry))


def _s3_checks(settings: Settings) -> list[Check]:
    from usage_etl.defs.usage.errors import s3_cause
    from usage_etl.s3 import s3_client

    client = s3_client(settings=settings)
    endpoint = client.meta.endpoint_url
    bucket, prefix = settings.landing_bucket, settings.landing_prefix
    landing = f"s3://{bucket}/{prefix}/"
    checks = []

    def failed(what: str, exc: Exception) -> Check:
        found = s3_cause(exc)
        fix = found[0] if found and found[1] else "check the endpoint is up and reachable"
        return Check(what, FAIL, f"{landing} at {endpoint}: {_one_line(exc)}", fix)

    try:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/", MaxKeys=5)
    except Exception as exc:
        return [failed("S3 list", exc)]
    checks.append(Check("S3 list", OK, f"{landing} at {endpoint}"))
    keys = [o["Key"] for o in listed.get("Contents", [])]
    if keys:
        try:
            client.get_object(Bucket=bucket, Key=keys[0], Range="bytes=0-0")["Body"].read()
            checks.append(Check("S3 get", OK, f"s3://{bucket}/{keys[0]}"))
        except Exception as exc:
            checks.append(failed("S3 get", exc))
    else:
        checks.append(Check("S3 get", WARN, f"nothing under {landing} yet: get not tried", ""))
    parent = prefix.rpartition("/")[0]
    marker = f"{parent + '/' if parent else ''}exports/.usage-etl-doctor-{uuid.uuid4().hex}"
    try:
        client.put_object(Bucket=bucket, Key=marker, Body=b"usage-etl doctor\n")
        client.delete_object(Bucket=bucket, Key=marker)
        checks.append(Check("S3 put", OK, f"s3://{bucket}/{marker} written and deleted"))
    except Exception as exc:
        found = s3_cause(exc)
        fix = found[0] if found and found[1] else "check the endpoint is up and reachable"
        checks.append(Check("S3 put", FAIL, f"s3://{bucket}/{marker}: {_one_line(exc)}", fix))
    return checks


def _warehouse_checks(settings: Settings, lock_wait: float) -> list[Check]:
    from usage_etl.warehouse.client import (
        ConnectOptions,
        EmbeddedEngineBusy,
        Warehouse,
        redact_url,
    )
    from usage_etl.warehouse.migrations import applied_versions, discover

    where = redact_url(settings.clickhouse_dsn)
    try:
        warehouse = Warehouse.open(
            settings.clickhouse_dsn, settings.database, lock_wait,
            ConnectOptions.from_settings(settings),
        )  # fmt: skip
    except EmbeddedEngineBusy as exc:
        holder = str(exc).split("(", 1)[-1].split(")", 1)[0]
        return [Check("ClickHouse", WARN, f"{where} busy: in use by {holder} (a run?)", "")]
    except Exception as exc:
        return [Check("ClickHouse", FAIL, _one_line(exc), "check USAGE_ETL_CLICKHOUSE_DSN")]
    try:
        version = warehouse.query_one("SELECT version()")
        checks = [Check("ClickHouse", OK, f"{where} (ClickHouse {version})")]
        exists = warehouse.query_one(
            "SELECT count() FROM system.tables WHERE database = {db:String} "
            "AND name = 'schema_migrations'",
            {"db": settings.database},
        )
        known = discover()
        applied = applied_versions(warehouse, settings.database) if exists else {}
        changed = [m.path.name for m in known if applied.get(m.version, m.checksum) != m.checksum]
        pending = [m.path.name for m in known if m.version not in applied]
        if changed:
            edited = f"applied migrations were edited: {', '.join(changed)}"
            fix = "restore the files as applied; put changes in a new migration"
            checks.append(Check("migrations", FAIL, edited, fix))
        elif pending:
            waiting = f"{len(pending)} pending ({pending[0]} …): the next run applies them"
            checks.append(Check("migrations", WARN, waiting))
        else:
            checks.append(Check("migrations", OK, f"all {len(known)} applied"))
        return checks
    except Exception as exc:
        return [Check("ClickHouse", FAIL, _one_line(exc), "check USAGE_ETL_CLICKHOUSE_DSN")]
    finally:
        warehouse.close()


def _instance_check() -> tuple[str, str, str]:
    from usage_etl.instance import instance_problems, is_prepared
    from usage_etl.settings import dagster_home

    home = dagster_home()
    try:
        problems = instance_problems(home)
    except Exception as exc:
        return FAIL, f"{home}: {_one_line(exc)}", "check DAGSTER_HOME"
    if problems:
        first = problems[0]
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return FAIL, f"{home}/{first.database}: {first.problem}{more}", first.fix
    if not is_prepared(home):
        return WARN, f"{home} not set up yet", "run `bash scripts/setup.sh` before the first runs"
    return OK, f"{home}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400]
