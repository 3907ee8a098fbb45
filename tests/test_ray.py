"""The Ray backend on a local Ray instance (2 CPUs): same results as local, lost workers retried."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from conftest import toy_spec  # noqa: E402
from fairtrial.backends import InlineBackend, make_backend  # noqa: E402
from fairtrial.backends.ray import RayBackend  # noqa: E402
from fairtrial.errors import install_hint  # noqa: E402
from fairtrial.ledger import Ledger  # noqa: E402
from fairtrial.runner import run_experiment  # noqa: E402
from fairtrial.spec import load_spec  # noqa: E402
from test_run import _run_killing_victims  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One Ray instance for the module: loopback, 2 CPUs, no dashboard."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _view(led: Ledger, eid: str) -> dict[str, Any]:
    preds = {e["trial_id"]: e["predictions"] for e in led.test_evaluations(eid)}
    return {
        t.id: (t.status, t.result, preds.get(t.id), [(m[1], m[3], m[4]) for m in led.metrics(t.id)])
        for t in led.trials(eid)
    }


def test_ray_gives_the_local_backends_results(
    local_ray: None, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    arms = "[arms.noisy]\nnoise = 0.3\n"
    spec = load_spec(write_spec(toy_spec(seeds=3, arms=arms, extra="resources = {cpus = 1}")))
    assert spec.resources == {"cpus": 1.0}
    views = []
    for name, backend in [("inline", InlineBackend()), ("ray", make_backend("ray"))]:
        led = Ledger(tmp_path / f"{name}.db")
        summary = run_experiment(spec, led, backend, show_progress=False)
        assert (summary.ran, summary.finished) == (6, 6)
        views.append(_view(led, spec.experiment_id))
        if name == "ray":
            assert backend.workers == 2  # 2 CPUs, 1 CPU a trial
            prov = led.provenance(led.trials(spec.experiment_id)[0].provenance_id or "")
            assert prov["run"]["backend"] == "ray"
    assert views[0] == views[1]
    # a trial asking for both CPUs runs alone
    big = load_spec(write_spec(toy_spec(name="big", seeds=2, extra="resources = {cpus = 2}")))
    backend = RayBackend()
    run_experiment(big, Ledger(tmp_path / "big.db"), backend, show_progress=False)
    assert backend.workers == 1


def test_a_killed_ray_worker_is_retried_as_the_next_attempt(
    local_ray: None, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    spec = load_spec(write_spec(toy_spec(seeds=2, arms='[arms.victim]\nmode = "pidfile"\n')))
    led = Ledger(tmp_path / "w.db")
    summary = _run_killing_victims(spec, led, tmp_path, RayBackend())
    assert (summary.finished, summary.failed, summary.retried) == (4, 0, 2)
    by = {(t.arm, t.seed): t for t in led.trials(spec.experiment_id)}
    for seed in range(2):
        victim = by["victim", seed]
        assert (victim.status, victim.attempt) == ("finished", 2)
        # points flushed before the kill are kept, under the lost attempt
        assert {m[0] for m in led.metrics(victim.id) if m[3] == "before_kill"} == {1}
        assert victim.result == by["baseline", seed].result


def test_the_cli_says_which_extra_is_missing_and_which_flags_fit(
    write_spec: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import sys

    from fairtrial.cli import main

    path = str(write_spec(toy_spec(seeds=2)))
    store = str(tmp_path / "m.db")
    for argv, message in [
        (["--backend", "local", "--address", "x"], "--address is for --backend ray"),
        (["--backend", "ray", "--group", "2"], "--group is for --backend vectorized"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(["run", path, "--store", store, *argv])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(SystemExit) as exc:
        main(["run", path, "--backend", "ray", "--store", store])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and install_hint("ray") in err, err
    assert "Traceback" not in err
