"""Timestamps as the API writes them: RFC 3339 in UTC to the second (`2026-12-01T16:04:05Z`), as
Kubernetes writes `lastTransitionTime`, or to the microsecond (MicroTime, an Event's `eventTime`); and
read back, with or without the `Z`."""

from __future__ import annotations

import datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def stamp(t: datetime.datetime) -> str:
    return t.strftime(FORMAT)


def now() -> str:
    return stamp(datetime.datetime.now(datetime.UTC))


def micro(t: datetime.datetime | None = None) -> str:
    """A MicroTime (`2026-12-01T16:04:05.123456Z`), as events.k8s.io/v1 `eventTime` wants it."""
    return (t or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def parse_or_none(value: str | None) -> datetime.datetime | None:
    return parse(value) if value else None
