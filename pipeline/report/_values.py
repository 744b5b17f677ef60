"""Plain values out of loosely typed JSON (summaries written by older versions too), and the
page's number and time formats."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any


def as_mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_text(value: object) -> str:
    return "" if value is None else str(value)


def number_or_none(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def rounded(value: object, digits: int = 0) -> float | int | None:
    number = number_or_none(value)
    if number is None:
        return None
    return round(number, digits) if digits else round(number)


def format_number(value: object, digits: int = 0) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value:,.{digits}f}"


def format_utc(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def parse_time(value: object) -> datetime | None:
    """A time as summaries write it: epoch seconds or ISO 8601 (UTC when it names no zone)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, timezone.utc)
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
