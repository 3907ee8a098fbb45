"""Property-based fuzzing of the spec loader.

Hypothesis builds TOML documents from plausible keys and hostile values (NaN, infinities,
64-bit extremes, dates and times, NUL and control characters, Unicode digits, deep nesting,
refs to the standard library), mutates a valid spec byte by byte, and feeds raw bytes. For
every input :func:`fairtrial.spec.load_spec` either returns a spec that every store and bundle
can hold, or raises :class:`~fairtrial.errors.SpecError` with one printable line; it never
raises anything else, never hangs (a watchdog interrupts an example after a generous bound)
and never writes outside the spec's folder (an audit hook watches every file the process
opens for writing, creates, renames or removes). Derandomized: the same examples every run.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import RECIPES
from fairtrial.errors import SpecError
from fairtrial.spec import MAX_SEEDS, ROOT_SEED_END, Spec, load_spec


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


#: an example still running after this many seconds hangs (loading a spec takes milliseconds)
WATCHDOG_S = 30

GOOD = """[experiment]
name = "fuzz"
task = "digits"
recipe = "toy:probe"
seeds = 3
root_seed = 7

[hypothesis]
smallest_effect = 0.01

[baseline]
noise = 0.0
mode = "ok"
opt.lr = 0.1

[arms.noisy]
noise = 0.5
opt.lr = 0.2

[ablations]
leave_one_out = "noisy"
"""

# -- watching writes -------------------------------------------------------------------------

_ALLOWED: list[Path] = []  # the folder a spec loads from, while one loads; empty otherwise
_OUTSIDE: list[str] = []
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_CHANGES = {
    "os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link",
    "os.truncate", "os.chmod", "os.chown", "os.utime", "shutil.rmtree", "shutil.copyfile",
    "shutil.copytree", "shutil.move",
}  # fmt: skip


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _ALLOWED:
        return
    if event == "open":
        path, mode, flags = args
        writing = (
            flags & _WRITE_FLAGS
            if isinstance(flags, int)
            else isinstance(mode, str) and any(c in mode for c in "wax+")
        )
        paths = [path] if writing else []
    elif event in _CHANGES:
        paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
    else:
        return
    for raw in paths:
        if isinstance(raw, int):
            continue  # a descriptor: its open was seen
        path = Path(os.fsdecode(raw))
        path = path if path.is_absolute() else Path.cwd() / path
        # importing a module caches its bytecode beside it: not the loader's doing
        if "__pycache__" in path.parts:
            continue
        if not path.resolve().is_relative_to(_ALLOWED[0]):
            _OUTSIDE.append(f"{event} {path}")


sys.addaudithook(_audit)


class Hung(Exception):
    """An example ran past the watchdog."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hung(f"loading one spec took more than {WATCHDOG_S} s")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spec folder with the toy recipes beside it (one for all examples of a test)."""
    path = tmp_path_factory.mktemp("spec-fuzz").resolve()
    for src in RECIPES.glob("*.py"):
        shutil.copy(src, path / src.name)
    return path


def load_watched(folder: Path, data: bytes) -> Spec | None:
    """Load ``data`` as a spec file in ``folder``; the spec, or None if it was refused."""
    path = folder / "spec.toml"
    path.write_bytes(data)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, WATCHDOG_S)
    _ALLOWED.append(folder)
    try:
        return load_spec(path)
    except SpecError as exc:
        message = str(exc)
        assert message.isprintable(), f"not one printable line: {message!r}"
        assert message.startswith(str(path)), message
        return None
    finally:
        _ALLOWED.clear()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        outside, _OUTSIDE[:] = list(_OUTSIDE), []
        assert not outside, f"wrote outside {folder}: {outside}"


def assert_storable(spec: Spec) -> None:
    """What an accepted spec must be: within the stores' integers, strict JSON throughout."""
    assert 2 <= spec.seeds <= MAX_SEEDS and 0 <= spec.root_seed < ROOT_SEED_END
    json.dumps(spec.normalized(), allow_nan=False)
    json.dumps(spec.arm_table(), allow_nan=False)
    for arm in spec.arms.values():
        json.dumps(arm.config, allow_nan=False)
        assert len(arm.name) <= 200  # the stores' arm column


# -- TOML documents from hostile parts -------------------------------------------------------

KEYS = [
    "name", "task", "recipe", "command", "seeds", "max_seeds", "deterministic", "root_seed",
    "metric", "target", "time_limit", "description", "max_retries", "resources", "claim",
    "smallest_effect", "alpha", "power", "leave_one_out", "pue", "grid_intensity",
    "estimate_energy", "cpu_watts", "noise", "mode", "opt", "lr", "C", "max_iter", "tol",
    "max_features", "cpus", "gpus",
]  # fmt: skip
ODD_KEYS = [
    "", " ", "a.b", "a\x00b", "x\ny", "²", "x\u202ey", "k" * 120, "..", "/../../evil",
    "baseline", "noisy-no-noise", "-", "_",
]  # fmt: skip
STRINGS = [
    "", "auto", "digits", "breast_cancer", "mnist1d@²", "mnist1d@٣", "digits@1", "os:getcwd",
    "os:abort", "builtins:print", "fairtrial.cli:main", "fairtrial.spec:flatten", "../x:y",
    "toy:probe", "toy:probe\n", "toy:nothing", "logistic", "gradient_boosting", "accuracy",
    "a\x00b", 'echo "x', "echo '", "python3 {nope}", "run {seed} {noise}", "{{seed}}", "x" * 300,
    "noisy", "cpu", "\u202e", "\r\n",
]  # fmt: skip

keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(ODD_KEYS), st.text(max_size=8))
#: the extremes of each TOML type, a TOML date and time among them
EXTREMES = [
    0, 1, -1, 2, 3, 5, 2**31 - 1, 2**31, 2**63 - 1, -(2**63), 10**9,
    float("nan"), float("inf"), -float("inf"), -0.0, 5e-324, 1e-300, 1e300, 0.5,
    datetime.date(1979, 5, 27), datetime.time(7, 32), datetime.datetime(1979, 5, 27, 7, 32),
]  # fmt: skip
scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(STRINGS),
    st.sampled_from(EXTREMES),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=4,
)
config = st.dictionaries(keys, values, max_size=3)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A spec document: mostly valid [experiment] keys (to reach the deeper checks), any of
    them hostile, and hostile [baseline], [arms.*], [hypothesis], [ablations], [compute]."""

    def often(valid: Any) -> Any:
        return draw(st.one_of(st.just(valid), st.just(valid), values))

    experiment: dict[str, Any] = {
        "name": often("fz"),
        "task": often(draw(st.sampled_from(["digits", "breast_cancer"]))),
        "seeds": often(3),
    }
    kind = draw(st.sampled_from(["toy", "builtin", "command", "any"]))
    if kind == "toy":
        experiment["recipe"] = "toy:probe"
    elif kind == "builtin":
        experiment["recipe"] = draw(st.sampled_from(["logistic", "gradient_boosting"]))
    elif kind == "command":
        experiment["command"] = often("python3 -c pass {seed}")
    else:
        experiment["recipe"] = draw(values)
    experiment.update(draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=2)))
    doc: dict[str, Any] = {"experiment": experiment}
    if kind == "builtin":
        options = ["C", "max_iter", "tol", "standardize", "learning_rate", "max_features"]
        base = draw(st.dictionaries(st.sampled_from(options), values, max_size=3))
    else:
        base = draw(st.one_of(st.just({"noise": 0.0, "mode": "ok"}), config))
    doc["baseline"] = base
    doc["arms"] = draw(
        st.dictionaries(
            st.one_of(st.sampled_from(["a", "b", "a-no-noise", "baseline"]), keys),
            st.one_of(
                st.dictionaries(st.sampled_from([*base, "noise"]), values, max_size=2), config
            ),
            max_size=3,
        )
    )
    for table in ("hypothesis", "ablations", "compute"):
        if draw(st.booleans()):
            doc[table] = draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=2))
    if draw(st.integers(0, 9)) == 7:
        doc[draw(keys)] = draw(values)  # a top-level key or table of any name
    return doc


#: valid specs (recipe or command, baseline, arms), each to receive a few hostile values
BASES: dict[str, dict[str, Any]] = {
    "toy": {
        "experiment": {"recipe": "toy:probe"},
        "baseline": {"noise": 0.0, "mode": "ok", "opt": {"lr": 0.1}},
        "arms": {"noisy": {"noise": 0.5, "opt": {"lr": 0.2}}},
        "ablations": {"leave_one_out": "noisy"},
    },
    "logistic": {
        "experiment": {"recipe": "logistic"},
        "baseline": {"C": 1.0, "max_iter": 100, "tol": 1e-4},
        "arms": {"strong": {"C": 0.1}},
    },
    "gradient_boosting": {
        "experiment": {"recipe": "gradient_boosting"},
        "baseline": {"learning_rate": 0.1, "max_features": 1.0, "max_iter": 10},
        "arms": {"slow": {"learning_rate": 0.05}},
    },
    "command": {
        "experiment": {"command": "python3 -c pass {seed} {noise}"},
        "baseline": {"noise": 0.0},
        "arms": {"noisy": {"noise": 0.5}},
    },
}
CONFIG_KEYS = ["noise", "mode", "opt.lr", "opt", "C", "max_iter", "tol", "learning_rate"]
PLACES = [
    "experiment", "hypothesis", "compute", "ablations", "",
    *["baseline", "arm", "new arm"] * 2,
]  # fmt: skip
#: the values a spec must refuse, or hold and store as they are
HOSTILE = [
    float("nan"), float("inf"), -float("inf"), 2**63 - 1, -(2**63), 2**31, -1, 0, 10**9,
    datetime.date(1979, 5, 27), datetime.time(7, 32), datetime.datetime(1979, 5, 27, 7, 32),
    "a\x00b", "", "x" * 300, "toy:probe\n", "os:getcwd", [], {}, [float("nan")],
    {"a": float("inf")}, [[[]]], True,
]  # fmt: skip


@st.composite
def injected(draw: st.DrawFn) -> dict[str, Any]:
    """A valid spec with one to three hostile values put in: each check is reached with the
    rest of the spec valid, where a document built from scratch mostly fails early."""
    base = BASES[draw(st.sampled_from(sorted(BASES)))]
    doc: dict[str, Any] = json.loads(json.dumps(base))
    doc["experiment"].update(name="fz", task="digits", seeds=3)
    for _ in range(draw(st.integers(1, 2))):
        place = draw(st.sampled_from(PLACES))
        config = place in ("baseline", "arm", "new arm")
        known = st.sampled_from(CONFIG_KEYS if config else KEYS)
        key = draw(st.one_of(known, known, known, keys))
        if place == "arm":
            table = next(iter(doc["arms"].values()))
        elif place == "new arm":
            table = doc["arms"].setdefault(draw(st.sampled_from(["b", "c", "noisy-no-noise"])), {})
        elif place:
            table = doc.setdefault(place, {})
        else:
            table = doc
        *parents, last = key.split(".") if config else [key]
        for parent in parents:
            if not isinstance(table.get(parent), dict):
                table[parent] = {}
            table = table[parent]
        table[last] = draw(st.one_of(st.sampled_from(HOSTILE), values))
    return doc


def _string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _inline(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # repr spells nan, inf and -inf as TOML does
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return "{" + ", ".join(f"{_string(k)} = {_inline(v)}" for k, v in value.items()) + "}"


def to_toml(doc: dict[str, Any]) -> str:
    """``doc`` as TOML: plain values first, then one [table] per mapping."""
    lines = [f"{_string(k)} = {_inline(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{_string(name)}]")
            lines += [f"{_string(k)} = {_inline(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def test_the_toml_writer_round_trips() -> None:
    """The fuzzer's TOML is what it means (else it would test the writer, not the loader)."""
    import tomllib

    doc = {
        "experiment": {"a\x00\n": [float("inf"), -(2**63), datetime.date(1979, 5, 27)]},
        "x": {"y": {"": datetime.time(7, 32)}},
    }
    assert tomllib.loads(to_toml(doc)) == doc


@fuzz(80)
@given(doc=documents())
def test_hostile_documents_load_or_raise_one_spec_error(folder: Path, doc: dict[str, Any]) -> None:
    spec = load_watched(folder, to_toml(doc).encode())
    if spec is not None:
        assert_storable(spec)


@pytest.mark.parametrize("name", sorted(BASES))
def test_the_bases_are_valid(folder: Path, name: str) -> None:
    """Without its hostile values a document of :func:`injected` loads."""
    doc = json.loads(json.dumps(BASES[name]))
    doc["experiment"].update(name="fz", task="digits", seeds=3)
    spec = load_watched(folder, to_toml(doc).encode())
    assert spec is not None
    assert_storable(spec)


@fuzz(150)
@given(doc=injected())
def test_valid_specs_with_hostile_values_load_storable_or_raise_one_spec_error(
    folder: Path, doc: dict[str, Any]
) -> None:
    spec = load_watched(folder, to_toml(doc).encode())
    if spec is not None:
        assert_storable(spec)


# -- text around the documents: nesting, long numbers, mutations, raw bytes ------------------


@fuzz(50)
@given(
    depth=st.integers(1, 600),
    opening=st.sampled_from(["[", "{a = ", "{a = [", "[{a = "]),
    where=st.sampled_from(["baseline", "experiment", "arms.noisy", "hypothesis"]),
)
def test_deep_nesting_is_refused_without_a_recursion_error(
    folder: Path, depth: int, opening: str, where: str
) -> None:
    closing = "".join({"[": "]", "{": "}"}[c] for c in reversed(opening) if c in "[{")
    value = opening * depth + "1" * ("=" in opening) + closing * depth
    text = GOOD.replace(f"[{where}]\n", f"[{where}]\nnested = {value}\n", 1)
    spec = load_watched(folder, text.encode())
    if spec is not None:
        assert_storable(spec)


@fuzz(40)
@given(digits=st.integers(1, 6000), sign=st.sampled_from(["", "-", "+"]))
def test_integers_of_any_length_are_refused_past_64_bits(
    folder: Path, digits: int, sign: str
) -> None:
    text = GOOD.replace("noise = 0.0", f"noise = {sign}{'9' * digits}")
    spec = load_watched(folder, text.encode())
    assert (spec is not None) == (digits <= 18)


@fuzz(100)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(GOOD)), st.integers(0, 3), st.binary(max_size=4)),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_specs_load_or_raise_one_spec_error(
    folder: Path, edits: list[tuple[int, int, bytes]]
) -> None:
    data = bytearray(GOOD.encode())
    for at, cut, insert in edits:
        data[at : at + cut] = insert
    spec = load_watched(folder, bytes(data))
    if spec is not None:
        assert_storable(spec)


@fuzz(100)
@given(data=st.binary(max_size=2000))
def test_raw_bytes_load_or_raise_one_spec_error(folder: Path, data: bytes) -> None:
    spec = load_watched(folder, data)
    if spec is not None:
        assert_storable(spec)
