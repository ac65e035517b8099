"""Pure parsers for the time formats providers use in rate-limit signals."""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping
from datetime import datetime

__all__ = [
    "parse_float",
    "parse_go_duration",
    "parse_proto_duration",
    "parse_retry_after",
    "parse_rfc3339",
]

_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_go_duration(value: str | None) -> float | None:
    """``"6m0s"`` -> 360.0, ``"12ms"`` -> 0.012, ``"1.5s"`` -> 1.5; a bare number is seconds.
    None for anything unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, number) if math.isfinite(number) else None
    # the common one-unit forms ("6ms", "59.9s", what OpenAI and Groq send on every answer)
    # without the regex
    head, scale = (text[:-2], 1e-3) if text.endswith("ms") else (text[:-1], 1.0)
    if (
        text.endswith("s")
        and head[:1].isdecimal()
        and head[-1:].isdecimal()
        and head.replace(".", "", 1).isdecimal()
    ):
        try:
            return float(head) * scale
        except ValueError:  # a digit float() does not read
            pass
    total = 0.0
    pos = 0
    for match in _GO_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0 or not math.isfinite(total):
        return None
    return total


def parse_proto_duration(value: object) -> float | None:
    """A protobuf Duration in JSON form (``"26s"``, ``"45.837906927s"``) -> seconds."""
    if not isinstance(value, str) or not value.endswith("s"):
        return None
    try:
        seconds = float(value[:-1])
    except ValueError:
        return None
    return seconds if 0 <= seconds < math.inf else None


def parse_rfc3339(value: str | None) -> float | None:
    """An RFC 3339 timestamp (``2025-08-21T12:40:59Z``, fractions allowed) -> Unix seconds."""
    if not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        return None
    return stamp.timestamp()


def parse_float(value: str | None) -> float | None:
    """A header's number, or None."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None  # NaN and infinities are no answer


def parse_retry_after(headers: Mapping[str, str], now_wall: float) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date),
    as the official SDKs read them. None when absent or unreadable."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        ms = parse_float(raw_ms)
        if ms is not None and ms >= 0:
            return ms / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = parse_float(raw)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return max(0.0, parsed.timestamp() - now_wall)
