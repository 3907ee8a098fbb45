"""The README documents what the code does: options, spec keys, commands, example specs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from click.testing import CliRunner

from fairtrial.cli import cli
from fairtrial.spec import load_spec
from fairtrial.spec.tables import _Ablations, _Compute, _Experiment, _Hypothesis, _Slurm
from fairtrial.spec.tuning import _Tuning

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_recipe_options_section_is_generated_from_the_code() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from sync_readme import synced
    finally:
        sys.path.pop(0)
    assert synced(README) == README, "run: .venv/bin/python scripts/sync_readme.py"


def test_every_spec_key_is_documented() -> None:
    for model in (_Experiment, _Hypothesis, _Ablations, _Compute, _Tuning, _Slurm):
        for key in model.model_fields:
            assert f"| `{key}` |" in README or f"`{key} = " in README, key


def test_every_cli_command_is_documented() -> None:
    for name in cli.commands:
        assert f"fairtrial {name}" in README, name
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0


def test_the_two_commands_exist_and_ci_runs_the_test_command() -> None:
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert f"{script}" in README and (ROOT / script).exists()
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_the_demo_installs_what_the_readme_runs_next() -> None:
    """The .venv that scripts/demo.sh makes runs the quickstart and the registry's serve."""
    setup = re.search(r"^scripts/setup\.sh (\S+)$", (ROOT / "scripts/demo.sh").read_text(), re.M)
    assert setup is not None
    assert set(setup.group(1).split(",")) == {"sklearn", "torch", "server"}
    assert "and the `server` extra (for `fairtrial serve`)" in README


def test_example_specs_are_valid() -> None:
    for path in sorted((ROOT / "examples").glob("*/spec.toml")):
        spec = load_spec(path)
        assert spec.seeds >= 2 and len(spec.arms) >= 2
    readme_spec = re.search(r"```toml\n(\[experiment\].*?)```", README, re.S)
    assert readme_spec is not None
    from fairtrial.spec import parse_spec

    assert parse_spec(readme_spec.group(1)).name == "dropout-on-mnist1d"
