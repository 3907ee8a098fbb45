"""What the commands share: the consoles, the --store option, finding an experiment, making
a backend, and the exit status of a signal."""

from __future__ import annotations

import functools
import signal
import sys
from typing import Any

import click
from rich.console import Console

from fairtrial.errors import FairtrialError

# Piped output (CI logs, `| less`) gets a fixed width instead of rich's 80-column fallback.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 150)
err = Console(
    stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 150
)

store_option = click.option(
    "--store",
    envvar="FAIRTRIAL_STORE",
    default=None,
    help="Ledger: a SQLAlchemy URL (sqlite:///..., postgresql://...) or a file path. "
    "Default ./.fairtrial/ledger.db (env FAIRTRIAL_STORE).",
)


def open_ledger(store: str | None) -> Any:
    """The ledger at ``store`` (the --store option; None: the default)."""
    from fairtrial.ledger import Ledger

    return Ledger(store)


def find_experiment(ledger: Any, ref: str) -> Any:
    """EXPERIMENT is an id, a name, or a spec path (:func:`fairtrial.api.find_experiment`)."""
    from fairtrial.api import find_experiment as find

    return find(ledger, ref)


def _slurm_option(text: str) -> tuple[str, str | bool]:
    key, eq, value = text.partition("=")
    key = key.strip().lstrip("-")
    from fairtrial.spec.limits import SBATCH_KEY

    if not SBATCH_KEY.fullmatch(key):
        raise click.BadParameter(
            f"'{text}' is not an sbatch option: KEY=VALUE or KEY, e.g. constraint=a100 or exclusive"
        )
    return key, value if eq else True


def slurm_options(fn: Any) -> Any:
    """The ``--slurm-*`` options of ``fairtrial run``, handed to the command as one dict
    ``slurm`` of the flags that were given (they override the spec's ``[slurm]`` table)."""
    options = [
        click.option("--slurm-partition", help="slurm: the partition to submit to."),
        click.option("--slurm-account", help="slurm: the account to charge."),
        click.option("--slurm-qos", help="slurm: the quality of service."),
        click.option(
            "--slurm-time",
            type=click.IntRange(min=1),
            help="slurm: each job's time limit in minutes (default: the spec's time_limit "
            "with room for the setup, else 60).",
        ),
        click.option(
            "--slurm-array-parallelism",
            type=click.IntRange(min=1),
            help="slurm: at most N jobs of an array run at once.",
        ),
        click.option(
            "--slurm-folder",
            help="slurm: where the jobs' files go, on a file system the nodes share "
            "(default ./.fairtrial/slurm).",
        ),
        click.option(
            "--slurm-option",
            "slurm_sbatch",
            multiple=True,
            metavar="KEY[=VALUE]",
            help="slurm: another sbatch option, e.g. constraint=a100 (repeatable).",
        ),
    ]

    @functools.wraps(fn)  # keeps the options declared below this decorator
    def command(**kwargs: Any) -> Any:
        flags = {k[len("slurm_") :]: kwargs.pop(k) for k in list(kwargs) if k.startswith("slurm_")}
        sbatch = dict(_slurm_option(text) for text in flags.pop("sbatch") or ())
        given = {k: v for k, v in flags.items() if v is not None}
        if sbatch:
            given["sbatch"] = sbatch
        return fn(slurm=given, **kwargs)

    for option in reversed(options):
        command = option(command)
    return command


def make_backend(
    name: str,
    workers: int | None,
    threads: int | None,
    group: int | None = None,
    address: str | None = None,
    spec: Any = None,
    slurm: dict[str, Any] | None = None,
) -> Any:
    """The backend --backend NAME names, refusing the options of another backend; ``auto``
    picks one for ``spec`` and says which and why on stderr. ``slurm``: the ``--slurm-*``
    flags given."""
    from fairtrial.backends import choose_backend
    from fairtrial.backends import make_backend as make

    if address is not None and name != "ray":
        raise FairtrialError(f"--address is for --backend ray, not --backend {name}")
    if slurm and name != "slurm":
        flag = "--slurm-" + next(iter(slurm)).replace("_", "-").replace("sbatch", "option")
        raise FairtrialError(f"{flag} is for --backend slurm, not --backend {name}")
    if name == "slurm":
        if workers is not None:
            raise FairtrialError(
                "--workers is not for --backend slurm: --slurm-array-parallelism says how "
                "many jobs run at once"
            )
        from fairtrial.backends.slurm import SlurmBackend, SlurmSettings

        return SlurmBackend(
            SlurmSettings.of(getattr(spec, "slurm", {}), **(slurm or {})),
            resources=getattr(spec, "resources", {}),
            threads=threads,
        )
    if group is not None and name not in ("vectorized", "auto"):
        raise FairtrialError(f"--group is for --backend vectorized, not --backend {name}")
    primary = getattr(spec, "primary", "metric")
    if name == "vectorized" and primary != "metric":
        raise FairtrialError(
            f'--backend vectorized: the spec\'s primary = "{primary}" is a speed trial, which '
            "times each trial on its own, and a batched model's members share their time; use "
            "--backend local (or auto)"
        )
    if name == "auto":
        backend, why = choose_backend(spec, workers=workers, threads=threads, group=group)
        err.print(f"backend auto: {backend.name}, because {why}")
        return backend
    return make(name, workers=workers, threads=threads, group=group, address=address)


def by_signal(exc: KeyboardInterrupt) -> str:
    """' by SIGTERM' for a run stopped by a signal other than Ctrl-C's, else ''."""
    signum = getattr(exc, "signum", None)
    return f" by {signal.Signals(signum).name}" if signum is not None else ""


def exit_status(exc: KeyboardInterrupt) -> int:
    """The shell's status of a process ended by the signal behind ``exc``: 128 + signal."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))
