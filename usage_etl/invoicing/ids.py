"""Deterministic ids: a hash of the exact UTF-8 bytes of each part, length-prefixed, so ids
never collide through separators, quotes or unicode in account ids."""

from __future__ import annotations

import hashlib
from datetime import date

NONE = b"\x00none"  # distinct from every encoded string (those are length-prefixed)


def _digest(*parts: str | None) -> str:
    h = hashlib.sha256()
    for part in parts:
        if part is None:
            h.update(NONE)
            continue
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()[:32]


def invoice_id(account_id: str, period_start: date) -> str:
    return "inv_" + _digest(account_id, period_start.isoformat())


def line_id(
    invoice: str,
    kind: str,
    meter: str,
    tier: int,
    corrected_period_start: date | None,
    reference: str = "",
) -> str:
    """From (invoice_id, kind, meter, tier, corrected_period_start, reference). A line without
    a reference (every v1 line) hashes exactly the five parts it always did, so the ids of
    lines stored before `reference` existed do not change; a reference is a sixth part."""
    corrected = corrected_period_start.isoformat() if corrected_period_start else None
    parts = [invoice, kind, meter, str(tier), corrected]
    if reference:
        parts.append(reference)
    return "li_" + _digest(*parts)
