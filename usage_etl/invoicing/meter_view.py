"""What a plan's meters measure and how they are tiered, read from a price book, for the money
view (`explain`, the usage statement, `bill`).

This module is the one place that looks inside the price book model: `plan_meters` is the
adapter. Everything else (explain, statement, bill) works on `MeterDefinition` and
`MeterPricing`, and takes the tier math from `usage_etl.invoicing.price_book` (never a copy of it).

A meter's quantity is exact: multiplier × sum(measure over the rows its `where` selects) / unit
(contract §3 and §3.1). `where` is evaluated here in Python on usage_daily's dimension values:
no value ever enters SQL text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from usage_etl.invoicing import price_book
from usage_etl.periods import Period

UNIT_SIZES = price_book.UNITS


@dataclass(frozen=True)
class Condition:
    """`key` in `values` (or, `negated`, not in them)."""

    key: str
    values: tuple[str, ...]
    negated: bool = False

    def matches(self, dims: Mapping[str, str]) -> bool:
        return (dims[self.key] in self.values) != self.negated

    def describe(self) -> str:
        listed = ", ".join(repr(v) for v in self.values)
        return f"{self.key} {'not in' if self.negated else 'in'} [{listed}]"


@dataclass(frozen=True)
class MeterDefinition:
    name: str
    measure: str  # bytes | request_count
    unit: str
    where: tuple[Condition, ...] = ()
    multiplier: Decimal = Decimal(1)

    @property
    def unit_size(self) -> int:
        return UNIT_SIZES[self.unit]

    def matches(self, dims: Mapping[str, str]) -> bool:
        return all(c.matches(dims) for c in self.where)

    def quantity(self, raw: int) -> Fraction:
        """The exact quantity of a raw measure total, in the meter's unit."""
        return Fraction(self.multiplier) * raw / self.unit_size

    def describe_where(self) -> str:
        return " AND ".join(c.describe() for c in self.where) or "all rows"

    def as_dict(self) -> dict:
        return {
            "meter": self.name,
            "measure": self.measure,
            "unit": self.unit,
            "unit_size": self.unit_size,
            "where": [
                {"key": c.key, "op": "not in" if c.negated else "in", "values": list(c.values)}
                for c in self.where
            ],
            "where_text": self.describe_where(),
            "multiplier": format(self.multiplier, "f"),
        }


@dataclass(frozen=True)
class MeterPricing:
    """One meter as one plan bills it: its definition and its graduated tiers."""

    definition: MeterDefinition
    tiers: tuple  # price_book.Tier (up_to, unit_price)

    @property
    def name(self) -> str:
        return self.definition.name

    def bounds(self, tier: int) -> tuple[Fraction, Fraction | None]:
        """(lower, upper) of the 1-based tier, as the invoice's split uses them."""
        return price_book.tier_bounds(list(self.tiers), tier)

    def charges(self, quantity: Fraction) -> list[price_book.TierCharge]:
        """The invoice's own graduated split (usage_etl.invoicing.price_book)."""
        return price_book.split_tiers(quantity, list(self.tiers))

    def tier_part(self, quantity: Fraction, tier: int) -> Fraction:
        return next((c.quantity for c in self.charges(quantity) if c.tier == tier), Fraction(0))

    def stored_total(self, quantity: Fraction) -> Decimal:
        """Sum of the stored (9-decimal) quantities of the lines `quantity` makes."""
        return sum((c.stored_quantity for c in self.charges(quantity)), Decimal(0))


# -- the adapter: everything below reads the price book model -------------------------------


def plan_meters(book: price_book.PriceBook, plan: str) -> dict[str, MeterPricing]:
    """Every meter `plan` bills, in the invoice's line order, with its unit resolved (from
    the plan for a predefined meter, from its definition for a defined one)."""
    meters = {}
    for name in book.billed_meters(plan):
        found = book.meter_definition(name)
        price = book.meter_price(plan, name)
        where = tuple(Condition(key, c.values, c.negate) for key, c in found.where.items())
        definition = MeterDefinition(name, found.measure, str(price.unit), where,
                                     found.multiplier)  # fmt: skip
        meters[name] = MeterPricing(definition, tuple(price.tiers))
    return meters


def plan_for(book: price_book.PriceBook, account_id: str, period: Period) -> str:
    """The plan `account_id` is billed under in `period` (plan history, §3.1)."""
    return book.plan_for(account_id, period.start)


def plan_fees(book: price_book.PriceBook, plan: str) -> tuple[Decimal | None, Decimal | None]:
    """(fixed_fee, minimum) of the plan; None where it has none."""
    found = book.plan(plan)
    return found.fixed_fee, found.minimum
