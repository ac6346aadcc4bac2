"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it: one replica
reconciles, the others keep their caches warm and take over when the leader stops renewing.

Our own, on purpose: no maintained Python elector uses a Lease — the kubernetes client's
`kubernetes.leaderelection` locks a ConfigMap from a blocking thread, and the `leaderelection` package
(0.0.3, 2019) is unmaintained. This is client-go's algorithm, small enough to read in one sitting:

- every `retry` seconds (2) a candidate reads the Lease; it takes it when there is none, when it holds it,
  or when the holder has not changed the record for `lease_duration` seconds (15) *as observed here* (the
  local monotonic clock: no trust in another node's clock); every write carries the resourceVersion it read,
  so two candidates never both win;
- the leader renews every `retry` seconds; when it could not renew for `renew_deadline` seconds (10) it
  has lost the lease: `lost` is set and the process must stop reconciling at once (main.py exits);
- a leader that stops cleanly gives the Lease up (holder cleared, duration 1 s) so a standby takes over
  within one retry.

With lease 15 s, renew 10 s, retry 2 s, a standby takes over at most 15 + 2 s after the leader's last
renewal (the `leaseDurationSeconds` bound), within the 20 s the chart promises.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..api import times
from .client import Api, ApiError, Resource

logger = logging.getLogger("mlops_operator")
LEASES = Resource("coordination.k8s.io", "v1", "leases")


@dataclass
class Elector:
    api: Api
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry: float = 2.0
    leading: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    transitions: int = 0
    _observed: tuple[Any, float] | None = None  # (the record as last read, when it last changed here)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"leader-election-{self.name}")

    async def _run(self) -> None:
        while not self.leading.is_set():
            try:
                if await self._try():
                    break
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                # a standby that cannot read the Lease (a 403: the chart's Role missing) says so
                logger.warning("could not read the Lease %s/%s: %s", self.namespace, self.name, exc)
            await asyncio.sleep(self.retry)
        logger.info("leading as %s (Lease %s/%s)", self.identity, self.namespace, self.name)
        self.leading.set()
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.retry)
            try:
                if await self._try():
                    renewed = time.monotonic()
                    continue
                why = "another replica holds the Lease"
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                if time.monotonic() - renewed < self.renew_deadline:
                    continue
                why = f"could not renew for {self.renew_deadline:.0f} s ({exc})"
            logger.error("lost the Lease %s/%s: %s", self.namespace, self.name, why)
            self.leading.clear()
            self.lost.set()
            return

    def _spec(self, old: dict[str, Any] | None, now: datetime.datetime) -> dict[str, Any]:
        spec = dict((old or {}).get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = times.micro(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if old else 0)
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=int(self.lease_duration),
                    renewTime=times.micro(now))
        return spec

    async def _try(self) -> bool:
        """Acquire or renew once: whether this replica holds the Lease now."""
        now = datetime.datetime.now(datetime.UTC)
        lease = await self.api.get(LEASES, self.namespace, self.name)
        if lease is None:
            await self.api.create(LEASES, self.namespace, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": self._spec(None, now)})
            return True
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if self._observed is None or self._observed[0] != record:
            self._observed = (record, time.monotonic())
        holder = spec.get("holderIdentity")
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and time.monotonic() - self._observed[1] < duration:
            return False
        if holder and holder != self.identity:
            logger.info("the Lease %s/%s of %s expired; taking it", self.namespace, self.name, holder)
        replaced = {**lease, "spec": self._spec(lease, now)}
        try:
            await self.api.replace(LEASES, self.namespace, self.name, replaced)
        except ApiError as exc:
            if exc.status == 409:  # someone wrote it since we read it: they won this round
                return False
            raise
        self.transitions = int(replaced["spec"].get("leaseTransitions") or 0)
        return True

    async def release(self) -> None:
        """Stop; a leader gives the Lease up so a standby takes over at its next retry."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.leading.is_set():
            return
        self.leading.clear()
        with contextlib.suppress(ApiError, aiohttp.ClientError, OSError, TimeoutError):
            lease = await self.api.get(LEASES, self.namespace, self.name)
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                spec = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1,
                        "renewTime": times.micro(datetime.datetime.now(datetime.UTC))}
                await self.api.replace(LEASES, self.namespace, self.name, {**lease, "spec": spec})
                logger.info("gave up the Lease %s/%s", self.namespace, self.name)
