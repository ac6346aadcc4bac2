"""What a reconcile raises to tell the work queue what to do next (queue.py catches them; kopf never
sees them)."""

from __future__ import annotations


class Retry(Exception):
    """Decide again after `delay` seconds: the world moved while we looked (a status write refused as
    decided from an older view, a report not there yet, a metrics source that did not answer)."""

    def __init__(self, message: str, delay: float = 10.0) -> None:
        super().__init__(message)
        self.delay = delay


class InvalidSpec(Exception):
    """The object cannot be reconciled as it is (already reported as Ready=False, reason=InvalidSpec);
    nothing is retried until it changes."""


class NameConflict(Exception):
    """A child's name is taken by an object this parent does not control: it is left untouched (never
    adopted, so never garbage-collected with the parent); reported as `Ready=False, reason=NameConflict`."""
