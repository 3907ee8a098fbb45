"""The registry's HTTP plumbing: JSON responses, security headers, the response cache and
bounded request reading. Kept apart from the routes (:mod:`fairtrial.server.app`), which
say what the registry serves, not how bytes go in and out.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fairtrial.errors import RegistryError

if TYPE_CHECKING:
    from fairtrial.server.registry import Registry

log = logging.getLogger("fairtrial.server")

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)

CACHE_RESPONSE_BYTES = 2 << 20
CACHE_TOTAL_BYTES = 64 << 20


def _json(content: Any) -> Response:
    """A JSON response, written at once: what the read API returns is JSON already (rows and
    stored documents), and FastAPI's validation of a large document cost more than the rest of
    the request (about 10 ms for an experiment)."""
    body = json.dumps(
        content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str
    )
    return Response(body.encode(), media_type="application/json")


def _err(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class _SecurityHeaders:
    """Every response's security headers (a plain ASGI middleware: no per-request task or
    body streaming as with Starlette's ``BaseHTTPMiddleware``). An exception no handler took
    becomes a logged 500 that carries the headers too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {n for n, _ in _SECURITY_HEADERS}
                kept = [(n, v) for n, v in message.get("headers", []) if n.lower() not in names]
                message = {**message, "headers": kept + _SECURITY_HEADERS}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await _err(500, "internal error (logged by the registry)")(
                scope, receive, send_with_headers
            )


class _ResponseCache:
    """Successful GET responses, kept until the store's next write (:meth:`Registry.version`):
    least recently used first out, at most :data:`CACHE_TOTAL_BYTES`. The bundle download is
    not kept (it is large, and read straight from the store)."""

    def __init__(self, app: ASGIApp, registry: Registry) -> None:
        self.app = app
        self.registry = registry
        self.kept: OrderedDict[tuple[str, bytes], tuple[Any, dict[str, Any], bytes]] = OrderedDict()
        self.size = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "GET" or path.endswith("/bundle"):
            await self.app(scope, receive, send)
            return
        key = (path, scope.get("query_string", b""))
        version = self.registry.fresh_version() or await run_in_threadpool(self.registry.version)
        hit = self.kept.get(key)
        if hit is not None and hit[0] == version:
            self.kept.move_to_end(key)
            await send(hit[1])
            await send({"type": "http.response.body", "body": hit[2]})
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []
        keep = True

        async def capture(message: Message) -> None:
            nonlocal keep
            if message["type"] == "http.response.start":
                start.update(message)
                keep = message["status"] == 200
            elif message["type"] == "http.response.body" and keep:
                chunks.append(message.get("body", b""))
                keep = sum(map(len, chunks)) <= CACHE_RESPONSE_BYTES
                if not message.get("more_body", False) and keep:
                    self._keep(key, version, start, b"".join(chunks))
            await send(message)

        await self.app(scope, receive, capture)

    def _keep(
        self, key: tuple[str, bytes], version: Any, start: dict[str, Any], body: bytes
    ) -> None:
        old = self.kept.pop(key, None)
        if old is not None:
            self.size -= len(old[2])
        self.kept[key] = (version, dict(start), body)
        self.size += len(body)
        while self.size > CACHE_TOTAL_BYTES and self.kept:
            _, dropped = self.kept.popitem(last=False)
            self.size -= len(dropped[2])


def _depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests (lists and objects), counting no further than ``limit + 1``."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d > limit:
                return d
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


async def _read_limited(request: Request, limit: int, dest: Any | None = None) -> bytes:
    """The request body, refusing (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise RegistryError(f"request body of {declared} bytes: the limit is {limit}", 413)
        except ValueError:
            raise RegistryError("Content-Length is not a number", 400) from None
    got = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        got += len(chunk)
        if got > limit:
            raise RegistryError(f"request body passed {limit} bytes: the limit", 413)
        if dest is not None:
            dest.write(chunk)
        else:
            chunks.append(chunk)
    return b"".join(chunks)
