"""Schedules (UTC): yesterday's usage at 06:00, invoice drafts and finalization at 08:00.

06:00 leaves six hours for the last hour's files of the day to land; files later than that are
the late-file sensor's business. 08:00 queues behind the daily run (same `warehouse` pool), so
the month's draft includes yesterday."""

from datetime import date

import dagster as dg

from usage_etl.automation import tags
from usage_etl.automation.calendar import invoice_requests, previous_day
from usage_etl.defs.automation.history import period_is_final
from usage_etl.defs.jobs import daily_usage, monthly_invoices
from usage_etl.defs.resources import PriceBookResource
from usage_etl.defs.vocabulary import FIRST_DAY, schedule_status
from usage_etl.invoicing.price_book import load_price_book

DAILY_CRON = "0 6 * * *"
INVOICE_CRON = "0 8 * * *"
FIRST = date.fromisoformat(FIRST_DAY)


@dg.schedule(
    name="daily_usage_schedule",
    job=daily_usage,
    cron_schedule=DAILY_CRON,
    execution_timezone="UTC",
    default_status=schedule_status(),
    description="Every day at 06:00 UTC: materialize yesterday's daily_usage partition.",
)
def daily_usage_schedule(context: dg.ScheduleEvaluationContext):
    day = previous_day(context.scheduled_execution_time)
    if day < FIRST:
        return dg.SkipReason(f"{day} is before the first partition {FIRST_DAY}")
    return dg.RunRequest(
        run_key=f"daily:{day.isoformat()}",
        partition_key=day.isoformat(),
        tags=tags.day_tags(day, tags.SCHEDULE),
    )


@dg.schedule(
    name="monthly_invoices_schedule",
    job=monthly_invoices,
    cron_schedule=INVOICE_CRON,
    execution_timezone="UTC",
    default_status=schedule_status(),
    description="Every day at 08:00 UTC: refresh the current month's draft; refresh the "
    "previous month's draft during its grace period, then finalize it once period_end + "
    "grace_days has passed (requested daily until a run publishes it final).",
)
def monthly_invoices_schedule(context: dg.ScheduleEvaluationContext, price_book: PriceBookResource):
    at = context.scheduled_execution_time
    grace_days = load_price_book(price_book.resolved_path()).grace_days
    requests = invoice_requests(at, grace_days, lambda p: period_is_final(context.instance, p))
    return [
        dg.RunRequest(
            run_key=f"invoices:{r.period.label}:{r.purpose}:{at.date().isoformat()}",
            partition_key=r.period.start.isoformat(),
            tags={**tags.month_tags(r.period, tags.SCHEDULE), "usage_etl/purpose": r.purpose},
        )
        for r in requests
        if r.period.start >= FIRST
    ]
