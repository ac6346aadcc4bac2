"""Timestamps as the API writes them: RFC 3339 in UTC to the second (`2026-12-01T16:04:05Z`), as
Kubernetes writes `lastTransitionTime`; and read back, with or without the `Z`."""

from __future__ import annotations

import datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def stamp(t: datetime.datetime) -> str:
    return t.strftime(FORMAT)


def now() -> str:
    return stamp(datetime.datetime.now(datetime.UTC))


def parse(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def parse_or_none(value: str | None) -> datetime.datetime | None:
    return parse(value) if value else None
