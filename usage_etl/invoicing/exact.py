"""Exact numbers as finance reads them: a Fraction as its exact decimal expansion.

Every quantity of the money view is multiplier × integer / unit with units 2^30, 1000 or 1 and
decimal multipliers, so its denominator has no prime factors but 2 and 5 and its decimal
expansion terminates: it is printed in full, never rounded. Anything else (not produced by the
pipeline) is printed as `n/d`.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from usage_etl.invoicing.price_book import round_half_up


def _decimal_places(denominator: int) -> int | None:
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    return max(twos, fives) if denominator == 1 else None


def exact_text(value: Fraction | Decimal | int) -> str:
    """The exact value: a terminating decimal in full (no exponent), else `n/d`."""
    value = Fraction(value)
    places = _decimal_places(value.denominator)
    if places is None:
        return f"{value.numerator}/{value.denominator}"
    scaled = value.numerator * 10**places // value.denominator  # exact: d divides 10^places
    text = format(Decimal(scaled).scaleb(-places), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def nine(value: Fraction) -> Decimal:
    """Rounded half up to 9 decimals, as the invoice stores quantities."""
    return round_half_up(value, 9)
