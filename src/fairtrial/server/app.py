"""The registry's web application: a JSON API (with its OpenAPI description) and the web UI.

Built on FastAPI (Starlette underneath, served by uvicorn). Reads are public; every write needs
a token in ``Authorization: Bearer ...`` (see :meth:`Registry.create_token`). Uploads are
streamed to a temporary file with a byte limit (413 past it), verified as bundles and never
executed. Every response carries a restrictive content-security policy: no scripts at all, styles
and images from the registry itself only, no framing. Errors are JSON ``{"error": "..."}`` with a
4xx status for the client's mistakes; a 500 says only that something broke (details go to the
server's log, never to the client).

Pages and API reads are computed from the store, which changes only when something is written:
successful reads are kept (:class:`_ResponseCache`, bounded) until the store's next write
(:meth:`Registry.version`), so a popular leaderboard is computed once per upload, not once per
visit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

import fairtrial
from fairtrial.bundle import Limits
from fairtrial.errors import BundleError, FairtrialError, RegistryError
from fairtrial.server.http import (
    _depth,
    _err,
    _json,
    _read_limited,
    _ResponseCache,
    _SecurityHeaders,
)
from fairtrial.server.registry import MAX_PAGE, OUTCOMES, SORTS, Filters, Registry

log = logging.getLogger("fairtrial.server")

#: what an upload may weigh (compressed); a bundle of 40 digits trials is ~100 KiB
DEFAULT_MAX_UPLOAD = 64 << 20
#: a replication record is a few KiB to a few hundred
MAX_RECORD = 4 << 20
#: how deep a replication record's JSON may nest (fairtrial replicate writes 5 levels)
MAX_RECORD_DEPTH = 32
#: how to send a bundle, for uploads that are not the bundle file itself
HOW_TO_UPLOAD = (
    "send the bundle file itself as the request body, e.g. curl --data-binary @BUNDLE.tar.gz "
    "-H 'Content-Type: application/gzip' -H 'Authorization: Bearer TOKEN' URL/api/bundles "
    "(or fairtrial push BUNDLE --to URL)"
)
#: threads that run the handlers at once. Handlers are CPU-bound Python: more threads than
#: this only contend for the interpreter lock, and starve the event loop, which answers the
#: kept (cached) pages itself; further requests wait their turn in the loop instead.
HANDLER_THREADS = 4
#: what the response cache keeps: responses up to this size, this many bytes in all
#: what the registry lets a bundle unpack to (the CLI's own limits are far looser)
SERVER_LIMITS = Limits(
    max_members=5_000, max_member_bytes=128 << 20, max_total_bytes=512 << 20, max_depth=16
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": text,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                }
            }
        },
    }
    for code, text in [
        (400, "bad request"),
        (401, "no valid token (writes need 'Authorization: Bearer TOKEN')"),
        (404, "no such task, experiment or page"),
        (413, "the request body is larger than the registry accepts"),
        (415, "wrong content type"),
        (422, "the request or the upload is invalid; the message names what and why"),
    ]
}


#: what the registry checks of a replication record before storing it (``fairtrial replicate``
#: writes the rest: claims, arms, host, ACM badge)
_RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["format", "outcome", "bundle", "original"],
    "properties": {
        "format": {"type": "string", "enum": ["fairtrial-replication"]},
        "outcome": {"type": "string", "enum": list(OUTCOMES)},
        "bundle": {
            "type": "object",
            "required": ["sha256"],
            "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
        },
        "original": {
            "type": "object",
            "required": ["experiment_id"],
            "properties": {"experiment_id": {"type": "string"}},
        },
        "arms": {"type": "array"},
        "claims": {"type": "array"},
        "failures": {"type": "array"},
        "replication": {"type": ["object", "null"]},
    },
}

_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="a write token (fairtrial serve --create-token NAME makes one)",
)


def create_app(
    store: str | Path | None = None,
    *,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    registry: Registry | None = None,
) -> FastAPI:
    """The registry app on ``store`` (default ``./.fairtrial/registry.db``)."""
    reg = registry or Registry(store, limits=SERVER_LIMITS)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = HANDLER_THREADS
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="fairtrial registry",
        version=fairtrial.__version__,
        description="Bundles, replications and leaderboards ranked by what holds up. Reads are "
        "public; writes need a token in 'Authorization: Bearer TOKEN'.",
        docs_url=None,  # the interactive docs load scripts from a CDN; the registry works offline
        redoc_url=None,
    )
    app.state.registry = reg
    # the last added is the outermost: the headers go on every response, cached or not
    app.add_middleware(_ResponseCache, registry=reg)
    app.add_middleware(_SecurityHeaders)

    @app.exception_handler(RegistryError)
    async def registry_error(request: Request, exc: RegistryError) -> Response:
        return _error_response(request, exc.status, str(exc))

    @app.exception_handler(BundleError)
    async def bundle_error(request: Request, exc: BundleError) -> Response:
        return _error_response(request, 422, f"bundle refused: {exc}")

    @app.exception_handler(FairtrialError)
    async def fairtrial_error(request: Request, exc: FairtrialError) -> Response:
        return _error_response(request, 400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for e in exc.errors()[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "path", "body"))
            problems.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
        return _error_response(request, 422, "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        text = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404:
            text = f"no such page: {request.url.path[:200]}"
        return _error_response(request, exc.status_code, text)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error_response(request, 500, "internal error (logged by the registry)")

    # A dependency, so that the OpenAPI description declares the bearer scheme on every write and
    # the token is checked before anything else about the request: without a valid token a write
    # is a 401, whatever else is wrong with it.
    def _auth(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> str:
        token_id = reg.check_token(credentials.credentials.strip()) if credentials else None
        if token_id is None:
            raise RegistryError(
                "this write needs a valid token: 'Authorization: Bearer TOKEN' (fairtrial serve "
                "--create-token NAME makes one)",
                401,
            )
        return token_id

    # -- API: writes --------------------------------------------------------------------------
    @app.post(
        "/api/bundles",
        tags=["write"],
        summary="Upload a bundle (verified on arrival, never executed)",
        status_code=201,
        responses={200: {"description": "this bundle was already stored"}, **_ERRORS},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/gzip": {"schema": {"type": "string", "format": "binary"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def upload_bundle(request: Request, token_id: str = Depends(_auth)) -> Response:
        ctype = request.headers.get("content-type", "").lower()
        if ctype.startswith("multipart/"):  # curl -F, an HTML form: the file wrapped in a form
            raise RegistryError(
                f"the upload is a multipart form ({ctype[:40]}): {HOW_TO_UPLOAD}", 415
            )
        fd, name = tempfile.mkstemp(prefix="fairtrial-upload-", suffix=".tar.gz")
        try:
            with os.fdopen(fd, "wb") as f:
                await _read_limited(request, max_upload, f)
            if os.path.getsize(name) == 0:
                raise RegistryError(f"empty upload: {HOW_TO_UPLOAD}", 422)
            with open(name, "rb") as f:
                head = f.read(512)
            if head.startswith(b"--") and b"content-disposition: form-data" in head.lower():
                raise RegistryError(f"the upload is a multipart form body: {HOW_TO_UPLOAD}", 422)
            try:
                summary, created = await run_in_threadpool(reg.add_bundle, name, token_id)
            except BundleError as exc:  # the temporary file's name means nothing to the client
                raise BundleError(str(exc).replace(name, "the upload")) from None
        finally:
            os.unlink(name)
        return JSONResponse({**summary, "created": created}, status_code=201 if created else 200)

    @app.post(
        "/api/experiments/{ref}/replications",
        tags=["write"],
        summary="Upload a replication record of this experiment's bundle",
        status_code=201,
        responses={200: {"description": "this record was already stored"}, **_ERRORS},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _RECORD_SCHEMA}},
            }
        },
    )
    async def upload_replication(
        ref: str, request: Request, token_id: str = Depends(_auth)
    ) -> Response:
        raw = await _read_limited(request, MAX_RECORD)
        too_deep = False
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise RegistryError("replication record: the body is not JSON", 422) from None
        except RecursionError:
            record, too_deep = None, True
        if too_deep or _depth(record, MAX_RECORD_DEPTH) > MAX_RECORD_DEPTH:
            raise RegistryError(
                f"replication record: nests deeper than {MAX_RECORD_DEPTH} levels "
                "(fairtrial replicate writes a handful)",
                422,
            )
        sha = await run_in_threadpool(reg.resolve, ref)
        bundle = record.get("bundle") if isinstance(record, dict) else None
        got = bundle.get("sha256") if isinstance(bundle, dict) else None
        if got != sha:
            raise RegistryError(
                f"replication record: bundle.sha256 {str(got)[:12]!r} is not experiment "
                f"{sha[:12]}'s bundle",
                422,
            )
        summary, created = await run_in_threadpool(reg.add_replication, record, token_id)
        return JSONResponse({**summary, "created": created}, status_code=201 if created else 200)

    @app.put(
        "/api/tasks/{task}/reference",
        tags=["write"],
        summary="Make an experiment's baseline the task's reference baseline",
        responses=_ERRORS,
    )
    def set_reference(
        task: str,
        experiment: Annotated[str, Query(max_length=64)],
        _token: str = Depends(_auth),
    ) -> dict[str, Any]:
        return {"task": task, "reference_baseline": reg.set_reference(task, experiment)}

    # -- API: reads ---------------------------------------------------------------------------
    @app.get("/api", tags=["read"], summary="What this registry serves")
    def api_index() -> dict[str, Any]:
        return {
            "registry": "fairtrial",
            "version": fairtrial.__version__,
            "openapi": "/openapi.json",
            "tasks": "/api/tasks",
            "experiments": "/api/experiments",
        }

    @app.get(
        "/api/tasks",
        tags=["read"],
        summary="Tasks with experiment and replication counts",
        response_model=list[dict[str, Any]],
    )
    def api_tasks() -> Response:
        return _json(reg.tasks())

    @app.get(
        "/api/tasks/{task}/leaderboard",
        tags=["read"],
        summary="A task's leaderboard: one entry per arm, best first",
        responses=_ERRORS,
        response_model=dict[str, Any],
    )
    def api_leaderboard(
        task: str,
        # the valid keys are declared in the description; the registry checks them itself so that
        # a wrong one gets a message listing them
        sort: Annotated[str, Query(json_schema_extra={"enum": list(SORTS)})] = "score",
        order: Annotated[str | None, Query(pattern="^(asc|desc)$")] = None,
        metric: Annotated[str | None, Query(max_length=64)] = None,
        kind: Annotated[str, Query(pattern="^(all|arm|baseline)$")] = "all",
        device: Annotated[str | None, Query(pattern="^(cpu|gpu)$")] = None,
        hardware: Annotated[str | None, Query(max_length=100)] = None,
        max_time: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
        max_flops: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
        verdict: Annotated[
            str | None, Query(pattern="^(better|worse|equivalent|inconclusive)$")
        ] = None,
        q: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> Response:
        filters = Filters(
            metric=metric,
            kind=kind,
            device=device,
            hardware=hardware,
            max_time=max_time,
            max_flops=max_flops,
            verdict=verdict,
            q=q,
        )
        return _json(
            reg.leaderboard(
                task, sort=sort, order=order, filters=filters, limit=limit, offset=offset
            )
        )

    @app.get(
        "/api/experiments",
        tags=["read"],
        summary="Search and filter experiments, newest first",
        responses=_ERRORS,
        response_model=dict[str, Any],
    )
    def api_search(
        q: Annotated[str | None, Query(max_length=200)] = None,
        task: Annotated[str | None, Query(max_length=200)] = None,
        device: Annotated[str | None, Query(pattern="^(cpu|gpu)$")] = None,
        verdict: Annotated[
            str | None, Query(pattern="^(better|worse|equivalent|inconclusive)$")
        ] = None,
        replicated: bool | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> Response:
        return _json(
            reg.search(
                q,
                task=task,
                device=device,
                verdict=verdict,
                replicated=replicated,
                limit=limit,
                offset=offset,
            )
        )

    @app.get(
        "/api/experiments/{ref}",
        tags=["read"],
        summary="An experiment: its registry row, full analysis, figures and replications",
        responses=_ERRORS,
        response_model=dict[str, Any],
    )
    def api_experiment(ref: str) -> Response:
        return Response(reg.experiment_json(ref), media_type="application/json")

    @app.get(
        "/api/experiments/{ref}/replications",
        tags=["read"],
        summary="The experiment's replication records",
        responses=_ERRORS,
        response_model=list[dict[str, Any]],
    )
    def api_replications(ref: str) -> Response:
        return _json(reg.replications(ref))

    @app.get(
        "/api/experiments/{ref}/predictions",
        tags=["read"],
        summary="Each arm's majority prediction for a test example, with the truth",
        responses=_ERRORS,
    )
    def api_predictions(
        ref: str, index: Annotated[int | None, Query(ge=0, le=10**7)] = None
    ) -> dict[str, Any]:
        info, table = reg.predictions(ref)
        if table is None:
            raise RegistryError(
                f"experiment {info['id'][:12]}: no predictions ({info['why']})", 404
            )
        if index is None:
            return {**info, "n_test": table["n_test"], "arms": list(table["arms"])}
        from fairtrial.server.pages import example

        return {**info, **example(table, index)}

    @app.get(
        "/api/experiments/{ref}/bundle",
        tags=["read"],
        summary="The experiment's bundle, byte for byte as uploaded",
        responses={
            200: {
                "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}
            },
            **_ERRORS,
        },
    )
    def api_bundle(ref: str) -> Response:
        sha = reg.resolve(ref)
        return Response(
            reg.bundle(sha),
            media_type="application/gzip",
            headers={"Content-Disposition": f'attachment; filename="{sha[:16]}.tar.gz"'},
        )

    @app.get(
        "/api/compare",
        tags=["read"],
        summary="Two experiments side by side: every captured difference (fairtrial diff)",
        responses=_ERRORS,
        response_model=dict[str, Any],
    )
    def api_compare(
        a: Annotated[str, Query(max_length=64)], b: Annotated[str, Query(max_length=64)]
    ) -> Response:
        return _json(compare(reg, a, b))

    from fairtrial.server.pages import add_pages

    add_pages(app, reg)
    return app


def compare(reg: Registry, a: str, b: str) -> dict[str, Any]:
    """Both experiments' summaries and verdicts, and the diff of their captures."""
    sa, sb = reg.resolve(a), reg.resolve(b)
    return {
        "a": {**reg.summary(sa), "comparisons": reg.doc(sa)["comparisons"]},
        "b": {**reg.summary(sb), "comparisons": reg.doc(sb)["comparisons"]},
        "diff": reg.diff(sa, sb),
    }


def _error_response(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api") or request.url.path == "/openapi.json":
        return _err(status, message)
    from fairtrial.server.pages import error_page

    return error_page(status, message)
