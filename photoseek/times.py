"""Times as the catalogue keeps them: UTC without an offset; shown and sent with theirs (RFC 3339)."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def as_utc(value):
    """A time as the index stores it (UTC, no offset) with its offset, for people and clients; anything
    else (None, an aware time, a value that is not a time) as it is."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value
