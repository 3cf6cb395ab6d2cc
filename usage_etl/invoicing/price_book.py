"""The price book (contract §3 and §3.1): model, validation and graduated-tier math, exact to
the cent.

Quantities are exact rationals (`Fraction`): multiplier × meter / unit, with GiB = 2^30 bytes,
1k = 1000 requests and unit = 1. A tier's amount is ROUND_HALF_UP(exact tier quantity × unit
price, 2), computed from the exact product, and its stored quantity is the exact tier quantity
rounded half up to 9 decimals. No binary floating point is ever involved: a price written as a
YAML float is rejected, because the float has already lost the decimal the author meant.

Price book v2 (§3.1) adds defined meters (`meters:`), plan fixed fees and minimums, plan
history per account and prepaid credit grants. A v1 book (none of these keys) is validated and
priced exactly as before: every plan prices the three predefined meters. In a v2 book a plan
bills exactly the meters it lists (none required). What callers use:

- `book.meter_definition(name)`: a meter's `MeterDefinition` (predefined ones included);
  `book.meter_names()`: every meter, predefined first.
- `book.plan_for(account, period_start)`: the plan in force for that period;
  `book.plan(name)`: its `Plan` (`fixed_fee`, `minimum`, `meters`);
  `book.billed_meters(plan)`; `book.meter_price(plan, meter)` (unit resolved);
  `book.meter_unit(plan, meter)`.
- `book.grants_usable(account, period_start)`: usable credit grants in consumption order.
- `book.fee_accounts(period_start)`: named accounts whose plan has a fixed fee or minimum.
- `meter_quantity(raw, unit, multiplier)`: the exact quantity of a raw meter total.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

METERS = ("egress_bytes", "ingress_bytes", "requests")
UNITS = {"GiB": 2**30, "1k": 1000, "unit": 1}
MEASURES = ("bytes", "request_count")
# usage_daily dimensions a meter can filter on (validated: only these enter SQL as columns).
WHERE_KEYS = (
    "region", "node_id", "direction", "operation", "artifact_kind", "network_path", "project_id",
)  # fmt: skip
PLAN_FEES = ("fixed_fee", "minimum")
METER_UNITS = {"egress_bytes": "GiB", "ingress_bytes": "GiB", "requests": "1k"}
MAX_TIERS = 255  # the invoice column `tier` is UInt8
PRICE_SCALE = 6  # unit_price is Decimal(18, 6)
MAX_PRICE = Decimal(10) ** (18 - PRICE_SCALE)
QUANTITY_SCALE = 9  # quantity is Decimal(38, 9)
MAX_QUANTITY = Decimal(10) ** (38 - QUANTITY_SCALE)
AMOUNT_SCALE = 2  # amount is Decimal(18, 2)
MAX_AMOUNT = Decimal(10) ** (18 - AMOUNT_SCALE)


class PriceBookError(ValueError):
    """A price book that cannot be used, with every problem named by its field path."""


def _decimal_string(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str):
        kind = type(value).__name__
        raise ValueError(f'{what} must be a decimal string such as "0.09", got {kind} {value!r}')
    try:
        parsed = Decimal(value.strip())
    except InvalidOperation:
        raise ValueError(f"{what} {value!r} is not a decimal number") from None
    if not parsed.is_finite():
        raise ValueError(f"{what} must be a finite decimal, got {value!r}")
    return parsed


class Tier(BaseModel):
    """One graduated tier: bills the part of the quantity up to `up_to` (None: unbounded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    up_to: Decimal | None
    unit_price: Decimal

    @field_validator("unit_price", mode="before")
    @classmethod
    def _price(cls, value: Any) -> Decimal:
        return _column_decimal(value, "unit_price", PRICE_SCALE, MAX_PRICE)

    @field_validator("up_to", mode="before")
    @classmethod
    def _up_to(cls, value: Any) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            bound = Decimal(value)
        else:
            bound = _decimal_string(value, "up_to (an integer, a decimal string, or null)")
        if bound <= 0:
            raise ValueError(f"up_to must be positive, got {value!r}")
        return bound


def _sub(path: str, message: str) -> ValueError:
    """An error about `path` below the field being validated (see `_describe`)."""
    return ValueError(f"@{path}@ {message}")


def _column_decimal(value: Any, what: str, scale: int, maximum: Decimal) -> Decimal:
    """A decimal string that a Decimal(_, scale) column holds exactly: >= 0, at most `scale`
    decimals, below `maximum`."""
    number = _decimal_string(value, what)
    if number < 0:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    if number != number.quantize(Decimal(1).scaleb(-scale)):
        raise ValueError(f"{what} has more than {scale} decimals: {value!r}")
    if number >= maximum:
        raise ValueError(f"{what} must be below {maximum}, got {value!r}")
    return number


def _money(value: Any, what: str) -> Decimal:
    """An amount of money: a decimal string, >= 0, at most 2 decimals (amount columns)."""
    return _column_decimal(value, what, AMOUNT_SCALE, MAX_AMOUNT)


class MeterPrice(BaseModel):
    """How one meter is priced on one plan. `unit` is required for a predefined meter (v1);
    a defined meter takes its unit from its definition (naming another one is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: StrictStr | None = None
    tiers: list[Tier]

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str | None) -> str | None:
        if value is not None and value not in UNITS:
            raise ValueError(f"unknown unit {value!r} (known: {', '.join(UNITS)})")
        return value

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, tiers: list[Tier]) -> list[Tier]:
        if not tiers or len(tiers) > MAX_TIERS:
            raise ValueError(f"needs 1 to {MAX_TIERS} tiers, got {len(tiers)}")
        if tiers[-1].up_to is not None:
            raise ValueError("the last tier must be unbounded (up_to: null)")
        bounds = [t.up_to for t in tiers[:-1]]
        for index, bound in enumerate(bounds):
            if bound is None:
                raise ValueError(f"tier {index + 1} has up_to: null but is not the last tier")
            if index and bound <= bounds[index - 1]:
                raise ValueError(
                    f"tiers must be strictly increasing: tier {index + 1} up_to {bound} "
                    f"<= tier {index} up_to {bounds[index - 1]}"
                )
        return tiers


@dataclass(frozen=True)
class Condition:
    """One `where` condition: the column's value is in `values` (or not, if `negate`)."""

    values: tuple[str, ...]
    negate: bool = False

    def matches(self, value: str) -> bool:
        return (value in self.values) != self.negate

    def dump(self) -> list[str] | dict[str, list[str]]:
        return {"not": list(self.values)} if self.negate else list(self.values)


def _condition(key: str, value: Any) -> Condition:
    negate = isinstance(value, dict)
    if negate:
        if set(value) != {"not"}:
            raise _sub(key, "a condition is a list of values or {not: [values]}")
            # (a mapping with other keys than `not` is not a condition)
        value = value["not"]
    path = f"{key}.not" if negate else key
    if not isinstance(value, list):
        raise _sub(path, f"must be a list of strings, got {type(value).__name__} {value!r}")
    if not value:
        raise _sub(path, "empty list (it would match no row)" if not negate else "empty list")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _sub(f"{path}.{index}", f"must be a string, got {type(item).__name__} {item!r}")
    return Condition(tuple(value), negate)


class MeterDefinition(BaseModel):
    """A meter (§3.1): multiplier × sum(measure) of the usage_daily rows matching `where`
    (an AND of conditions; no condition = every row), in `unit`. `unit` is None only for
    the three predefined meters, whose unit comes from the plan (v1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    measure: StrictStr
    unit: StrictStr | None
    where: dict[str, Condition] = {}
    multiplier: Decimal = Decimal(1)

    @field_validator("measure")
    @classmethod
    def _measure(cls, value: str) -> str:
        if value not in MEASURES:
            raise ValueError(f"unknown measure {value!r} (known: {', '.join(MEASURES)})")
        return value

    @field_validator("unit", mode="before")
    @classmethod
    def _unit(cls, value: Any) -> Any:
        if value is None:
            raise ValueError(f"unit is required (one of {', '.join(UNITS)})")
        if value not in UNITS:
            raise ValueError(f"unknown unit {value!r} (known: {', '.join(UNITS)})")
        return value

    @field_validator("where", mode="before")
    @classmethod
    def _where(cls, value: Any) -> dict[str, Condition]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("where must be a mapping of column -> condition")
        where = {}
        for key, condition in value.items():
            if key not in WHERE_KEYS:
                raise _sub(str(key), f"unknown where key (known: {', '.join(WHERE_KEYS)})")
            where[key] = (
                condition if isinstance(condition, Condition) else _condition(key, condition)
            )
        return where

    @field_validator("multiplier", mode="before")
    @classmethod
    def _multiplier(cls, value: Any) -> Decimal:
        multiplier = _decimal_string(value, "multiplier")
        if multiplier < 0:
            raise ValueError(f"multiplier must not be negative, got {value!r}")
        return multiplier

    @model_serializer(mode="plain")
    def _dump(self) -> dict:
        return {
            "measure": self.measure,
            "unit": self.unit,
            "where": {key: c.dump() for key, c in self.where.items()},
            "multiplier": str(self.multiplier),
        }

    def matches(self, row: dict[str, str]) -> bool:
        """Whether a usage_daily row (its dimension values by column) counts in this meter."""
        return all(c.matches(row[key]) for key, c in self.where.items())


def _predefined(measure: str, **where: Condition) -> MeterDefinition:
    return MeterDefinition.model_construct(
        measure=measure, unit=None, where=where, multiplier=Decimal(1)
    )


# Contract §3: the three v1 meters, predefined in every book.
PREDEFINED = {
    "egress_bytes": _predefined(
        "bytes",
        direction=Condition(("egress",)),
        network_path=Condition(("private_network",), negate=True),
    ),
    "ingress_bytes": _predefined("bytes", direction=Condition(("ingress",))),
    "requests": _predefined("request_count"),
}


class Plan(BaseModel):
    """A plan: optional fixed fee and minimum (money), and the meters it bills.

    In the file the meter prices sit next to `fixed_fee` and `minimum` (as in v1); the model
    keeps them under `meters`, and dumps back to the file's shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fixed_fee: Decimal | None = None
    minimum: Decimal | None = None
    meters: dict[StrictStr, MeterPrice] = {}

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("a plan is a mapping of meter -> price (and fixed_fee, minimum)")
        fees = {k: v for k, v in data.items() if k in PLAN_FEES}
        return {**fees, "meters": {k: v for k, v in data.items() if k not in PLAN_FEES}}

    @field_validator("fixed_fee", "minimum", mode="before")
    @classmethod
    def _fee(cls, value: Any, info) -> Decimal | None:
        return None if value is None else _money(value, info.field_name)

    @model_serializer(mode="plain")
    def _dump(self) -> dict:
        fees = {"fixed_fee": self.fixed_fee, "minimum": self.minimum}
        out: dict[str, Any] = {k: str(v) for k, v in fees.items() if v is not None}
        out.update({name: price.model_dump(mode="json") for name, price in self.meters.items()})
        return out

    @property
    def is_v2(self) -> bool:
        return self.fixed_fee is not None or self.minimum is not None


def _month_start(value: date) -> date:
    """Contract §3.1: every `from` of the book (plan history and credit grants) is a month
    start."""
    if value.day != 1:
        raise ValueError(f"{value} is not the first day of a month")
    return value


class PlanChange(BaseModel):
    """One entry of an account's plan history: `plan` applies from `from` (a month start)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    plan: StrictStr
    from_: date = Field(alias="from")

    _month_start = field_validator("from_")(_month_start)


class Grant(BaseModel):
    """A prepaid credit grant, usable on invoices whose period_start is in [from, until)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: StrictStr
    account: StrictStr
    amount: Decimal
    from_: date = Field(alias="from")
    until: date

    _month_start = field_validator("from_")(_month_start)

    @field_validator("id", "account")
    @classmethod
    def _name(cls, value: str, info) -> str:
        if not value.strip():
            raise ValueError(f"{info.field_name} must not be empty")
        return value

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Decimal:
        amount = _money(value, "amount")
        if amount <= 0:
            raise ValueError(f"amount must be positive, got {value!r}")
        return amount

    @model_validator(mode="after")
    def _window(self) -> Grant:
        if self.until <= self.from_:
            raise _sub("until", f"{self.until} must be after from ({self.from_})")
        return self

    def usable(self, period_start: date) -> bool:
        return self.from_ <= period_start < self.until


AccountPlans = StrictStr | list[PlanChange]


class PriceBook(BaseModel):
    """Contract §3 and §3.1. See the module docstring for what callers use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: StrictStr
    currency: StrictStr
    grace_days: StrictInt
    default_plan: StrictStr
    meters: dict[StrictStr, MeterDefinition] = {}
    plans: dict[StrictStr, Plan]
    accounts: dict[StrictStr, AccountPlans] = {}
    credits: list[Grant] = []

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("version must not be empty")
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if len(value) != 3 or not value.isalpha() or not value.isupper():
            raise ValueError(f"currency must be an ISO 4217 code such as USD, got {value!r}")
        return value

    @field_validator("grace_days")
    @classmethod
    def _grace(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"grace_days must be >= 0, got {value}")
        return value

    @field_validator("accounts", mode="before")
    @classmethod
    def _accounts(cls, value: Any) -> Any:
        # Validate each form on its own so an error names the entry, not the union branch.
        if not isinstance(value, dict):
            return value
        out: dict[Any, Any] = {}
        for account, plans in value.items():
            if isinstance(plans, list):
                if not plans:
                    raise _sub(str(account), "empty list (give at least one {plan, from})")
                entries = []
                for index, entry in enumerate(plans):
                    try:
                        entries.append(PlanChange.model_validate(entry))
                    except ValidationError as error:
                        item = error.errors()[0]
                        where = ".".join(str(p) for p in (account, index, *item["loc"]))
                        raise _sub(where, _message(item)) from None
                out[account] = entries
            elif isinstance(plans, str):
                out[account] = plans
            else:
                raise _sub(
                    str(account),
                    "must be a plan name or a list of {plan, from}, got "
                    f"{type(plans).__name__} {plans!r}",
                )
        return out

    @model_validator(mode="after")
    def _references(self) -> PriceBook:
        problems = [*self._meter_problems(), *self._plan_problems(), *self._account_problems()]
        if self.default_plan not in self.plans:
            problems.append(f"default_plan: unknown plan {self.default_plan!r}")
        problems += self._credit_problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def is_v2(self) -> bool:
        """A book using any §3.1 key; a v1 book is validated exactly as before."""
        return bool(
            self.meters
            or self.credits
            or any(plan.is_v2 for plan in self.plans.values())
            or any(isinstance(plans, list) for plans in self.accounts.values())
        )

    def _meter_problems(self):
        for name in self.meters:
            if name in PREDEFINED:
                yield f"meters.{name}: predefined meter, it cannot be redefined"
            elif name in PLAN_FEES or name == "meters" or not name.strip():
                yield f"meters.{name}: reserved name, choose another meter name"

    def _plan_problems(self):
        known = self.meter_names()
        for name, plan in self.plans.items():
            for meter, price in plan.meters.items():
                path = f"plans.{name}.{meter}"
                if meter not in known:
                    yield f"{path}: unknown meter (known: {', '.join(known)})"
                elif meter in PREDEFINED:
                    if price.unit is None:
                        yield f"{path}.unit: required for {meter} (use {METER_UNITS[meter]})"
                    elif price.unit != METER_UNITS[meter]:
                        yield (
                            f"{path}.unit: {price.unit!r} does not measure {meter} "
                            f"(use {METER_UNITS[meter]})"
                        )
                elif price.unit is not None and price.unit != self.meters[meter].unit:
                    yield (
                        f"{path}.unit: {price.unit!r} does not measure {meter} (its definition "
                        f"uses {self.meters[meter].unit}; omit unit)"
                    )
            if not self.is_v2:  # v1: every plan prices the three meters
                for meter in METERS:
                    if meter not in plan.meters:
                        yield f"plans.{name}: meter {meter} is missing"

    def _account_problems(self):
        for account, plans in self.accounts.items():
            if isinstance(plans, str):
                if plans not in self.plans:
                    yield f"accounts.{account}: unknown plan {plans!r}"
                continue
            seen: set[date] = set()
            for index, entry in enumerate(plans):
                if entry.plan not in self.plans:
                    yield f"accounts.{account}.{index}.plan: unknown plan {entry.plan!r}"
                if entry.from_ in seen:
                    yield f"accounts.{account}.{index}.from: {entry.from_} is listed twice"
                seen.add(entry.from_)

    def _credit_problems(self) -> list[str]:
        problems = []
        seen: set[str] = set()
        for index, grant in enumerate(self.credits):
            if grant.id in seen:
                problems.append(f"credits.{index}.id: duplicated grant id {grant.id!r}")
            seen.add(grant.id)
        return problems

    # -- what pricing and invoicing use -----------------------------------------------------

    def meter_names(self) -> list[str]:
        """Every meter: the three predefined ones, then the defined ones in file order."""
        return [*METERS, *(m for m in self.meters if m not in PREDEFINED)]

    def meter_definition(self, meter: str) -> MeterDefinition:
        return PREDEFINED[meter] if meter in PREDEFINED else self.meters[meter]

    def plan(self, name: str) -> Plan:
        return self.plans[name]

    def plan_for(self, account_id: str, period_start: date | None = None) -> str:
        """The plan of `account_id` for the period starting `period_start`: v1 form, or the
        history entry with the greatest `from` <= period_start; before the first entry (or
        not named at all) the default plan. Without a period: the latest history entry."""
        plans = self.accounts.get(account_id)
        if plans is None:
            return self.default_plan
        if isinstance(plans, str):
            return plans
        applicable = [e for e in plans if period_start is None or e.from_ <= period_start]
        if not applicable:
            return self.default_plan
        return max(applicable, key=lambda e: e.from_).plan

    def billed_meters(self, plan: str) -> list[str]:
        """The meters `plan` bills, in line order (predefined first, then defined)."""
        return [m for m in self.meter_names() if m in self.plans[plan].meters]

    def meter_unit(self, plan: str, meter: str) -> str:
        unit = self.meter_definition(meter).unit or self.plans[plan].meters[meter].unit
        assert unit is not None  # validated
        return unit

    def meter_price(self, plan: str, meter: str) -> MeterPrice:
        """The plan's price of `meter`, with its unit resolved."""
        price = self.plans[plan].meters[meter]
        unit = self.meter_unit(plan, meter)
        return price if price.unit == unit else price.model_copy(update={"unit": unit})

    def fee_accounts(self, period_start: date) -> list[str]:
        """Accounts named in `accounts` whose plan for the period has a fixed fee or a
        minimum: they get an invoice even without usage."""
        return sorted(
            account
            for account in self.accounts
            if self.plans[self.plan_for(account, period_start)].is_v2
        )

    def grants_usable(self, account_id: str, period_start: date) -> list[Grant]:
        """The account's grants usable in the period, in consumption order (until, id)."""
        grants = [g for g in self.credits if g.account == account_id and g.usable(period_start)]
        return sorted(grants, key=lambda g: (g.until, g.id))

    def canonical_json(self) -> str:
        """The book as stored with a finalized period, so adjustments reprice with it."""
        return self.model_dump_json(by_alias=True, exclude_defaults=True)


def _message(item: dict) -> str:
    return str(item["msg"]).removeprefix("Value error, ")


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        message = _message(item)
        loc = [str(part) for part in item["loc"]]
        if len(loc) >= 3 and loc[0] == "plans" and loc[2] == "meters":
            loc.pop(2)  # the model keeps a plan's meter prices under `meters`; the file doesn't
        if not loc:  # cross-field problems already name their field path
            lines.extend(f"  - {problem}" for problem in message.splitlines())
            continue
        if message.startswith("@"):  # an error about a path below the validated field
            sub, _, message = message[1:].partition("@ ")
            loc.append(sub)
        lines.append(f"  - {'.'.join(loc)}: {message}")
    return "\n".join(lines)


def parse_price_book(data: Any, source: str = "") -> PriceBook:
    """Validate parsed YAML; `source` (a path) is named in the error."""
    title = f"invalid price book {source}".rstrip()
    if not isinstance(data, dict):
        raise PriceBookError(f"{title}: expected a mapping at the top level")
    try:
        return PriceBook.model_validate(data)
    except ValidationError as error:
        raise PriceBookError(f"{title}:\n{_describe(error)}") from None


def load_price_book(path: Path) -> PriceBook:
    """Read and validate the YAML price book at `path`."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise PriceBookError(f"cannot read price book {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise PriceBookError(f"price book {path} is not valid YAML: {error}") from None
    return parse_price_book(data, str(path))


def price_book_from_json(text: str) -> PriceBook:
    return PriceBook.model_validate_json(text)


# -- exact tier math ------------------------------------------------------------------------


def round_half_up(value: Fraction, places: int) -> Decimal:
    """Round an exact rational to `places` decimals, ties away from zero (ROUND_HALF_UP)."""
    return _round_ratio(value.numerator, value.denominator, places)


def _round_ratio(numerator: int, denominator: int, places: int) -> Decimal:
    # floor(|n|/d * 10^p + 1/2) in integers: (2|n|·10^p + d) // 2d
    units = (2 * abs(numerator) * 10**places + denominator) // (2 * denominator)
    sign = "-" if numerator < 0 and units else ""
    return Decimal(f"{sign}{units}E-{places}")


def meter_quantity(raw: int, unit: str, multiplier: Decimal = Decimal(1)) -> Fraction:
    """The exact quantity of a raw meter value (bytes or requests): multiplier × raw / unit."""
    return Fraction(multiplier) * Fraction(raw, UNITS[unit])


@dataclass(frozen=True)
class TierCharge:
    """The exact part of a quantity that one tier bills."""

    tier: int  # 1-based
    quantity: Fraction
    unit_price: Decimal

    @cached_property
    def stored_quantity(self) -> Decimal:
        return round_half_up(self.quantity, QUANTITY_SCALE)

    @cached_property
    def amount(self) -> Decimal:
        """From the exact product: no intermediate rounding of the quantity or the price."""
        price_n, price_d = self.unit_price.as_integer_ratio()
        return _round_ratio(
            self.quantity.numerator * price_n, self.quantity.denominator * price_d, AMOUNT_SCALE
        )


def tier_bounds(tiers: list[Tier], tier: int) -> tuple[Fraction, Fraction | None]:
    """(lower, upper) of the 1-based `tier`: it bills the part of a quantity in (lower, upper];
    upper None is unbounded. The one statement of the graduated rule; split_tiers applies it."""
    lower = Fraction(0) if tier == 1 else Fraction(tiers[tier - 2].up_to)
    up_to = tiers[tier - 1].up_to
    return lower, None if up_to is None else Fraction(up_to)


def split_tiers(quantity: Fraction, tiers: list[Tier]) -> list[TierCharge]:
    """Graduated split: each tier bills the part of `quantity` inside its `tier_bounds`.

    Only tiers with a positive part are returned.
    """
    charges = []
    for index, tier in enumerate(tiers, start=1):
        lower, upper = tier_bounds(tiers, index)
        top = quantity if upper is None else min(quantity, upper)
        if top > lower:
            charges.append(TierCharge(index, top - lower, tier.unit_price))
        if upper is None or quantity <= upper:
            break
    return charges


def price_meter(raw: int, price: MeterPrice, multiplier: Decimal = Decimal(1)) -> list[TierCharge]:
    """Price a raw meter total (`price.unit` resolved, see `PriceBook.meter_price`); refuse
    values the invoice columns cannot hold exactly."""
    assert price.unit is not None
    charges = split_tiers(meter_quantity(raw, price.unit, multiplier), price.tiers)
    for charge in charges:
        if charge.stored_quantity >= MAX_QUANTITY or charge.amount >= MAX_AMOUNT:
            raise OverflowError(
                f"tier {charge.tier} quantity {charge.stored_quantity} or amount "
                f"{charge.amount} does not fit the invoice columns"
            )
    return charges
