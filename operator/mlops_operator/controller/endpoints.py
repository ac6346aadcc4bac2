"""Which HTTP endpoints the operator reads besides the apiserver, and how: allowed hosts, bounded answers.

A tenant writes `spec.analysis.prometheus.address`, and tenants choose the server images whose Pods answer
the monitoring reads: neither may point the operator at what only it can reach (the apiserver, the node's
loopback services, the cloud's link-local metadata endpoint), nor take it past its memory limit with one
huge answer (it serves every namespace).

- `Endpoints` (`MLOPS_ANALYSIS_ENDPOINTS`): host patterns (`*.svc`, `prometheus.example.com`) and CIDRs
  (`10.0.0.0/8`); the default allows only `*.svc` and `*.svc.cluster.local`. An address outside them is
  refused with the field named (`refusal`), before anything is sent.
- Every resolved address is checked again where the connection is made (`GuardedResolver`), so a name that
  matches a pattern but resolves to loopback, link-local, unspecified or multicast is refused unless a
  configured CIDR holds it, and the apiserver's own address and port are refused always.
- `get_json` reads each answer up to `MAX_ANSWER_BYTES` (1 MiB: a monitoring snapshot of 1,000 features of
  20 bins is about 150 KB), follows no redirect, gives up after `TIMEOUT` seconds, and runs at most
  `CONCURRENCY` reads at once: at most 16 MiB of answers in flight, whatever the tenants serve.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import json
import logging
import socket
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

logger = logging.getLogger("mlops_operator")
DEFAULT_PATTERNS = ("*.svc", "*.svc.cluster.local")
MAX_ANSWER_BYTES = 1 << 20
MAX_PROFILE_BYTES = 8 << 20  # a training profile (bin edges and counts of every feature), read once per digest
TIMEOUT = 5.0
CONCURRENCY = 16
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(OSError):
    """A connection the operator will not make (the address it resolved to is not one it may read)."""


def _ip(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Endpoints:
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    networks: tuple[Network, ...] = ()
    apiserver: frozenset[tuple[str, int]] = field(default_factory=frozenset)
    """(address, port) of the apiserver as the operator reaches it: refused whatever the rules say."""

    @classmethod
    def parse(cls, text: str | None, apiserver: Iterable[tuple[str, int]] = ()) -> Endpoints:
        """`MLOPS_ANALYSIS_ENDPOINTS`: comma-separated host patterns and CIDRs (unset or empty: the default)."""
        entries = [e.strip().lower() for e in (text or "").split(",") if e.strip()]
        if not entries:
            return cls(apiserver=frozenset(apiserver))
        patterns, networks = [], []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not all(c.isalnum() or c in "-.*" for c in entry):
                    raise ValueError(f"MLOPS_ANALYSIS_ENDPOINTS: {entry!r} is neither a host pattern nor a CIDR"
                                     ) from None
                patterns.append(entry)
        return cls(tuple(patterns), tuple(networks), frozenset(apiserver))

    def describe(self) -> str:
        return ", ".join([*self.patterns, *(str(n) for n in self.networks)]) or "nothing"

    def address_refusal(self, address: str, port: int) -> str | None:
        """Why a resolved address may not be read (None: it may)."""
        ip = _ip(address)
        if ip is None:
            return f"{address} is not an IP address"
        if (str(ip), port) in self.apiserver:
            return f"{ip}:{port} is the Kubernetes apiserver"
        if any(ip in n for n in self.networks if n.version == ip.version):
            return None
        if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
            return f"{ip} is a loopback, link-local, unspecified or multicast address"
        return None

    def refusal(self, url: str) -> str | None:
        """Why the operator will not read `url` (None: it will)."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            return "only http:// and https:// URLs with a host are read"
        host = parsed.hostname.lower().rstrip(".")
        try:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except ValueError:
            return "the port is not a number"
        ip = _ip(host)
        if ip is not None:
            if not any(ip in n for n in self.networks if n.version == ip.version):
                return f"{ip} is in none of the allowed networks (MLOPS_ANALYSIS_ENDPOINTS: {self.describe()})"
            return self.address_refusal(str(ip), port)
        if not any(fnmatch.fnmatchcase(host, p) for p in self.patterns):
            return f"host {host} matches none of the allowed endpoints (MLOPS_ANALYSIS_ENDPOINTS: {self.describe()})"
        return None


def apiserver_addresses(*servers: str) -> set[tuple[str, int]]:
    """(address, port) of each apiserver URL or host:port, its name resolved (start-up: blocking is fine)."""
    found: set[tuple[str, int]] = set()
    for server in filter(None, servers):
        parsed = urllib.parse.urlsplit(server if "://" in server else f"https://{server}")
        if not parsed.hostname:
            continue
        port = parsed.port or 443
        try:
            infos = socket.getaddrinfo(parsed.hostname, port, type=socket.SOCK_STREAM)
        except OSError:
            infos = []
        found |= {(str(ipaddress.ip_address(info[4][0])), port) for info in infos}
        if (ip := _ip(parsed.hostname)) is not None:
            found.add((str(ip), port))
    return found


class GuardedResolver(AbstractResolver):
    """The system resolver, with every answer checked against the rules before a connection is made."""

    def __init__(self, endpoints: Endpoints) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._endpoints = endpoints

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET,
                      ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for r in found:
            if why := self._endpoints.address_refusal(r["host"], port):
                raise Refused(f"{host} resolves to a refused address: {why}")
        return found

    async def close(self) -> None:
        await self._inner.close()


class TooLarge(ValueError):
    pass


async def read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of an answer, or TooLarge past `limit` bytes (read no further)."""
    if resp.content_length is not None and resp.content_length > limit:
        raise TooLarge(f"the answer is {resp.content_length} bytes, more than the {limit} read")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the answer is more than the {limit} bytes read")
    return bytes(body)


_slots: asyncio.Semaphore | None = None


def _semaphore() -> asyncio.Semaphore:
    global _slots
    if _slots is None:
        _slots = asyncio.Semaphore(CONCURRENCY)
    return _slots


async def get_json(targets: Sequence[tuple[str, str]], endpoints: Endpoints | None = None,
                   limit: int = MAX_ANSWER_BYTES, timeout: float = TIMEOUT, post: Any = None) -> dict[str, Any]:
    """GET each (key, url) at once (or POST `post` as JSON); the decoded answers by key. An endpoint that does
    not answer 200,
    answers more than `limit` bytes or not JSON, or is refused by `endpoints`, is left out (logged).
    Without `endpoints`, only the rules' resolved-address checks apply (Pod IPs the operator read
    from Pod status)."""
    rules = endpoints or Endpoints(patterns=(), networks=())
    out: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(rules), limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async def one(key: str, url: str) -> None:
            if endpoints is not None and (why := endpoints.refusal(url)):
                logger.warning("not reading %s: %s", url, why)
                return
            try:
                async with _semaphore(), session.request("GET" if post is None else "POST", url, json=post,
                                                         allow_redirects=False) as resp:
                    if resp.status != 200:
                        logger.warning("%s answered %s", url, resp.status)
                        return
                    out[key] = json.loads(await read_bounded(resp, limit))
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                logger.warning("could not read %s: %s", url, exc)

        await asyncio.gather(*(one(k, u) for k, u in targets))
    return out
