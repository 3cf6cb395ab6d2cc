"""Price book v2 and the v2 invoice lines, black box, against the contract text only
(contract §3, §3.1, §5, §6).

An outsider's view: usage rows go into `usage_daily`, a price book YAML is written to a file,
USAGE_ETL_PRICE_BOOK / USAGE_ETL_AS_OF are set, the `monthly_invoices` job of
`usage_etl.definitions` runs for a partition, and `invoice_line_items` / `invoices` are read
back with plain SQL. Every expected number is worked out by hand in the comments.
"""

from __future__ import annotations

import textwrap
from datetime import date
from decimal import Decimal

import dagster as dg

from usage_etl.definitions import defs

GIB = 2**30
OCT, NOV, DEC = "2026-10-01", "2026-11-01", "2026-12-01"
USAGE_COLUMNS = (
    "day", "account_id", "project_id", "region", "node_id", "direction", "operation",
    "artifact_kind", "network_path", "bytes", "request_count",
)  # fmt: skip
LINE_COLUMNS = (
    "invoice_id", "line_id", "account_id", "plan", "period_start", "period_end", "kind",
    "corrected_period_start", "meter", "reference", "tier", "quantity", "unit", "unit_price",
    "amount", "currency", "status", "price_book_version", "computed_at",
)  # fmt: skip
D = Decimal


def usage(wh, day, account, *, project="p1", region="eu", direction="egress",
          path="public_internet", gib=0, requests=0, node="n1", operation="download",
          kind="xcode", raw_bytes=None):  # fmt: skip
    wh.insert_rows(
        "usage_daily",
        [[day, account, project, region, node, direction, operation, kind, path,
          int(D(str(gib)) * GIB) if raw_bytes is None else raw_bytes, requests]],
        USAGE_COLUMNS,
    )  # fmt: skip


def book(tmp_path, monkeypatch, text: str, name: str = "book.yaml") -> None:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    monkeypatch.setenv("USAGE_ETL_PRICE_BOOK", str(path))


def execute(partition: str, as_of: str, monkeypatch) -> dg.ExecuteInProcessResult:
    monkeypatch.setenv("USAGE_ETL_AS_OF", as_of)
    job = defs().resolve_job_def("monthly_invoices")
    return job.execute_in_process(
        partition_key=partition, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures, "the run failed without a failed step"
    data = failures[0].step_failure_data
    return " ".join(
        filter(None, [data.user_failure_data and data.user_failure_data.description,
                      data.error and data.error.to_string()])
    )  # fmt: skip


def lines(wh, period_start: str) -> list[dict]:
    rows = wh.query_rows(
        f"SELECT {', '.join(LINE_COLUMNS)} FROM {wh.table('invoice_line_items')} "
        "WHERE period_start = {p:Date}",
        {"p": date.fromisoformat(period_start)},
    )
    return [dict(zip(LINE_COLUMNS, r, strict=True)) for r in rows]


def all_lines(wh) -> list[dict]:
    rows = wh.query_rows(f"SELECT {', '.join(LINE_COLUMNS)} FROM {wh.table('invoice_line_items')}")
    return [dict(zip(LINE_COLUMNS, r, strict=True)) for r in rows]


def invoices(wh, period_start: str) -> dict[str, dict]:
    cols = ("invoice_id", "account_id", "period_start", "period_end", "currency", "subtotal",
            "status", "finalized_at")  # fmt: skip
    rows = wh.query_rows(
        f"SELECT {', '.join(cols)} FROM {wh.table('invoices')} WHERE period_start = {{p:Date}}",
        {"p": date.fromisoformat(period_start)},
    )
    out = {}
    for r in rows:
        row = dict(zip(cols, r, strict=True))
        assert row["account_id"] not in out, f"two invoices rows for {row['account_id']}"
        out[row["account_id"]] = row
    return out


def key(line: dict) -> tuple:
    return (line["account_id"], line["kind"], line["meter"], int(line["tier"]),
            line["corrected_period_start"], line["reference"])  # fmt: skip


def by_key(rows: list[dict]) -> dict[tuple, dict]:
    out = {}
    for r in rows:
        assert key(r) not in out, f"duplicate line {key(r)}"
        out[key(r)] = r
    return out


def money(line: dict) -> tuple:
    """(quantity, unit, unit_price, amount) as exact decimals."""
    return (D(str(line["quantity"])), line["unit"], D(str(line["unit_price"])),
            D(str(line["amount"])))  # fmt: skip


def flat_shape(line: dict, amount: str) -> None:
    """Fixed, minimum and credit lines: quantity 1, unit period, tier 0, meter ''."""
    assert money(line) == (D(1), "period", D(amount), D(amount)), line
    assert line["tier"] == 0 and line["meter"] == ""


V2_BOOK = """\
    version: "v2-contract"
    currency: USD
    grace_days: 3
    default_plan: free
    meters:
      runner_egress:
        measure: bytes
        unit: GiB
        where:
          direction: [egress]
          region: [runners-eu, runners-us]
          network_path: {not: [private_network]}
        multiplier: "0.5"
      unbound_requests:
        measure: request_count
        unit: unit
        where:
          project_id: ['']
      node_reqs: {measure: request_count, unit: 1k, where: {node_id: [n2]}}
      upload_reqs: {measure: request_count, unit: unit, where: {operation: [upload]}}
      other_kinds: {measure: request_count, unit: unit, multiplier: "2",
                    where: {artifact_kind: {not: [xcode, gradle]}}}
      everything: {measure: bytes, unit: GiB}
      thirds: {measure: bytes, unit: GiB, multiplier: "0.333", where: {node_id: [n3]}}
    plans:
      free:
        egress_bytes: {unit: GiB, tiers: [{up_to: 10, unit_price: "0"},
                                          {up_to: null, unit_price: "0.09"}]}
      pro:
        fixed_fee: "49.00"
        minimum: "100.00"
        runner_egress: {tiers: [{up_to: 10, unit_price: "0.10"}, {up_to: null, unit_price: "0.05"}]}
        unbound_requests: {unit: unit, tiers: [{up_to: null, unit_price: "0.001"}]}
        egress_bytes: {unit: GiB, tiers: [{up_to: null, unit_price: "0.01"}]}
      feeonly:
        fixed_fee: "10.00"
      probe:
        node_reqs: {tiers: [{up_to: null, unit_price: "1"}]}
        upload_reqs: {tiers: [{up_to: null, unit_price: "1"}]}
        other_kinds: {tiers: [{up_to: null, unit_price: "1"}]}
        everything: {tiers: [{up_to: null, unit_price: "1"}]}
        thirds: {tiers: [{up_to: null, unit_price: "100000000"}]}
    accounts:
      acme: pro
      big: pro
      idle: feeonly
      probe: probe
      globex:
        - {plan: free, from: 2026-01-01}
        - {plan: pro, from: 2026-11-01}
    credits:
      - {id: grant-b, account: acme, amount: "30.00", from: 2026-10-01, until: 2027-10-01}
      - {id: grant-a, account: acme, amount: "30.00", from: 2026-10-01, until: 2027-10-01}
      - {id: grant-z, account: acme, amount: "80.00", from: 2026-10-01, until: 2027-01-01}
      - {id: grant-later, account: acme, amount: "999.00", from: 2026-12-01, until: 2027-12-01}
      - {id: grant-0, account: acme, amount: "5.00", from: 2026-09-01, until: 2026-10-01}
      - {id: grant-g, account: globex, amount: "0.10", from: 2026-10-01, until: 2027-01-01}
"""


def test_v2_meters_fees_minimum_credits_and_plan_history(
    warehouse, settings, tmp_path, monkeypatch
):
    book(tmp_path, monkeypatch, V2_BOOK)
    day = date(2026, 10, 7)
    # acme runner_egress: only egress, runner regions, not private: 20 + 6 GiB, x0.5 = 13 GiB
    usage(warehouse, day, "acme", region="runners-eu", gib=20)
    usage(warehouse, day, "acme", region="runners-us", path="unknown", gib=6)
    usage(warehouse, day, "acme", region="runners-eu", path="private_network", gib=100)
    usage(warehouse, day, "acme", region="eu", gib=50)  # not a runner region
    usage(warehouse, day, "acme", region="runners-eu", direction="ingress", gib=40)
    # acme unbound_requests: request_count of rows with no project: 1234 (unit = 1 request)
    usage(warehouse, day, "acme", project="", region="eu", requests=1234)
    usage(warehouse, day, "acme", project="p9", region="eu", requests=5000)
    # globex is on free in October (history): egress_bytes 15 GiB public
    usage(warehouse, day, "globex", gib=15)
    usage(warehouse, day, "globex", path="private_network", gib=7)
    # big: 100_000 requests without project @ 0.001 = 100.00; + 49 fee > minimum: no true-up
    usage(warehouse, day, "big", project="", requests=100_000)
    # probe: where on node_id, operation, artifact_kind ({not: ...}); a meter with no where
    usage(warehouse, day, "probe", node="n2", requests=1500, gib="0.25")
    usage(warehouse, day, "probe", operation="upload", direction="ingress", requests=7, gib=1)
    usage(warehouse, day, "probe", kind="reapi", path="private_network", requests=11, gib=2)
    usage(warehouse, day, "probe", kind="gradle", requests=1000, gib=3)
    usage(warehouse, day, "probe", node="n3", raw_bytes=3 * GIB + 3)

    draft_as_of = "2026-11-15T00:00:00Z"  # November draft (October would be final: Nov 4)
    oct_result = execute(OCT, "2026-11-02T00:00:00Z", monkeypatch)
    assert oct_result.success
    evaluations = {e.check_name: e for e in oct_result.get_asset_check_evaluations()}
    # pro bills egress_bytes and runner_egress: both can count a public runner egress row
    overlap = evaluations["meters_disjoint"]
    assert not overlap.passed and overlap.severity == dg.AssetCheckSeverity.WARN
    assert "runner_egress" in overlap.metadata["examples"].value
    assert "what_to_do" in overlap.metadata
    assert evaluations["credits_within_grants"].passed
    assert evaluations["subtotal_equals_lines"].passed
    oct_lines = by_key(lines(warehouse, OCT))
    o = None
    # runner_egress 13 GiB: tier 1 10 @ 0.10 = 1.00, tier 2 3 @ 0.05 = 0.15
    assert money(oct_lines[("acme", "usage", "runner_egress", 1, o, "")]) == (
        D("10"), "GiB", D("0.10"), D("1.00"))  # fmt: skip
    assert money(oct_lines[("acme", "usage", "runner_egress", 2, o, "")]) == (
        D("3"), "GiB", D("0.05"), D("0.15"))  # fmt: skip
    # unbound_requests 1234 unit @ 0.001 = 1.234 -> 1.23
    assert money(oct_lines[("acme", "usage", "unbound_requests", 1, o, "")]) == (
        D("1234"), "unit", D("0.001"), D("1.23"))  # fmt: skip
    # egress_bytes (overlaps runner_egress; meters are independent): public and unknown
    # egress of every region 20 + 6 + 50 = 76 GiB @ 0.01 = 0.76
    assert money(oct_lines[("acme", "usage", "egress_bytes", 1, o, "")]) == (
        D("76"), "GiB", D("0.01"), D("0.76"))  # fmt: skip
    # fixed 49.00; true-up = 100 - (1.00 + 0.15 + 1.23 + 0.76 + 49.00) = 47.86; total 100.00
    flat_shape(oct_lines[("acme", "fixed", "", 0, o, "")], "49.00")
    flat_shape(oct_lines[("acme", "minimum", "", 0, o, "")], "47.86")
    # credits by earliest until, then id: grant-z 80 (until 2027-01), grant-a 20 -> total 0;
    # grant-0 ended (until is exclusive), grant-later not started
    flat_shape(oct_lines[("acme", "credit", "", 0, o, "grant-z")], "-80.00")
    flat_shape(oct_lines[("acme", "credit", "", 0, o, "grant-a")], "-20.00")
    acme_oct = [r for r in oct_lines.values() if r["account_id"] == "acme"]
    assert len(acme_oct) == 8, sorted(key(r) for r in acme_oct)  # no grant-b, no grant-later
    assert all(r["plan"] == "pro" for r in acme_oct)
    assert all(r["reference"] == "" for r in acme_oct if r["kind"] != "credit")
    # globex on free in October: egress 15 GiB public -> 10 @ 0 = 0.00, 5 @ 0.09 = 0.45
    assert money(oct_lines[("globex", "usage", "egress_bytes", 1, o, "")]) == (
        D("10"), "GiB", D("0"), D("0.00"))  # fmt: skip
    assert money(oct_lines[("globex", "usage", "egress_bytes", 2, o, "")]) == (
        D("5"), "GiB", D("0.09"), D("0.45"))  # fmt: skip
    assert {r["plan"] for r in oct_lines.values() if r["account_id"] == "globex"} == {"free"}
    flat_shape(oct_lines[("globex", "credit", "", 0, o, "grant-g")], "-0.10")
    # probe: node_reqs 1500 requests on n2 = 1.5k; upload_reqs 7; other_kinds 2 x 11 = 22;
    # everything: all bytes 0.25 + 1 + 2 + 3 + (3 + 3/2^30) GiB = 9.250000002793967... GiB,
    # stored 9.250000003, amount 9.25 (each @ 1).
    # thirds: 0.333 x (3 + 3/2^30) = 0.999000000930385... GiB, stored 0.999000001; amount from
    # the exact quantity: x 100000000 = 99900000.0930385... -> 99900000.09 (the stored
    # quantity would give .10)
    assert {k[2]: money(v) for k, v in oct_lines.items() if k[0] == "probe"} == {
        "node_reqs": (D("1.5"), "1k", D("1"), D("1.50")),
        "upload_reqs": (D("7"), "unit", D("1"), D("7.00")),
        "other_kinds": (D("22"), "unit", D("1"), D("22.00")),
        "everything": (D("9.250000003"), "GiB", D("1"), D("9.25")),
        "thirds": (D("0.999000001"), "GiB", D("100000000"), D("99900000.09")),
    }
    # big: usage over the commitment -> no minimum line
    assert sorted(k for k in oct_lines if k[0] == "big") == [
        ("big", "fixed", "", 0, o, ""), ("big", "usage", "unbound_requests", 1, o, ""),
    ]  # fmt: skip
    # idle: fixed fee only, no usage -> an invoice with one fixed line and no true-up
    idle = [r for r in oct_lines.values() if r["account_id"] == "idle"]
    assert [key(r) for r in idle] == [("idle", "fixed", "", 0, None, "")]
    flat_shape(idle[0], "10.00")
    assert {r["status"] for r in oct_lines.values()} == {"draft"}
    assert {r["price_book_version"] for r in oct_lines.values()} == {"v2-contract"}
    assert {r["currency"] for r in oct_lines.values()} == {"USD"}
    assert len({r["line_id"] for r in oct_lines.values()}) == len(oct_lines)
    oct_invoices = invoices(warehouse, OCT)
    assert {a: D(str(i["subtotal"])) for a, i in oct_invoices.items()} == {
        "acme": D("0.00"), "globex": D("0.35"), "idle": D("10.00"), "big": D("149.00"),
        "probe": D("99900039.84"),
    }  # fmt: skip
    for account, inv in oct_invoices.items():
        mine = [D(str(r["amount"])) for r in oct_lines.values() if r["account_id"] == account]
        assert D(str(inv["subtotal"])) == sum(mine)
        assert {r["invoice_id"] for r in oct_lines.values() if r["account_id"] == account} == {
            inv["invoice_id"]
        }

    nov_result = execute(NOV, draft_as_of, monkeypatch)
    assert nov_result.success
    nov_lines = by_key(lines(warehouse, NOV))
    # acme November, no usage: fixed 49 + true-up 51 = 100; grant-z spent, grant-a has 10 left
    # (October's draft consumed 20), then grant-b 30 -> total 60.00. grant-later not usable yet.
    flat_shape(nov_lines[("acme", "fixed", "", 0, o, "")], "49.00")
    flat_shape(nov_lines[("acme", "minimum", "", 0, o, "")], "51.00")
    flat_shape(nov_lines[("acme", "credit", "", 0, o, "grant-a")], "-10.00")
    flat_shape(nov_lines[("acme", "credit", "", 0, o, "grant-b")], "-30.00")
    assert len([k for k in nov_lines if k[0] == "acme"]) == 4
    # globex moves to pro on 2026-11-01: invoice without usage, fixed 49 + true-up 51
    flat_shape(nov_lines[("globex", "fixed", "", 0, o, "")], "49.00")
    flat_shape(nov_lines[("globex", "minimum", "", 0, o, "")], "51.00")
    assert {r["plan"] for r in nov_lines.values() if r["account_id"] == "globex"} == {"pro"}
    assert len([k for k in nov_lines if k[0] == "globex"]) == 2  # grant-g spent in October
    nov_invoices = invoices(warehouse, NOV)
    assert {a: D(str(i["subtotal"])) for a, i in nov_invoices.items()} == {
        "acme": D("60.00"), "globex": D("100.00"), "idle": D("10.00"), "big": D("100.00"),
    }  # fmt: skip

    # Re-running either partition leaves the same rows apart from computed_at.
    def snapshot():
        return sorted(
            tuple(v for k, v in r.items() if k != "computed_at") for r in all_lines(warehouse)
        ), {p: invoices(warehouse, p) for p in (OCT, NOV)}

    before = snapshot()
    assert execute(OCT, "2026-11-02T00:00:00Z", monkeypatch).success
    assert execute(NOV, draft_as_of, monkeypatch).success
    assert snapshot() == before


BAD_FROM = """\
    version: "bad"
    currency: USD
    grace_days: 3
    default_plan: free
    plans:
      free:
        egress_bytes: {unit: GiB, tiers: [{up_to: null, unit_price: "0.09"}]}
    accounts:
      globex:
        - {plan: free, from: 2026-10-15}
"""
BAD_METER = """\
    version: "bad"
    currency: USD
    grace_days: 3
    default_plan: free
    plans:
      free:
        egress_bytes: {unit: GiB, tiers: [{up_to: null, unit_price: "0.09"}]}
      pro:
        runner_egress: {tiers: [{up_to: null, unit_price: "0.09"}]}
"""
BAD_UNIT = """\
    version: "bad"
    currency: USD
    grace_days: 3
    default_plan: free
    meters:
      runner_egress: {measure: bytes, unit: GiB, where: {region: [runners-eu]}}
    plans:
      free:
        runner_egress: {unit: 1k, tiers: [{up_to: null, unit_price: "0.09"}]}
"""
BAD_WHERE_KEY = BAD_UNIT.replace("region:", "colour:").replace("unit: 1k, ", "")
BAD_EMPTY_LIST = BAD_UNIT.replace("[runners-eu]", "[]").replace("unit: 1k, ", "")
BAD_PLAN = BAD_FROM.replace("{plan: free, from: 2026-10-15}", "{plan: gold, from: 2026-10-01}")
BAD_GRANT = BAD_FROM.replace("2026-10-15}", "2026-10-01}") + textwrap.indent(
    textwrap.dedent("""\
        credits:
          - {id: g1, account: globex, amount: "1.00", from: 2026-10-01, until: 2027-01-01}
          - {id: g1, account: globex, amount: "2.00", from: 2026-10-01, until: 2027-01-01}
    """),
    "    ",
)
BAD_GRANT_FROM = BAD_FROM.replace("2026-10-15}", "2026-10-01}") + textwrap.indent(
    textwrap.dedent("""\
        credits:
          - {id: g1, account: globex, amount: "1.00", from: 2026-10-15, until: 2027-01-01}
    """),
    "    ",
)
V1_BOOK = """\
    version: "v1-contract"
    currency: USD
    grace_days: 3
    default_plan: free
    plans:
      free:
        egress_bytes:  {unit: GiB, tiers: [{up_to: 10, unit_price: "0"},
                                           {up_to: null, unit_price: "0.09"}]}
        ingress_bytes: {unit: GiB, tiers: [{up_to: null, unit_price: "0"}]}
        requests:      {unit: 1k,  tiers: [{up_to: 100, unit_price: "0"},
                                           {up_to: null, unit_price: "0.004"}]}
    accounts:
      acme: free
"""


def test_v1_book_prices_as_before_and_invalid_books_write_nothing(
    warehouse, settings, tmp_path, monkeypatch
):
    day = date(2026, 10, 3)
    # beta: 12.5 GiB public egress, 3 GiB private egress (not egress_bytes), 2 GiB ingress,
    # 150_001 requests over all rows
    usage(warehouse, day, "beta", gib="12.5", requests=150_000)
    usage(warehouse, day, "beta", path="private_network", gib=3, requests=1)
    usage(warehouse, day, "beta", direction="ingress", path="unknown", gib=2)
    book(tmp_path, monkeypatch, V1_BOOK, "v1.yaml")
    assert execute(OCT, "2026-10-20T00:00:00Z", monkeypatch).success
    got = by_key(lines(warehouse, OCT))
    o = None
    # egress 12.5 GiB: 10 @ 0 = 0.00, 2.5 @ 0.09 = 0.225 -> 0.23 (half up)
    # ingress 2 GiB @ 0 = 0.00; requests 150.001k: 100 @ 0, 50.001 @ 0.004 = 0.200004 -> 0.20
    assert {k: money(v) for k, v in got.items()} == {
        ("beta", "usage", "egress_bytes", 1, o, ""): (D("10"), "GiB", D("0"), D("0")),
        ("beta", "usage", "egress_bytes", 2, o, ""): (D("2.5"), "GiB", D("0.09"), D("0.23")),
        ("beta", "usage", "ingress_bytes", 1, o, ""): (D("2"), "GiB", D("0"), D("0")),
        ("beta", "usage", "requests", 1, o, ""): (D("100"), "1k", D("0"), D("0")),
        ("beta", "usage", "requests", 2, o, ""): (D("50.001"), "1k", D("0.004"), D("0.20")),
    }
    assert {r["plan"] for r in got.values()} == {"free"}  # acme (no usage, no fee): no invoice
    assert D(str(invoices(warehouse, OCT)["beta"]["subtotal"])) == D("0.43")
    before = (all_lines(warehouse), invoices(warehouse, OCT))

    for name, text, must_name in (
        ("from.yaml", BAD_FROM, ("globex", "from")),
        ("meter.yaml", BAD_METER, ("plans.pro.runner_egress", "unknown meter")),
        ("unit.yaml", BAD_UNIT, ("plans.free.runner_egress", "unit")),
        ("where.yaml", BAD_WHERE_KEY, ("meters.runner_egress.where", "colour")),
        ("empty.yaml", BAD_EMPTY_LIST, ("meters.runner_egress.where.region",)),
        ("plan.yaml", BAD_PLAN, ("globex", "gold")),
        ("grant.yaml", BAD_GRANT, ("credits", "g1")),
        ("grant_from.yaml", BAD_GRANT_FROM, ("credits.0.from", "2026-10-15")),
    ):
        book(tmp_path, monkeypatch, text, name)
        result = execute(OCT, "2026-10-21T00:00:00Z", monkeypatch)
        assert not result.success, name
        message = failure_text(result)
        assert all(part in message for part in must_name), (name, message)
        # nothing written: not even a new computed_at
        assert (all_lines(warehouse), invoices(warehouse, OCT)) == before, name


LATE_BOOK = """\
    version: "v2-late"
    currency: USD
    grace_days: 3
    default_plan: free
    plans:
      free:
        egress_bytes: {unit: GiB, tiers: [{up_to: null, unit_price: "0.09"}]}
      pro:
        minimum: "100.00"
        egress_bytes: {unit: GiB, tiers: [{up_to: 50, unit_price: "1.00"},
                                          {up_to: null, unit_price: "0.50"}]}
      basic:
        fixed_fee: "5.00"
        egress_bytes: {unit: GiB, tiers: [{up_to: null, unit_price: "9.00"}]}
    accounts:
      acme:
        - {plan: pro, from: 2026-01-01}
        - {plan: basic, from: 2026-11-01}
    credits:
      - {id: g1, account: acme, amount: "500.00", from: 2026-01-01, until: 2028-01-01}
"""


def test_late_usage_of_a_final_period_adjusts_usage_minimum_and_keeps_its_credits(
    warehouse, settings, tmp_path, monkeypatch
):
    book(tmp_path, monkeypatch, LATE_BOOK)
    usage(warehouse, date(2026, 10, 2), "acme", gib=20)
    # October under pro: 20 GiB @ 1.00 = 20.00, true-up 80.00, total 100.00, credit g1 -100.00
    as_of = "2026-11-05T00:00:00Z"  # October final (Nov 1 + 3 days), November draft
    assert execute(OCT, as_of, monkeypatch).success
    oct_before = sorted(map(str, all_lines(warehouse)))
    got = by_key(lines(warehouse, OCT))
    assert money(got[("acme", "usage", "egress_bytes", 1, None, "")]) == (
        D("20"), "GiB", D("1.00"), D("20.00"))  # fmt: skip
    flat_shape(got[("acme", "minimum", "", 0, None, "")], "80.00")
    flat_shape(got[("acme", "credit", "", 0, None, "g1")], "-100.00")
    assert len(got) == 3 and {r["status"] for r in got.values()} == {"final"}
    oct_invoice = invoices(warehouse, OCT)["acme"]
    assert D(str(oct_invoice["subtotal"])) == D("0.00")
    assert oct_invoice["status"] == "final" and oct_invoice["finalized_at"] is not None

    # 30 GiB of October arrive late: October is now 50 GiB under pro: 50 @ 1.00 = 50.00,
    # true-up 50.00 -> new total 100.00 = finalized 100.00
    usage(warehouse, date(2026, 10, 30), "acme", gib=30)
    assert execute(OCT, as_of, monkeypatch).success
    assert sorted(map(str, all_lines(warehouse))) == oct_before  # final: never rewritten

    assert execute(NOV, as_of, monkeypatch).success
    nov = by_key(lines(warehouse, NOV))
    c = date(2026, 10, 1)
    # adjustments priced under October's plan (pro), not November's (basic)
    assert money(nov[("acme", "adjustment", "egress_bytes", 1, c, "")]) == (
        D("30"), "GiB", D("1.00"), D("30.00"))  # fmt: skip
    flat_shape(nov[("acme", "minimum", "", 0, c, "")], "-30.00")  # true-up 80 -> 50
    # November's own: basic fixed 5.00, no minimum; total 5 + 0 = 5 -> credit g1 -5.00
    flat_shape(nov[("acme", "fixed", "", 0, None, "")], "5.00")
    flat_shape(nov[("acme", "credit", "", 0, None, "g1")], "-5.00")
    assert len(nov) == 4, sorted(nov)
    assert {r["status"] for r in nov.values()} == {"draft"}
    assert len({r["line_id"] for r in nov.values()}) == len(nov)  # two `minimum` lines
    nov_invoice = invoices(warehouse, NOV)["acme"]
    assert D(str(nov_invoice["subtotal"])) == D("0.00")
    assert (nov_invoice["period_end"], nov_invoice["currency"]) == (date(2026, 12, 1), "USD")
    assert nov_invoice["status"] == "draft" and nov_invoice["finalized_at"] is None

    # November becomes final as it is; then 170 more GiB of October arrive: 220 GiB,
    # 50 @ 1.00 + 170 @ 0.50 = 135.00, true-up 0 -> total 135.00 against 100.00 finalized
    # and corrections so far 0.00: December corrects tier 2 by +85.00 and the true-up
    # by -50.00 (50 -> 0); December's own basic fee 5 + 35 = 40 -> credit g1 -40.00
    final_nov = "2026-12-05T00:00:00Z"
    assert execute(NOV, final_nov, monkeypatch).success
    nov_final = by_key(lines(warehouse, NOV))
    assert {r["status"] for r in nov_final.values()} == {"final"}
    assert {k: money(v) for k, v in nov_final.items()} == {k: money(v) for k, v in nov.items()}
    usage(warehouse, date(2026, 10, 31), "acme", gib=170)
    dec_result = execute(DEC, final_nov, monkeypatch)
    assert dec_result.success
    assert all(e.passed for e in dec_result.get_asset_check_evaluations())
    dec = by_key(lines(warehouse, DEC))
    assert money(dec[("acme", "adjustment", "egress_bytes", 2, c, "")]) == (
        D("170"), "GiB", D("0.50"), D("85.00"))  # fmt: skip
    flat_shape(dec[("acme", "minimum", "", 0, c, "")], "-50.00")
    corrections = [D(str(r["amount"])) for r in all_lines(warehouse)
                   if r["corrected_period_start"] == c]  # fmt: skip
    assert sum(corrections) == D("135.00") - D("100.00")
    flat_shape(dec[("acme", "fixed", "", 0, None, "")], "5.00")
    flat_shape(dec[("acme", "credit", "", 0, None, "g1")], "-40.00")
    assert len(dec) == 4, sorted(dec)
    assert D(str(invoices(warehouse, DEC)["acme"]["subtotal"])) == D("0.00")
    # October's and November's final lines, credits included, are untouched
    assert sorted(map(str, lines(warehouse, OCT))) == sorted(map(str, got.values()))
    assert sorted(map(str, lines(warehouse, NOV))) == sorted(map(str, nov_final.values()))


SHRINK_BOOK = """\
    version: "v2-shrink"
    currency: USD
    grace_days: 3
    default_plan: free
    plans:
      free:
        egress_bytes: {unit: GiB, tiers: [{up_to: null, unit_price: "0.09"}]}
      pro:
        fixed_fee: "10.00"
        minimum: "50.00"
        egress_bytes: {unit: GiB, tiers: [{up_to: null, unit_price: "1.00"}]}
    accounts:
      acme: pro
    credits:
      - {id: g1, account: acme, amount: "500.00", from: 2026-10-01, until: 2028-01-01}
"""


def test_usage_of_a_final_period_shrinking_gives_negative_adjustments_and_no_credit(
    warehouse, settings, tmp_path, monkeypatch
):
    book(tmp_path, monkeypatch, SHRINK_BOOK)
    day = date(2026, 10, 2)
    usage(warehouse, day, "acme", gib=150)
    # October: 150 GiB @ 1.00 = 150.00 + fee 10.00 = 160.00 >= minimum: no true-up;
    # credit g1 -160.00
    as_of = "2026-11-05T00:00:00Z"
    assert execute(OCT, as_of, monkeypatch).success
    octo = by_key(lines(warehouse, OCT))
    assert sorted(octo) == [
        ("acme", "credit", "", 0, None, "g1"), ("acme", "fixed", "", 0, None, ""),
        ("acme", "usage", "egress_bytes", 1, None, ""),
    ]  # fmt: skip
    flat_shape(octo[("acme", "credit", "", 0, None, "g1")], "-160.00")

    # a node re-emits smaller rollups: the day is re-run and now holds 20 GiB. October would
    # now be 20 + 10 + true-up 20 = 50.00 against 160.00 finalized: corrections -110.00
    warehouse.command(
        f"ALTER TABLE {warehouse.table('usage_daily')} DELETE WHERE day = {{d:Date}}",
        {"d": day},
        mutations_sync=2,
    )
    usage(warehouse, day, "acme", gib=20)
    assert execute(NOV, as_of, monkeypatch).success
    nov = by_key(lines(warehouse, NOV))
    c = date(2026, 10, 1)
    assert money(nov[("acme", "adjustment", "egress_bytes", 1, c, "")]) == (
        D("-130"), "GiB", D("1.00"), D("-130.00"))  # fmt: skip
    flat_shape(nov[("acme", "minimum", "", 0, c, "")], "20.00")
    # November's own: fee 10 + true-up 40 = 50.00; with -110.00 of corrections the total is
    # -60.00: below 0 already, so no credit line (credits only bring a total down to 0)
    flat_shape(nov[("acme", "fixed", "", 0, None, "")], "10.00")
    flat_shape(nov[("acme", "minimum", "", 0, None, "")], "40.00")
    assert len(nov) == 4, sorted(nov)
    assert D(str(invoices(warehouse, NOV)["acme"]["subtotal"])) == D("-60.00")
    # October's credit stays as finalized
    assert by_key(lines(warehouse, OCT)) == octo


def test_late_usage_is_priced_with_the_book_the_corrected_period_was_finalized_with(
    warehouse, settings, tmp_path, monkeypatch
):
    first = SHRINK_BOOK.replace('"v2-shrink"', '"book-a"')
    first = first.replace('        fixed_fee: "10.00"\n', "")
    book(tmp_path, monkeypatch, first, "a.yaml")
    usage(warehouse, date(2026, 10, 2), "acme", gib=20)
    # October under book A: 20 GiB @ 1.00 = 20.00 + true-up 30.00 = 50.00; credit -50.00
    as_of = "2026-11-05T00:00:00Z"
    assert execute(OCT, as_of, monkeypatch).success
    octo = by_key(lines(warehouse, OCT))
    flat_shape(octo[("acme", "minimum", "", 0, None, "")], "30.00")

    # book B doubles the price and raises the minimum; 40 GiB of October arrive late
    second = first.replace('"book-a"', '"book-b"').replace('"1.00"', '"2.00"')
    book(tmp_path, monkeypatch, second.replace('"50.00"', '"70.00"'), "b.yaml")
    usage(warehouse, date(2026, 10, 20), "acme", gib=40)
    assert execute(NOV, as_of, monkeypatch).success
    nov = by_key(lines(warehouse, NOV))
    c = date(2026, 10, 1)
    # October with book A: 60 GiB @ 1.00 = 60.00, true-up 0 -> corrections +40 and -30
    assert money(nov[("acme", "adjustment", "egress_bytes", 1, c, "")]) == (
        D("40"), "GiB", D("1.00"), D("40.00"))  # fmt: skip
    flat_shape(nov[("acme", "minimum", "", 0, c, "")], "-30.00")
    # November's own under book B: no usage, true-up 70.00; total 80.00; credit -80.00
    flat_shape(nov[("acme", "minimum", "", 0, None, "")], "70.00")
    flat_shape(nov[("acme", "credit", "", 0, None, "g1")], "-80.00")
    assert len(nov) == 4, sorted(nov)
    assert by_key(lines(warehouse, OCT)) == octo
