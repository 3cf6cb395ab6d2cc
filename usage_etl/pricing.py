"""The price book (contract §3): model, validation and graduated-tier math, exact to the cent.

Quantities are exact rationals (`Fraction`): meter / unit, with GiB = 2^30 bytes and
1k = 1000 requests. A tier's amount is ROUND_HALF_UP(exact tier quantity × unit price, 2),
computed from the exact product, and its stored quantity is the exact tier quantity rounded
half up to 9 decimals. No binary floating point is ever involved: a price written as a YAML
float is rejected, because the float has already lost the decimal the author meant.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

METERS = ("egress_bytes", "ingress_bytes", "requests")
UNITS = {"GiB": 2**30, "1k": 1000}
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
        price = _decimal_string(value, "unit_price")
        if price < 0:
            raise ValueError(f"unit_price must not be negative, got {value!r}")
        if price != price.quantize(Decimal(1).scaleb(-PRICE_SCALE)):
            raise ValueError(f"unit_price has more than {PRICE_SCALE} decimals: {value!r}")
        if price >= MAX_PRICE:
            raise ValueError(f"unit_price must be below {MAX_PRICE}, got {value!r}")
        return price

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


class MeterPrice(BaseModel):
    """How one meter is priced on one plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: StrictStr
    tiers: list[Tier]

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str) -> str:
        if value not in UNITS:
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


class PriceBook(BaseModel):
    """Contract §3. Plans map each of the three meters to a unit and graduated tiers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: StrictStr
    currency: StrictStr
    grace_days: StrictInt
    default_plan: StrictStr
    plans: dict[StrictStr, dict[StrictStr, MeterPrice]]
    accounts: dict[StrictStr, StrictStr] = {}

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

    @model_validator(mode="after")
    def _references(self) -> PriceBook:
        problems = [*self._plan_problems()]
        if self.default_plan not in self.plans:
            problems.append(f"default_plan: unknown plan {self.default_plan!r}")
        for account, plan in self.accounts.items():
            if plan not in self.plans:
                problems.append(f"accounts.{account}: mapped to unknown plan {plan!r}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _plan_problems(self):
        for name, meters in self.plans.items():
            for meter in meters:
                if meter not in METERS:
                    yield f"plans.{name}.{meter}: unknown meter (known: {', '.join(METERS)})"
            for meter in METERS:
                if meter not in meters:
                    yield f"plans.{name}: meter {meter} is missing"
                elif meters[meter].unit != METER_UNITS[meter]:
                    yield (
                        f"plans.{name}.{meter}.unit: {meters[meter].unit!r} does not measure "
                        f"{meter} (use {METER_UNITS[meter]})"
                    )

    def plan_for(self, account_id: str) -> str:
        return self.accounts.get(account_id, self.default_plan)

    def meter_price(self, plan: str, meter: str) -> MeterPrice:
        return self.plans[plan][meter]

    def canonical_json(self) -> str:
        """The book as stored with a finalized period, so adjustments reprice with it."""
        return self.model_dump_json()


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["loc"]:
            where = ".".join(str(part) for part in item["loc"])
            lines.append(f"  - {where}: {message}")
        else:  # cross-field problems already name their field path
            lines.extend(f"  - {problem}" for problem in message.splitlines())
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


def meter_quantity(raw: int, unit: str) -> Fraction:
    """The exact quantity of a raw meter value (bytes or requests) in `unit`."""
    return Fraction(raw, UNITS[unit])


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


def split_tiers(quantity: Fraction, tiers: list[Tier]) -> list[TierCharge]:
    """Graduated split: tier i bills the part of `quantity` in (up_to[i-1], up_to[i]].

    Only tiers with a positive part are returned.
    """
    charges = []
    lower = Fraction(0)
    for index, tier in enumerate(tiers, start=1):
        upper = None if tier.up_to is None else Fraction(tier.up_to)
        top = quantity if upper is None else min(quantity, upper)
        if top > lower:
            charges.append(TierCharge(index, top - lower, tier.unit_price))
        if upper is None or quantity <= upper:
            break
        lower = upper
    return charges


def price_meter(raw: int, price: MeterPrice) -> list[TierCharge]:
    """Price a raw meter total; refuse values the invoice columns cannot hold exactly."""
    charges = split_tiers(meter_quantity(raw, price.unit), price.tiers)
    for charge in charges:
        if charge.stored_quantity >= MAX_QUANTITY or charge.amount >= MAX_AMOUNT:
            raise OverflowError(
                f"tier {charge.tier} quantity {charge.stored_quantity} or amount "
                f"{charge.amount} does not fit the invoice columns"
            )
    return charges
