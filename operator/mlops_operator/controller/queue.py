"""Runs reconciles: a key queued several times runs once; a key never runs twice at the same time (a
change during a run queues it again); `Retry(delay=…)` requeues after the delay, `InvalidSpec` does not
requeue, any other error requeues with exponential backoff. The operator never crashes on a bad object.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from .errors import InvalidSpec, Retry
from .store import Key

logger = logging.getLogger("mlops_operator")

Reconcile = Callable[[Key], Awaitable[None]]


class WorkQueue:
    """Deduplicating, per-key serialized reconcile queue with retries and delayed requeues."""

    def __init__(self, reconcilers: Mapping[str, Reconcile], workers: int = 16,
                 max_backoff: float = 300.0) -> None:
        self._reconcilers = dict(reconcilers)
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[Key, int] = {}
        self._max_backoff = max_backoff
        self.open = asyncio.Event()
        """Set once the cache holds every object (no decision on a half-filled cache after a restart)."""
        self._workers = [asyncio.create_task(self._work(i)) for i in range(workers)]
        self.reconciles = 0
        self.reconciles_by_kind: collections.Counter[str] = collections.Counter()
        self.errors_by_kind: collections.Counter[str] = collections.Counter()
        self.reconciles_by_namespace: collections.Counter[tuple[str, str]] = collections.Counter()

    def enqueue(self, key: Key) -> None:
        if key in self._running:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def enqueue_after(self, key: Key, delay: float) -> None:
        due = time.monotonic() + delay
        existing = self._timers.get(key)
        if existing and existing[0] <= due:
            return
        if existing:
            existing[1].cancel()
        handle = asyncio.get_running_loop().call_later(delay, self._fire, key)
        self._timers[key] = (due, handle)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.enqueue(key)

    def idle(self) -> bool:
        return not self._queued and not self._running

    async def _work(self, n: int) -> None:
        await self.open.wait()
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._running.add(key)
            try:
                await self._run(key)
            finally:
                self._running.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(key)

    async def _run(self, key: Key) -> None:
        self.reconciles += 1
        self.reconciles_by_kind[key[0]] += 1
        self.reconciles_by_namespace[key[0], key[1]] += 1
        try:
            await self._reconcilers[key[0]](key)
        except InvalidSpec as exc:
            logger.info("%s %s/%s: %s (not retried)", *key, exc)
            self._failures.pop(key, None)
        except Retry as exc:
            self._failures.pop(key, None)
            self.enqueue_after(key, exc.delay)
        except asyncio.CancelledError:
            raise
        except Exception:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            self.errors_by_kind[key[0]] += 1
            delay = min(self._max_backoff, 0.5 * 2 ** (failures - 1))
            logger.exception("%s %s/%s: reconcile failed (attempt %d); retrying in %.1fs", *key, failures, delay)
            self.enqueue_after(key, delay)
        else:
            self._failures.pop(key, None)

    async def close(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
