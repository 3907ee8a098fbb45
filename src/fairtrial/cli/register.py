"""``fairtrial register``: preregister a spec before any trial runs."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape

from fairtrial.cli._common import open_ledger, out, store_option


@click.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@store_option
def register(spec_path: Path, store: str | None) -> None:
    """Preregister SPEC before any trial runs: freeze its hypothesis, primary metric, smallest
    effect, alpha, arms, seeds and the analysis method they give under a hash in the store's
    hash-chained log.
    Reports of the experiment then say "preregistered HASH DATE" or list every deviation."""
    from fairtrial.analysis import method_labels
    from fairtrial.prereg import iso_date
    from fairtrial.prereg import register as do_register
    from fairtrial.spec import load_spec

    spec = load_spec(spec_path)
    entry = do_register(spec, open_ledger(store))
    short = entry["record_hash"][:12]
    date = iso_date(entry["created_at"])
    if entry["already"]:
        out.print(f"already preregistered {short} {date}: {escape(spec.name)} (unchanged)")
        return
    h = spec.hypothesis
    out.print(f"preregistered {short} {date}: {escape(spec.name)} ({spec.experiment_id})")
    out.print(
        f"  {len(spec.arms)} arms ({escape(', '.join(spec.arms))}) × seeds 0..{spec.seeds - 1} "
        f"(root {spec.root_seed}); metric {spec.metric} ({spec.direction}); "
        f"smallest effect {h.smallest_effect if h.smallest_effect is not None else 'not set'}; "
        f"alpha {h.alpha}"
    )
    if h.claim:
        out.print(f"  claim: {escape(h.claim)}")
    labels = method_labels(json.loads(entry["record_json"])["analysis"]["method"])
    out.print(
        "  analysis: "
        + escape(
            "; ".join(f"{k} {labels[k]}" for k in ("interval", "test", "correction", "failures"))
        )
    )
    out.print(f"  log entry #{entry['seq']}, chain head {entry['head'][:12]}")
    if entry["supersedes"]:
        out.print(
            f"  supersedes {entry['supersedes'][:12]} (an earlier plan of the same name, kept "
            "in the log)"
        )
