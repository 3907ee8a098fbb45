"""Talking to a registry from the command line: push bundles and records, fetch bundles.

Standard library only (``urllib``), so ``fairtrial push`` and ``fairtrial replicate URL`` work
without the server extra. The token comes from ``FAIRTRIAL_TOKEN`` and is sent as
``Authorization: Bearer ...``; registry errors (``{"error": ...}``) become one-line
:class:`RegistryError` messages.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from fairtrial.errors import RegistryError

TOKEN_ENV = "FAIRTRIAL_TOKEN"
TIMEOUT = 120.0
#: redirects a download follows (an upload with the token: same origin only)
MAX_REDIRECTS = 5
#: what a registry's JSON answer, or its error message, may weigh
MAX_ANSWER_BYTES = 16 << 20
MAX_ERROR_BYTES = 64 << 10
_CHUNK = 1 << 16
_EXPERIMENT = re.compile(
    r"^(?P<base>https?://.+?)(?:/api)?/experiments/(?P<id>[0-9a-fA-F]{8,64})/?$"
)


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def split_experiment_url(url: str) -> tuple[str, str]:
    """(registry base URL, experiment id) from an experiment's page or API URL."""
    m = _EXPERIMENT.match(url.split("?", 1)[0].split("#", 1)[0])
    if m is None:
        raise RegistryError(
            f"'{url[:200]}': give an experiment's registry URL, e.g. "
            "http://HOST:PORT/experiments/BUNDLE_SHA256 (or its /api/experiments/... form)"
        )
    return m.group("base").rstrip("/"), m.group("id").lower()


def require_token(token: str | None = None) -> str:
    """``token``, else ``FAIRTRIAL_TOKEN``; a one-line error when there is neither."""
    token = token or os.environ.get(TOKEN_ENV, "")
    if not token:
        raise RegistryError(
            f"writing to a registry needs a token: set {TOKEN_ENV} (the registry's admin makes "
            "one with 'fairtrial serve --create-token NAME')"
        )
    return token


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects come back as HTTPError, for :func:`_open` to judge (urllib would follow them
    with every header, the token too, to any origin, after reading the whole body)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)
_REDIRECTS = (301, 302, 303, 307, 308)


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port): a token is only ever sent to the origin it was given for."""
    u = urllib.parse.urlsplit(url)
    try:
        port = u.port or {"http": 80, "https": 443}.get(u.scheme.lower())
    except ValueError:
        port = -1
    return u.scheme.lower(), (u.hostname or "").lower(), port


def _read_capped(resp: Any, limit: int, url: str, what: str = "answer") -> bytes:
    """At most ``limit`` bytes of a response, counted while reading."""
    parts: list[bytes] = []
    n = 0
    while chunk := resp.read(_CHUNK):
        n += len(chunk)
        if n > limit:
            raise RegistryError(f"{url}: the {what} passed {limit} bytes (limit); stopped", 502)
        parts.append(chunk)
    return b"".join(parts)


def _open(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Any:
    """The response to a request, following redirects by hand.

    A redirect is followed only to the same origin (scheme, host and port) when the request
    carries the token: the token was given for one registry, so a registry that moved is named
    in one line instead of trusted (curl and requests likewise never send credentials to
    another host). An upload is re-sent only for 307 and 308, which keep method and body;
    301, 302 and 303 would turn it into a GET. Downloads without a token follow up to
    :data:`MAX_REDIRECTS` redirects to http(s) anywhere (the bundle's sha256 is checked).
    """
    headers = dict(headers or {})
    secret = any(k.lower() == "authorization" for k in headers)
    try:
        for _ in range(MAX_REDIRECTS + 1):
            req = urllib.request.Request(url, data=body, method=method, headers=headers)
            try:
                return _OPENER.open(req, timeout=TIMEOUT)
            except urllib.error.HTTPError as exc:
                if exc.code not in _REDIRECTS:
                    raw = _read_capped(exc, MAX_ERROR_BYTES, url, "error answer")
                    try:
                        message = json.loads(raw).get("error") or raw.decode(errors="replace")
                    except (ValueError, AttributeError, RecursionError):
                        message = raw.decode(errors="replace")[:300]
                    raise RegistryError(f"{url}: {exc.code} {message}", exc.code) from None
                location = exc.headers.get("Location") or ""
                exc.close()
                target = urllib.parse.urljoin(url, location.strip())
                if not location or urllib.parse.urlsplit(target).scheme not in ("http", "https"):
                    raise RegistryError(
                        f"{url}: {exc.code} redirect to '{location[:200]}', not an http(s) URL",
                        502,
                    ) from None
                if secret and _origin(target) != _origin(url):
                    raise RegistryError(
                        f"{url} redirected ({exc.code}) to {target[:200]}, another origin: the "
                        "token is not sent there; if that is the registry, use its URL",
                        502,
                    ) from None
                if method not in ("GET", "HEAD") and exc.code not in (307, 308):
                    raise RegistryError(
                        f"{url} redirected ({exc.code}) to {target[:200]}, which would turn the "
                        "upload into a GET; use the URL it names",
                        502,
                    ) from None
                url = target
        raise RegistryError(f"{url}: more than {MAX_REDIRECTS} redirects", 502)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistryError(f"cannot reach the registry at {url}: {reason}", 503) from None


def _request(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """A JSON request whose answer must be a JSON object (one line otherwise)."""
    with _open(method, url, body, headers) as resp:
        try:
            raw = _read_capped(resp, MAX_ANSWER_BYTES, url)
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(
                f"cannot read the registry's answer from {url}: {exc}", 503
            ) from None
    try:
        out = json.loads(raw)
    except (ValueError, RecursionError):
        out = None
    if not isinstance(out, dict):
        raise RegistryError(
            f"{url}: the answer is not a JSON object: is this a fairtrial registry?", 502
        )
    return out


def _fields(url: str, answer: dict[str, Any], *keys: str) -> dict[str, Any]:
    missing = [k for k in keys if k not in answer]
    if missing:
        raise RegistryError(
            f"{url}: the answer lacks {', '.join(missing)}: is this a fairtrial registry?", 502
        )
    return answer


def push_bundle(path: str | Path, registry: str, token: str | None = None) -> dict[str, Any]:
    """Upload the bundle at ``path``; returns the registry's summary (``created`` says if new)."""
    p = Path(path)
    if not p.is_file():
        raise RegistryError(f"{p}: no such bundle file")
    url = registry.rstrip("/") + "/api/bundles"
    answer = _request(
        "POST",
        url,
        p.read_bytes(),
        {"Authorization": f"Bearer {require_token(token)}", "Content-Type": "application/gzip"},
    )
    return _fields(url, answer, "id", "name", "badge", "created")


def push_replication(
    record: dict[str, Any], registry: str, token: str | None = None
) -> dict[str, Any]:
    """Upload a replication record against its bundle (which must be in the registry)."""
    sha = (record.get("bundle") or {}).get("sha256", "")
    body = json.dumps(record, allow_nan=False).encode()
    url = f"{registry.rstrip('/')}/api/experiments/{sha}/replications"
    answer = _request(
        "POST",
        url,
        body,
        {"Authorization": f"Bearer {require_token(token)}", "Content-Type": "application/json"},
    )
    return _fields(url, answer, "experiment", "outcome", "created")


def fetch_bundle(url: str, folder: Path, *, max_bytes: int | None = None) -> tuple[Path, str]:
    """Download the bundle an experiment URL names into ``folder``: (its path, the registry).

    Streamed to a temporary file, counted while reading: past ``max_bytes`` (default: the
    largest bundle :class:`fairtrial.bundle.Limits` reads) the download stops and is removed.
    The file is checked against the sha256 the registry names it by before it is used."""
    from fairtrial.bundle import Limits

    limit = max_bytes if max_bytes is not None else Limits().max_total_bytes
    base, ref = split_experiment_url(url)
    api = f"{base}/api/experiments/{ref}/bundle"
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".download-", suffix=".tmp", dir=folder)
    tmp = Path(name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, _open("GET", api) as resp:
            declared = resp.headers.get("Content-Length") or ""
            if declared.isascii() and declared.isdigit() and int(declared) > limit:
                raise RegistryError(
                    f"{api}: the bundle is {declared} bytes, more than a bundle may be "
                    f"({limit}); not downloaded",
                    502,
                )
            n = 0
            try:
                while chunk := resp.read(_CHUNK):
                    n += len(chunk)
                    if n > limit:
                        raise RegistryError(
                            f"{api}: the download passed {limit} bytes, more than a bundle may "
                            "be; stopped and removed",
                            502,
                        )
                    h.update(chunk)
                    out.write(chunk)
            except (OSError, http.client.HTTPException) as exc:
                raise RegistryError(f"{api}: the download broke off: {exc}", 503) from None
        digest = h.hexdigest()
        if not digest.startswith(ref):
            raise RegistryError(
                f"{url}: the registry sent a bundle whose sha256 {digest[:12]} does not match "
                f"{ref[:12]}"
            )
        path = folder / f"{digest[:16]}.tar.gz"
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path, base
