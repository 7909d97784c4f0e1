"""Cron and duration arithmetic for the policy's rules: croniter with zoneinfo, no hand-written parser.

Missed runs follow CronJob: after downtime, only the most recent missed time runs, once
(`latest_due`), never one per missed slot.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(duration: str) -> float:
    """`1h30m` -> 5400.0 (the CRD's pattern guarantees the shape)."""
    return sum(float(n) * _UNIT[unit] for n, unit in _PART.findall(duration))


def _zone(time_zone: str | None) -> ZoneInfo:
    return ZoneInfo(time_zone or "UTC")


def latest_due(cron: str, time_zone: str | None, after: datetime, now: datetime) -> datetime | None:
    """The most recent scheduled time in (after, now], or None if none fell in between."""
    previous = croniter(cron, now.astimezone(_zone(time_zone))).get_prev(datetime)
    # croniter's get_prev is strictly before its start; a tick exactly on time counts.
    exact = croniter(cron, (now - timedelta(microseconds=1)).astimezone(_zone(time_zone))).get_next(datetime)
    if exact == now:
        previous = exact
    return previous if previous > after else None


def next_after(cron: str, time_zone: str | None, now: datetime) -> datetime:
    return croniter(cron, now.astimezone(_zone(time_zone))).get_next(datetime)
