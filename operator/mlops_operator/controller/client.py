"""The one thin API layer of the operator.

An aiohttp client on the same credentials kopf logs in with (see `main.login`): status patches,
server-side apply of children under the operator's field manager, deletes.
404 on a status patch means the object is gone (nothing to do); a status patch carries the
resourceVersion it was decided from, and its 409 makes the caller's reconcile decide again.
Every request is counted per (verb, resource) so tests and benchmarks can assert how many
requests a reconcile costs.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import importlib.metadata
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import orjson

from .endpoints import read_bounded
from .errors import NameConflict

try:
    USER_AGENT = f"mlops-operator/{importlib.metadata.version('mlops-operator')}"
except importlib.metadata.PackageNotFoundError:
    USER_AGENT = "mlops-operator/unknown"
"""How the apiserver (its audit log, its request metrics) tells the operator's requests from others'."""

FIELD_MANAGER = "mlops-operator"
TOKEN_REREAD_SECONDS = 60.0
RETRIES = 4  # after the first attempt: at 0.2, 0.4, 0.8, 1.6 s (a connection error), or as Retry-After says
BACKOFF = 0.2
MAX_RETRY_AFTER = 30.0
# an answer larger than any the operator asks for (a list page is at most 500 objects of at most 1.5 MiB
# each in etcd, but ours are a few KiB): a broken or hostile apiserver proxy cannot take its memory
MAX_RESPONSE_BYTES = 64 << 20
MAX_LINE_BYTES = 16 << 20  # one watch event: one object
MAX_ERROR_BYTES = 64 << 10
logger = logging.getLogger("mlops_operator")


def _seconds(retry_after: str) -> float:
    """Retry-After as seconds (an integer, as the apiserver sends; anything else: one second), at most 30."""
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(retry_after)))
    except ValueError:
        return 1.0


async def lines(chunks: AsyncIterator[bytes], limit: int | None = None) -> AsyncIterator[bytes]:
    """The newline-delimited records of a byte stream, each up to `limit` bytes (a longer one is an error)."""
    buffer = b""
    async for chunk in chunks:
        *complete, buffer = (buffer + chunk).split(b"\n")  # one split per chunk, not a copy per line
        if limit is not None and len(buffer) > limit:
            raise ValueError(f"a watch event longer than {limit} bytes")
        for line in complete:
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer


def decode(raw: bytes) -> Any:
    """JSON from the apiserver, by orjson: decoding the watch events and answers of a thousand objects was 15 %
    of the operator's CPU in bench/scale_bench.py (py-spy), and orjson takes half the time of json.loads on a
    Deployment's event. Lossless here: the apiserver sends no integer beyond int64 (sigs.k8s.io/json falls back
    to float64), orjson keeps integers to 64 bits; what orjson refuses, the standard decoder reads."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def encode(body: Any) -> bytes:
    """A request body: orjson, or the standard encoder for what it refuses (an integer beyond 64 bits)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body).encode()


class ApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        message = body
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(body).get("message", body)
        super().__init__(f"{method} {path}: {status} {message}")
        self.status, self.message = status, message


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


# the built-in resources the operator touches
CONFIGMAPS = Resource("", "v1", "configmaps")
DEPLOYMENTS = Resource("apps", "v1", "deployments")
EVENTS = Resource("events.k8s.io", "v1", "events")
JOBS = Resource("batch", "v1", "jobs")
PODS = Resource("", "v1", "pods")
SERVICES = Resource("", "v1", "services")


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of an object's controller (the ownerReference with controller: true), if any."""
    return next((o.get("uid") for o in obj["metadata"].get("ownerReferences") or () if o.get("controller")), None)


def name_conflict(obj: Mapping[str, Any], existing: Mapping[str, Any]) -> NameConflict:
    """The error for a child `obj` whose name `existing`, not controlled by obj's parent, holds."""
    meta = obj["metadata"]
    holder = next((f"{o.get('kind')} {o.get('name')}" for o in
                   existing["metadata"].get("ownerReferences") or () if o.get("controller")), None)
    owner = next(o for o in meta["ownerReferences"] if o.get("controller"))
    return NameConflict(
        f"{obj['kind']} {meta['name']} already exists and is not this {owner['kind']}'s "
        f"({'controlled by ' + holder if holder else 'it has no controller'}); it is left untouched: "
        f"delete or rename it, or give this {owner['kind']} another name")


def _namespace(path: str) -> str:
    parts = path.split("?")[0].split("/")
    return parts[parts.index("namespaces") + 1] if "namespaces" in parts[:-1] else ""


def _verb_and_resource(method: str, path: str) -> tuple[str, str]:
    """("GET"/"LIST"/"PATCH"/…, plural) of a request path (…/namespaces/NS/PLURAL[/NAME[/SUB]])."""
    parts = path.split("?")[0].rstrip("/").split("/")
    if "namespaces" in parts and parts.index("namespaces") + 2 < len(parts):
        i = parts.index("namespaces")
        collection = len(parts) == i + 3
        return ("LIST" if method == "GET" and collection else method), parts[i + 2]
    collection = len(parts) == (4 if parts[1:2] == ["api"] else 5)  # /api/v1/PLURAL, /apis/GROUP/VERSION/PLURAL
    return ("LIST" if method == "GET" and collection else method), parts[-1]


PATCH_TYPES = {"merge": "application/merge-patch+json", "json": "application/json-patch+json"}


class Api:
    """An async Kubernetes API client for exactly what the operator does: its verbs below (get, list,
    create, apply, patch, patch_status, delete; watch streams for the informers; discovery)."""

    def __init__(
        self,
        server: str,
        *,
        token: str | None = None,
        ca_path: str | None = None,
        ca_data: str | bytes | None = None,
        insecure: bool = False,
        cert_path: str | None = None,
        key_path: str | None = None,
        token_path: str | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.server = server.rstrip("/")
        self.user_agent = user_agent
        self._token = token
        self._token_path = token_path
        self._token_read = time.monotonic()
        if insecure:
            self._ssl: ssl.SSLContext | bool = False
        else:
            ctx = ssl.create_default_context(cafile=ca_path)
            if ca_data:
                ctx.load_verify_locations(cadata=ca_data if isinstance(ca_data, str) else ca_data.decode())
            if cert_path:
                ctx.load_cert_chain(cert_path, key_path)
            self._ssl = ctx
        self._session: aiohttp.ClientSession | None = None
        self._watches: aiohttp.ClientSession | None = None
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.by_namespace: collections.Counter[tuple[str, str, str]] = collections.Counter()
        """(namespace, verb, resource) → requests: what the objects of one namespace cost."""
        self._discovered: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._schemas: dict[tuple[str, str], tuple[float, bool]] = {}

    def _auth(self, reread: bool = False) -> dict[str, str]:
        """The Authorization header, from the token file when there is one: read again every
        TOKEN_REREAD_SECONDS (the kubelet rewrites a projected token long before it expires) and at once
        after a 401 (`reread`), as client-go does."""
        if self._token_path and (reread or time.monotonic() - self._token_read > TOKEN_REREAD_SECONDS):
            with contextlib.suppress(OSError):
                self._token = Path(self._token_path).read_text().strip() or self._token
            self._token_read = time.monotonic()
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    @classmethod
    def from_connection_info(cls, info: Any, token_path: str | None = None, user_agent: str = USER_AGENT) -> Api:
        """Build from a kopf ConnectionInfo (what the login handler returns), with the file the token was
        read from (`token_path`) when there is one."""
        ca_data = info.ca_data
        if isinstance(ca_data, bytes):
            ca_data = ca_data.decode()
        return cls(
            info.server,
            token=info.token,
            ca_path=str(info.ca_path) if info.ca_path else None,
            ca_data=ca_data,
            insecure=bool(info.insecure),
            cert_path=str(info.certificate_path) if info.certificate_path else None,
            key_path=str(info.private_key_path) if info.private_key_path else None,
            token_path=token_path,
            user_agent=user_agent,
        )

    async def close(self) -> None:
        for session in (self._session, self._watches):
            if session is not None:
                await session.close()
        self._session = self._watches = None

    async def stream(self, path: str, params: dict[str, str], read_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """The events of a watch request, decoded. Watches have connections of their own (a request
        each, held open), so writes never wait behind them."""
        if self._watches is None:
            self._watches = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
                                                  headers={"User-Agent": self.user_agent})
        resource = path.rstrip("/").rsplit("/", 1)[-1]
        self.requests["WATCH", resource] += 1
        self.by_namespace[_namespace(path), "WATCH", resource] += 1
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=read_timeout)
        async with self._watches.get(self.server + path, params=params, timeout=timeout,
                                     headers=self._auth()) as resp:
            if resp.status >= 400:
                if resp.status == 401:
                    self._auth(reread=True)  # the informer's next list and watch use the new token
                raise ApiError(resp.status, "WATCH", path, (await resp.content.read(MAX_ERROR_BYTES)).decode(
                    errors="replace"))
            async for line in lines(resp.content.iter_any(), MAX_LINE_BYTES):
                yield decode(line)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        """One API request, retried where that is safe: after a 429 (or 503) at the time its Retry-After
        says, after a 401 once with the token file read again, after a connection error with backoff
        when the request is idempotent (GET, DELETE, server-side apply). An answer over MAX_RESPONSE_BYTES
        is an error, never held."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=60),
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32),
                headers={"User-Agent": self.user_agent},
            )
        verb, resource = _verb_and_resource(method, path)
        self.requests[verb, resource] += 1
        self.by_namespace[_namespace(path), verb, resource] += 1
        data = None if body is None else encode(body)
        idempotent = method in ("GET", "DELETE") or content_type == "application/apply-patch+yaml"
        reauthenticated = False
        for attempt in range(RETRIES + 1):
            headers = {**self._auth(), **({"Content-Type": content_type} if data is not None else {})}
            try:
                async with self._session.request(method, self.server + path, data=data, params=params,
                                                 headers=headers) as resp:
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
                    raw = await read_bounded(resp, MAX_RESPONSE_BYTES)
            except aiohttp.ClientConnectionError as exc:
                if not idempotent or attempt == RETRIES:
                    raise
                logger.info("%s %s: %s; retrying", method, path, exc)
                await asyncio.sleep(BACKOFF * 2 ** attempt)
                continue
            if status == 401 and self._token_path and not reauthenticated and attempt < RETRIES:
                reauthenticated = True
                self._auth(reread=True)
                continue
            if status in (429, 503) and retry_after is not None and attempt < RETRIES:
                await asyncio.sleep(_seconds(retry_after))
                continue
            if status == 404 and missing_ok:
                return None
            if status >= 400:
                raise ApiError(status, method, path, raw.decode(errors="replace"))
            return decode(raw) if raw else {}
        raise AssertionError("the last attempt returns or raises")

    # -- the verbs the operator uses
    async def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        return await self.request("GET", res.path(namespace, name), missing_ok=True)

    async def list(self, res: Resource, namespace: str | None, *, label_selector: str | None = None,
                   limit: int | None = None, continue_token: str | None = None) -> dict[str, Any]:
        """One page of a list (items, and metadata with resourceVersion and continue)."""
        params = {k: v for k, v in (("labelSelector", label_selector), ("limit", str(limit) if limit else None),
                                    ("continue", continue_token)) if v}
        result = await self.request("GET", res.path(namespace), params=params)
        assert result is not None
        return result

    async def items(self, res: Resource, namespace: str | None, label_selector: str) -> builtins.list[dict[str, Any]]:
        """The objects a label selector matches (one list call: for the few that are not cached)."""
        return list((await self.list(res, namespace, label_selector=label_selector)).get("items") or [])

    async def create(self, res: Resource, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        result = await self.request("POST", res.path(namespace), obj, params={"fieldManager": FIELD_MANAGER})
        assert result is not None
        return result

    async def ensure(self, res: Resource, obj: dict[str, Any], known: bool) -> dict[str, Any]:
        """Write a child: server-side apply when it is `known` to be this parent's (seen in the cache);
        else a create, so that an object of that name the parent does not control is never adopted (apply
        would add the ownerReference, and garbage collection delete the object with the parent). A 409 on the
        create reads the object: its controller reference is the parent's when the cache had not seen it yet
        (then apply); otherwise `NameConflict`, the object untouched."""
        if not known:
            created, existing = await self._create_or_read(res, obj)
            if created is not None:
                return created
            if existing is not None and controller_uid(existing) != controller_uid(obj):
                raise name_conflict(obj, existing)
        return await self.apply(res, obj)

    async def create_once(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        """Write a child that is never updated (a Job, whose template is immutable; a retrain TrainingRun, whose
        new spec would be a new run): a create; on a 409 the object as it is when it is this parent's
        (the cache had not seen it yet), else `NameConflict`. Never a patch."""
        created, existing = await self._create_or_read(res, obj)
        if created is not None:
            return created
        if existing is None:  # deleted between the create and the read: once more
            return await self.create(res, obj["metadata"]["namespace"], obj)
        if controller_uid(existing) != controller_uid(obj):
            raise name_conflict(obj, existing)
        return existing

    async def _create_or_read(self, res: Resource, obj: dict[str, Any]
                              ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(the object created, None), or after a 409 (None, the object of that name, None if gone)."""
        meta = obj["metadata"]
        try:
            return await self.create(res, meta["namespace"], obj), None
        except ApiError as exc:
            if exc.status != 409:
                raise
        return None, await self.get(res, meta["namespace"], meta["name"])

    async def replace(self, res: Resource, namespace: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT the whole object; with its metadata.resourceVersion, a 409 when it changed since it was read."""
        result = await self.request("PUT", res.path(namespace, name), obj, params={"fieldManager": FIELD_MANAGER})
        assert result is not None
        return result

    async def patch(self, res: Resource, namespace: str, name: str, patch: Any,
                    patch_type: Literal["merge", "json"] = "merge") -> dict[str, Any] | None:
        """A merge patch (a dict) or a JSON patch (a list of operations) under the operator's field
        manager; the object as stored after it, or None when it is gone."""
        return await self.request("PATCH", res.path(namespace, name), patch, content_type=PATCH_TYPES[patch_type],
                                  params={"fieldManager": FIELD_MANAGER}, missing_ok=True)

    async def patch_status(self, res: Resource, namespace: str, name: str, status: dict[str, Any],
                           resource_version: str | None = None) -> dict[str, Any] | None:
        """Merge-patch the status subresource; the object as stored after it, or None when it is gone.

        With `resource_version` the patch is conditional: a 409 `ApiError` when the object changed
        since that version (the caller decided from an older view and must decide again)."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self.request(
            "PATCH", res.path(namespace, name, "status"), body,
            content_type="application/merge-patch+json", missing_ok=True, params={"fieldManager": FIELD_MANAGER},
        )

    async def apply(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's field manager (forcing only its own fields)."""
        meta = obj["metadata"]
        result = await self.request(
            "PATCH", res.path(meta.get("namespace"), meta["name"]), obj,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
        )
        assert result is not None
        return result

    async def preferred_version(self, group: str, plural: str, ttl: float = 60.0) -> str | None:
        """The preferred served version of a kind in `group` ("group/version"), found through discovery
        and cached for `ttl` seconds; None when the cluster does not serve it."""
        now = time.monotonic()
        cached = self._discovered.get((group, plural))
        if cached is not None and now - cached[0] < ttl:
            return cached[1]
        found: str | None = None
        info = await self.request("GET", f"/apis/{group}", missing_ok=True)
        versions = [v["groupVersion"] for v in (info or {}).get("versions") or ()]
        preferred = ((info or {}).get("preferredVersion") or {}).get("groupVersion")
        for gv in sorted(versions, key=lambda v: v != preferred):
            resources = await self.request("GET", f"/apis/{gv}", missing_ok=True)
            if any(r.get("name") == plural for r in (resources or {}).get("resources") or ()):
                found = gv
                break
        self._discovered[(group, plural)] = (now, found)
        return found

    async def serves_field(self, group_version: str, definition: str, field: str, ttl: float = 600.0) -> bool:
        """Whether the served schema of `definition` (e.g. io.k8s.api.batch.v1.JobSpec) has `field`: from
        the cluster's OpenAPI (v3 per group version where served, else the v2 document), cached for `ttl`
        seconds. What the apiserver serves decides, never its version string."""
        now = time.monotonic()
        cached = self._schemas.get((definition, field))
        if cached is not None and now - cached[0] < ttl:
            return cached[1]
        prefix = "/api" if "/" not in group_version else "/apis"
        doc = await self.request("GET", f"/openapi/v3{prefix}/{group_version}", missing_ok=True)
        schemas = ((doc or {}).get("components") or {}).get("schemas")
        if schemas is None:
            schemas = (await self.request("GET", "/openapi/v2") or {}).get("definitions") or {}
        found = field in ((schemas.get(definition) or {}).get("properties") or {})
        self._schemas[(definition, field)] = (now, found)
        return found

    async def delete(self, res: Resource, namespace: str, name: str) -> bool:
        result = await self.request(
            "DELETE", res.path(namespace, name), {"propagationPolicy": "Background"}, missing_ok=True,
        )
        return result is not None
