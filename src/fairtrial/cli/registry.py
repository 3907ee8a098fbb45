"""``fairtrial serve`` (the registry and its write tokens) and ``fairtrial push``."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape

from fairtrial.cli._common import err, out

registry_store_option = click.option(
    "--store",
    envvar="FAIRTRIAL_REGISTRY_STORE",
    default=None,
    help="Registry store: a SQLAlchemy URL (sqlite:///..., postgresql://...) or a file path. "
    "Default ./.fairtrial/registry.db (env FAIRTRIAL_REGISTRY_STORE).",
)


@click.command()
@registry_store_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0.001),
    default=64,
    show_default=True,
    help="Largest bundle upload accepted (compressed).",
)
@click.option(
    "--create-token",
    metavar="NAME",
    help="Make a write token named NAME, print it once (only its hash is stored), and exit.",
)
@click.option("--tokens", "list_tokens", is_flag=True, help="List the write tokens and exit.")
@click.option("--revoke-token", metavar="ID", help="Revoke the token with this id and exit.")
def serve(
    store: str | None,
    host: str,
    port: int,
    max_upload_mb: float,
    create_token: str | None,
    list_tokens: bool,
    revoke_token: str | None,
) -> None:
    """Run the registry: JSON API (OpenAPI at /openapi.json) and web UI.

    Reads are public; uploads (bundles, replication records) need a token made with
    --create-token NAME and sent as 'Authorization: Bearer TOKEN' (fairtrial push reads it
    from FAIRTRIAL_TOKEN). Uploaded bundles are verified and analysed, never executed.
    """
    from fairtrial.errors import require

    if create_token or list_tokens or revoke_token:
        _tokens(store, create_token, list_tokens, revoke_token)
        return
    require("fastapi", "server", "fairtrial serve")
    require("uvicorn", "server", "fairtrial serve")
    require("jinja2", "server", "fairtrial serve")
    import uvicorn

    from fairtrial.server.app import create_app

    app = create_app(store, max_upload=int(max_upload_mb * (1 << 20)))
    reg = app.state.registry
    err.print(
        f"fairtrial registry on http://{host}:{port} (store {escape(reg.url.split('@')[-1])}); "
        f"{len([t for t in reg.tokens() if not t['revoked_at']])} write token(s)"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _tokens(store: str | None, create: str | None, list_them: bool, revoke: str | None) -> None:
    """Token admin on the registry's store: create (printed once), revoke, list."""
    from fairtrial.server import Registry

    reg = Registry(store)
    try:
        if create:
            out.print(reg.create_token(create), highlight=False, soft_wrap=True)
            err.print(
                f"token '{escape(create)}' created; it is shown only this once "
                "(export FAIRTRIAL_TOKEN=...)"
            )
        if revoke:
            if not reg.revoke_token(revoke):
                raise click.UsageError(f"no live token with id '{revoke}'")
            out.print(f"token {escape(revoke)} revoked")
        if list_them:
            for t in reg.tokens():
                state = "revoked" if t["revoked_at"] else "live"
                out.print(f"{t['id']}  {escape(t['name'])}  {state}", highlight=False)
    finally:
        reg.close()


@click.command()
@click.argument("path", metavar="BUNDLE_OR_RECORD", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--to",
    "registry",
    required=True,
    envvar="FAIRTRIAL_REGISTRY",
    help="Registry URL, e.g. http://127.0.0.1:8000 (env FAIRTRIAL_REGISTRY).",
)
def push(path: Path, registry: str) -> None:
    """Upload a bundle (or a replication record's JSON) to a registry.

    The token comes from FAIRTRIAL_TOKEN. The registry verifies the bundle (it never runs it),
    re-analyses its results and lists it on its task's leaderboard.
    """
    from fairtrial.server import client

    if not path.is_file():
        raise click.UsageError(f"{path}: no such file")
    if path.suffix == ".json":
        try:
            record = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise click.UsageError(f"{path}: not a JSON replication record ({exc})") from None
        sent = client.push_replication(record, registry)
        what = f"replication record ({sent['outcome']})"
    else:
        sent = client.push_bundle(path, registry)
        what = f"experiment {escape(sent['name'])} ({escape(sent['badge'])})"
        sent["experiment"] = sent["id"]
    out.print(
        f"pushed {what}: {escape(registry.rstrip('/'))}/experiments/{sent['experiment']} "
        f"({'new' if sent['created'] else 'already there'})",
        highlight=False,
        soft_wrap=True,
    )
