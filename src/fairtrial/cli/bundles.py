"""``fairtrial bundle``, ``verify`` and ``replicate``: portable archives of an experiment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.markup import escape

from fairtrial.cli._common import (
    err,
    find_experiment,
    make_backend,
    open_ledger,
    out,
    store_option,
)


@click.command()
@click.argument("experiment")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Bundle file to write (default: NAME-ID.tar.gz here).",
)
@store_option
def bundle(experiment: str, output: Path | None, store: str | None) -> None:
    """Write EXPERIMENT as one portable archive: normalised spec, preregistration, code
    snapshot (recipe files, git commit and diff), environment lock, task checksums, per-trial
    results, metrics, analysis, provenance, sealed test log excerpt, and a manifest with the
    sha256 of every file. Check it with `fairtrial verify FILE`."""
    from fairtrial.bundle import write_bundle

    ledger = open_ledger(store)
    exp = find_experiment(ledger, experiment)
    path = output or Path(f"{exp.name}-{exp.id}.tar.gz")
    manifest = write_bundle(ledger, exp, path)
    size = path.stat().st_size
    out.print(
        f"bundle {escape(str(path))}: {len(manifest['files']) + 1} files, {size / 1024:.1f} KiB, "
        f"sha256 {manifest['sha256']}"
    )


@click.command()
@click.argument("bundle_path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(bundle_path: Path, as_json: bool) -> None:
    """Check a bundle without running any of it: safe member names and types, size limits,
    gzip checksum, every file against the manifest, and the members against each other.
    Exit status 2 with the name of each modified file when a check fails."""
    from fairtrial.bundle import verify_bundle

    result = verify_bundle(bundle_path)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    e = result["experiment"]
    out.print(
        f"verified {escape(str(bundle_path))}: {result['files']} files match the manifest; "
        f"experiment {escape(e['name'])} ({e['id']}), {result['finished']}/{result['trials']} "
        f"trials finished; code {', '.join(c[:12] for c in result['code']) or 'unrecorded'}"
        + (" (MIXED)" if len(result["code"]) > 1 else "")
        + f"; {escape(result['preregistered'] or 'not preregistered')}"
    )
    checked = result.get("results") or {}
    if checked.get("verified"):
        out.print(
            f"results re-scored: the stored test predictions of all {checked['rescored']} "
            "finished trials give the results they report"
        )
    elif checked:
        out.print(
            f"[yellow]results unverifiable[/]: {escape(str(checked.get('unverifiable')))}",
            highlight=False,
        )
    out.print(f"sha256 {result['sha256']}")


@click.command()
@click.argument("bundle_ref", metavar="BUNDLE")
@click.option(
    "--seeds",
    type=click.Choice(["same", "fresh"]),
    default="same",
    show_default=True,
    help="same: the bundle's seeds; fresh: a new root seed and, for procedurally generated "
    "tasks (mnist1d, modular_addition), a fresh data draw.",
)
@click.option(
    "--tolerance",
    type=float,
    help="Per-arm means agree within ±X (default: the hypothesis' smallest effect).",
)
@click.option("--root-seed", type=int, help="With --seeds fresh: this root seed.")
@click.option(
    "--backend",
    type=click.Choice(["local", "inline"]),
    default="local",
    show_default=True,
)
@click.option("--workers", type=click.IntRange(min=1), help="Trials at once (default: cores).")
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to run (default ./.fairtrial/replications/...).",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Record as JSON."
)
@click.option(
    "--push",
    "push_record",
    is_flag=True,
    help="Upload the record to the registry (the one BUNDLE came from, or --to).",
)
@click.option(
    "--to",
    "registry",
    envvar="FAIRTRIAL_REGISTRY",
    help="With --push and a bundle file: the registry URL (env FAIRTRIAL_REGISTRY).",
)
@store_option
def replicate(
    bundle_ref: str,
    seeds: str,
    tolerance: float | None,
    root_seed: int | None,
    backend: str,
    workers: int | None,
    folder: Path | None,
    output: Path | None,
    push_record: bool,
    registry: str | None,
    store: str | None,
) -> None:
    """Re-run the experiment in BUNDLE and judge whether it agrees with the original.

    BUNDLE is a bundle file or an experiment's registry URL
    (http://HOST:PORT/experiments/ID), which is downloaded and checked against its sha256
    first. With --push the record goes back to the registry (token from FAIRTRIAL_TOKEN).

    This RUNS THE BUNDLED RECIPE CODE (verify the bundle and read its code/ first if you do not
    trust its author); it runs in a folder of its own that holds the code snapshot, the spec
    and the replication's ledger. Per arm, an equivalence test of the means within
    ±tolerance; per claim, the original verdict must come out again. The record (replicated,
    not replicated, inconclusive; ACM vocabulary) is stored in the ledger and written as JSON.
    Exit status: 0 replicated, 1 not replicated, 3 inconclusive.
    """
    from fairtrial.replicate import copy_record, format_record
    from fairtrial.replicate import replicate as do_replicate
    from fairtrial.server import client

    if client.is_url(bundle_ref):
        bundle_path, source = client.fetch_bundle(bundle_ref, Path(".fairtrial") / "downloads")
        err.print(f"downloaded {escape(bundle_ref)} to {escape(str(bundle_path))}")
        registry = registry or source
    else:
        bundle_path = Path(bundle_ref)
    if push_record:
        if not registry:
            raise click.UsageError("--push needs a registry: a BUNDLE URL, or --to URL")
        client.require_token()  # fail before the run, not after it
    record = do_replicate(
        bundle_path,
        seeds="fresh" if seeds == "fresh" else "same",
        tolerance=tolerance,
        root_seed=root_seed,
        store=store,
        folder=folder,
        backend=make_backend(backend, workers, None),
        console=err,
    )
    if output is not None:
        copy_record(record, output)
    out.print(escape(format_record(record)))
    out.print(f"record {record['id'][:12]} stored; JSON: {record['replication']['folder']}")
    if push_record and registry:
        sent = client.push_replication(record, registry)
        out.print(
            f"pushed to {escape(registry)}/experiments/{sent['experiment']} "
            f"({'new' if sent['created'] else 'already there'})"
        )
    sys.exit({"replicated": 0, "not replicated": 1}.get(record["outcome"], 3))
