"""Talking to a registry from the command line: push bundles and records, fetch bundles.

Standard library only (``urllib``), so ``fairtrial push`` and ``fairtrial replicate URL`` work
without the server extra. The token comes from ``FAIRTRIAL_TOKEN`` and is sent as
``Authorization: Bearer ...``; registry errors (``{"error": ...}``) become one-line
:class:`RegistryError` messages.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from fairtrial.errors import RegistryError

TOKEN_ENV = "FAIRTRIAL_TOKEN"
TIMEOUT = 120.0
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


def _request(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            message = json.loads(raw).get("error") or raw.decode(errors="replace")
        except (ValueError, AttributeError):
            message = raw.decode(errors="replace")[:300]
        raise RegistryError(f"{url}: {exc.code} {message}", exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistryError(f"cannot reach the registry at {url}: {reason}", 503) from None


def push_bundle(path: str | Path, registry: str, token: str | None = None) -> dict[str, Any]:
    """Upload the bundle at ``path``; returns the registry's summary (``created`` says if new)."""
    p = Path(path)
    if not p.is_file():
        raise RegistryError(f"{p}: no such bundle file")
    _, raw = _request(
        "POST",
        registry.rstrip("/") + "/api/bundles",
        p.read_bytes(),
        {"Authorization": f"Bearer {require_token(token)}", "Content-Type": "application/gzip"},
    )
    out: dict[str, Any] = json.loads(raw)
    return out


def push_replication(
    record: dict[str, Any], registry: str, token: str | None = None
) -> dict[str, Any]:
    """Upload a replication record against its bundle (which must be in the registry)."""
    sha = (record.get("bundle") or {}).get("sha256", "")
    body = json.dumps(record, allow_nan=False).encode()
    _, raw = _request(
        "POST",
        f"{registry.rstrip('/')}/api/experiments/{sha}/replications",
        body,
        {"Authorization": f"Bearer {require_token(token)}", "Content-Type": "application/json"},
    )
    out: dict[str, Any] = json.loads(raw)
    return out


def fetch_bundle(url: str, folder: Path) -> tuple[Path, str]:
    """Download the bundle an experiment URL names into ``folder``: (its path, the registry).

    The file is checked against the sha256 the registry names it by before it is used."""
    base, ref = split_experiment_url(url)
    _, raw = _request("GET", f"{base}/api/experiments/{ref}/bundle")
    digest = hashlib.sha256(raw).hexdigest()
    if not digest.startswith(ref):
        raise RegistryError(
            f"{url}: the registry sent a bundle whose sha256 {digest[:12]} does not match "
            f"{ref[:12]}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest[:16]}.tar.gz"
    path.write_bytes(raw)
    return path, base
