"""``fairtrial export --to wandb`` on a real experiment, read back from wandb's own files.

A real run (the toy probe on digits, inline: 3 arms × 2 seeds, one arm failing) is exported as
offline W&B runs; each run's ``.wandb`` transaction log (LevelDB-style records of wandb's
``Record`` protobuf, the file ``wandb sync`` uploads) is read back and must hold the trial's
group, job type, config, history with its steps, summary and exit code.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import pytest

from fairtrial.cli import main
from fairtrial.ledger import Ledger

pytest.importorskip("wandb")

RECIPES = Path(__file__).parent / "recipes"
SPEC = """
[experiment]
name = "toy-wandb"
task = "digits"
recipe = "toy:probe"
seeds = 2

[baseline]
noise = 0.0
mode = "ok"
sleep = 0.0

[arms.noisy]
noise = 3.0

[arms.broken]
mode = "raise"
"""
BLOCK = 32 * 1024
HEADER = 7  # ":W&B", a 2-byte magic, a version byte; each record's header is 7 bytes too


def cli(*args: str) -> tuple[int, str]:
    buf = io.StringIO()
    with redirect_stderr(buf):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, buf.getvalue()


def records(path: Path) -> list[Any]:
    """The records of a ``.wandb`` file, in order: wandb writes LevelDB log blocks (a 7-byte
    header per chunk: checksum, length, type FULL/FIRST/MIDDLE/LAST) of ``Record`` protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:HEADER]
    pos, chunks, part = HEADER, [], b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the block's tail is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            part = chunk
        elif kind == 3:
            part += chunk
        else:
            chunks.append(part + chunk)
    out = []
    for chunk in chunks:
        record = pb.Record()
        record.ParseFromString(chunk)
        out.append(record)
    return out


def _key(item: Any) -> str:
    return ".".join(item.nested_key) if item.nested_key else item.key


class OfflineRun:
    """What one offline run's file holds."""

    def __init__(self, path: Path) -> None:
        self.config: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}
        self.exit_code: int | None = None
        for r in records(path):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                self.group, self.job_type = r.run.run_group, r.run.job_type
                self.name, self.project = r.run.display_name, r.run.project
                self.tags = list(r.run.tags)
                self.config.update({_key(u): json.loads(u.value_json) for u in r.run.config.update})
            elif kind == "config":
                self.config.update({_key(u): json.loads(u.value_json) for u in r.config.update})
            elif kind == "history":
                self.history.append({_key(i): json.loads(i.value_json) for i in r.history.item})
            elif kind == "summary":
                self.summary.update({_key(u): json.loads(u.value_json) for u in r.summary.update})
            elif kind == "exit":
                self.exit_code = r.exit.exit_code


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """(folder, ledger, the export's line) after a real run and its export."""
    root = tmp_path_factory.mktemp("export20-wandb")
    shutil.copy(RECIPES / "toy.py", root / "toy.py")
    (root / "spec.toml").write_text(SPEC)
    db = str(root / "ledger.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        code, err = cli("run", "spec.toml", "--backend", "inline", "--store", db, "--no-report")
        assert code == 1, err  # the broken arm failed
        code, err = cli("export", "toy-wandb", "--to", "wandb", "--dir", str(root / "out"),
                        "--store", db)  # fmt: skip
        assert code == 0, err
        yield root, db, err


def test_each_trial_is_an_offline_run_with_its_group_config_history_and_summary(
    exported: tuple[Path, str, str],
) -> None:
    root, db, err = exported
    folder = root / "out" / "wandb"
    assert err.strip().endswith(f"upload them with: wandb sync {folder}/offline-run-*")
    assert ": 6 trial run(s) made (" in err and err.count("\n") == 1
    led = Ledger(db)
    exp = led.find_experiment("toy-wandb")
    verdicts = {"baseline": "baseline", "noisy": "inconclusive", "broken": "inconclusive"}
    trials = led.trials(exp.id)
    assert len(trials) == 6
    for t in trials:
        (path,) = folder.glob(f"offline-run-*-{exp.id}-{t.id[:16]}-a{t.attempt}/*.wandb")
        run = OfflineRun(path)
        assert (run.group, run.job_type, run.project) == (t.arm, "trial", "toy-wandb")
        assert run.name == f"{t.arm} seed {t.seed}"
        assert run.config["arm"] == t.arm and run.config["seed"] == t.seed
        assert run.config["noise"] == t.config["noise"] and run.config["mode"] == t.config["mode"]
        assert {k: v for k, v in run.config.items() if k.startswith("seed_")} == {
            f"seed_{k}": v for k, v in t.seeds.items()
        }
        logged: dict[int, dict[str, float]] = {}
        for _, step, _, name, value in led.metrics(t.id, t.attempt):
            logged.setdefault(step, {})[name] = value
        got = {
            row["_step"]: {k: v for k, v in row.items() if not k.startswith("_")}
            for row in run.history
        }
        assert got == logged, (t.arm, t.seed)
        assert run.summary["status"] == t.status and run.summary["trial_id"] == t.id
        assert run.summary["verdict"] == verdicts[t.arm]
        assert run.summary.get("accuracy") == t.result
        assert run.tags == [t.status, verdicts[t.arm]]
        assert run.exit_code == (0 if t.status == "finished" else 1)
        if t.status == "failed":
            assert run.summary["error"] == t.error
    led.close()


def test_exporting_again_makes_no_new_run(exported: tuple[Path, str, str]) -> None:
    root, db, _ = exported
    folder = root / "out" / "wandb"
    before = sorted(p.name for p in folder.glob("offline-run-*"))
    code, err = cli("export", "toy-wandb", "--to", "wandb", "--dir", str(root / "out"),
                    "--store", db)  # fmt: skip
    assert code == 0, err
    assert ": 0 trial run(s) made, 6 already there (0 points)" in err
    assert sorted(p.name for p in folder.glob("offline-run-*")) == before


def test_without_wandb_the_export_names_its_extra(
    exported: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, db, _ = exported
    monkeypatch.setitem(sys.modules, "wandb", None)
    code, err = cli("export", "toy-wandb", "--to", "wandb", "--store", db)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: Exporting to W&B needs the 'wandb' package:") and "[wandb]" in err
