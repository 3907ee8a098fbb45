"""Spec validation: one clear error per class of mistake, naming file, line/key and the fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fairtrial.errors import SpecError
from fairtrial.spec import load_spec

GOOD = """
[experiment]
name = "warmup-on-digits"
task = "digits"
recipe = "toy:probe"
seeds = 3

[hypothesis]
claim = "noise helps"
smallest_effect = 0.005

[baseline]
noise = 0.0
mode = "ok"
optimizer.lr = 0.001
optimizer.name = "adam"

[arms.proposed]
noise = 0.5
optimizer.lr = 0.01

[ablations]
leave_one_out = "proposed"
"""


def error(write_spec: Callable[..., Path], body: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(body))
    msg = str(info.value)
    assert "\n" not in msg, "errors are one line"
    return msg


def test_good_spec_with_nested_keys_and_ablations(write_spec: Callable[..., Path]) -> None:
    spec = load_spec(write_spec(GOOD))
    assert list(spec.arms) == [
        "baseline",
        "proposed",
        "proposed-no-noise",
        "proposed-no-optimizer.lr",
    ]
    assert spec.arms["proposed"].components == {"noise": 0.5, "optimizer.lr": 0.01}
    assert spec.arms["proposed"].config["optimizer"] == {"lr": 0.01, "name": "adam"}
    # removing a component puts the baseline's value back
    assert spec.arms["proposed-no-noise"].config == {
        "noise": 0.0,
        "mode": "ok",
        "optimizer": {"lr": 0.01, "name": "adam"},
    }
    assert spec.arms["proposed-no-optimizer.lr"].components == {"noise": 0.5}
    assert spec.metric == "accuracy" and spec.direction == "max"
    assert spec.hypothesis.smallest_effect == 0.005
    assert len(spec.task_checksum) == 64


def test_hash_is_stable_and_covers_the_spec(write_spec: Callable[..., Path]) -> None:
    a = load_spec(write_spec(GOOD, "a.toml"))
    b = load_spec(write_spec(GOOD.replace("# nothing", ""), "b.toml"))
    c = load_spec(write_spec(GOOD.replace("seeds = 3", "seeds = 4"), "c.toml"))
    assert a.spec_hash == b.spec_hash
    assert a.spec_hash != c.spec_hash
    assert a.experiment_id == a.spec_hash[:12]


def test_reordering_keys_does_not_change_the_hash(write_spec: Callable[..., Path]) -> None:
    swapped = GOOD.replace('noise = 0.0\nmode = "ok"', 'mode = "ok"\nnoise = 0.0')
    assert swapped != GOOD
    assert (
        load_spec(write_spec(GOOD, "a.toml")).spec_hash
        == load_spec(write_spec(swapped, "b.toml")).spec_hash
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # unknown key, with a suggestion and the valid keys
        (
            ("seeds = 3", "sedes = 3"),
            ["spec.toml:6:", "[experiment] sedes", "did you mean 'seeds'"],
        ),
        # wrong type
        (("seeds = 3", 'seeds = "three"'), ["spec.toml:6:", "seeds", "a whole number >= 2"]),
        # seeds < 2
        (("seeds = 3", "seeds = 1"), ["spec.toml:6:", "seeds = 1", "at least 2"]),
        # unknown task
        (
            ('task = "digits"', 'task = "digitz"'),
            ["spec.toml:4:", "unknown task 'digitz'", "mnist1d"],
        ),
        # unknown table
        (("[ablations]", "[ablation]"), ["unknown table [ablation]", "did you mean [ablations]"]),
        # arm overriding a key the baseline does not have
        (("noise = 0.5", "noyse = 0.5"), ["[arms.proposed] noyse", "baseline has no such key"]),
        # missing required key
        (('task = "digits"\n', ""), ["[experiment]", "missing required key 'task'"]),
        # both recipe and command
        (('recipe = "toy:probe"', 'recipe = "toy:probe"\ncommand = "x"'), ["exactly one of"]),
        # unknown recipe module
        (
            ('recipe = "toy:probe"', 'recipe = "nope:train"'),
            ["recipe", "cannot import module 'nope'"],
        ),
        # unknown built-in recipe
        (('recipe = "toy:probe"', 'recipe = "resnet"'), ["unknown recipe", "mlp"]),
        # unknown metric for the task
        (("seeds = 3", 'seeds = 3\nmetric = "mse"'), ['metric = "mse"', "accuracy"]),
        # alpha out of range
        (
            ("smallest_effect = 0.005", "smallest_effect = 0.005\nalpha = 1.5"),
            ["alpha", "between 0 and 1"],
        ),
        # leave-one-out of an arm that does not exist
        (
            ('leave_one_out = "proposed"', 'leave_one_out = "propsed"'),
            ["[ablations]", "no such arm", "proposed"],
        ),
        # an arm equal to the baseline on a key
        (("noise = 0.5", "noise = 0.0"), ["[arms.proposed] noise", "equals the baseline"]),
        # TOML syntax error with its line
        (("seeds = 3", "seeds = = 3"), ["spec.toml:6:", "invalid TOML"]),
    ],
)
def test_each_mistake_gets_one_clear_error(
    write_spec: Callable[..., Path], change: tuple[str, str], expected: list[str]
) -> None:
    assert change[0] in GOOD
    msg = error(write_spec, GOOD.replace(change[0], change[1], 1))
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_duplicate_arm_declared_twice_is_a_toml_error(write_spec: Callable[..., Path]) -> None:
    msg = error(write_spec, GOOD + "\n[arms.proposed]\nnoise = 0.2\n")
    assert "invalid TOML" in msg and "spec.toml:" in msg


def test_two_arms_with_the_same_changes_are_duplicates(write_spec: Callable[..., Path]) -> None:
    msg = error(write_spec, GOOD + "\n[arms.again]\nnoise = 0.5\noptimizer.lr = 0.01\n")
    assert "[arms.again]" in msg and "duplicate arm" in msg and "[arms.proposed]" in msg


def test_an_arm_named_baseline_is_refused(write_spec: Callable[..., Path]) -> None:
    msg = error(write_spec, GOOD + "\n[arms.baseline]\nnoise = 0.2\n")
    assert "duplicate arm" in msg


def test_declared_arm_equal_to_an_ablation_is_reused(write_spec: Callable[..., Path]) -> None:
    spec = load_spec(write_spec(GOOD + "\n[arms.noise_only]\nnoise = 0.5\n"))
    assert "proposed-no-optimizer.lr" not in spec.arms
    assert {(a.removed, a.as_arm) for a in spec.ablations} == {
        ("optimizer.lr", "noise_only"),
        ("noise", "proposed-no-noise"),
    }


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.toml")


def test_builtin_recipe_options_are_checked(write_spec: Callable[..., Path]) -> None:
    body = """
    [experiment]
    name = "x"
    task = "digits"
    recipe = "logistic"
    seeds = 2
    [baseline]
    C = 1.0
    max_iters = 10
    """
    msg = error(write_spec, body)
    assert "[baseline] max_iters" in msg and "valid:" in msg and "max_iter" in msg
    msg = error(write_spec, body.replace("max_iters = 10", 'max_iter = "ten"'))
    assert "max_iter" in msg and "whole number" in msg


def test_command_placeholders_are_checked(write_spec: Callable[..., Path]) -> None:
    body = """
    [experiment]
    name = "x"
    task = "digits"
    command = "prog --lr {lr} --seed {seed} --data {data_dir} --oops {nope}"
    seeds = 2
    [baseline]
    lr = 0.1
    """
    msg = error(write_spec, body)
    assert "unknown placeholder {nope}" in msg and "data_dir" in msg and "lr" in msg
    load_spec(write_spec(body.replace(" --oops {nope}", "")))
