"""``[ablations] factorial`` / ``fractional`` and ``[experiment] primary``, validated.

A factorial design over the components of one arm runs every combination of them (each one
on at its value in the arm, or off at the baseline's), or a 2^(k-p) fraction of those
combinations. A combination another arm already has (the baseline, the arm itself, a
leave-one-out ablation, a declared arm) runs as that arm; the others become arms of kind
``design`` named ``ARM.LETTERS`` (``proposed.AC``: factors A and C on), so every trial is an
ordinary trial with its identity, and a trial of an identical arm is never run twice.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from fairtrial.record import DesignInfo
from fairtrial.spec.errors import _listed, _show
from fairtrial.spec.limits import MAX_ARMS, valid_name
from fairtrial.spec.model import Arm, set_dotted
from fairtrial.spec.reading import _Loader
from fairtrial.spec.tables import _Ablations, _Experiment, _Hypothesis

#: the largest full factorial: 2^7 = 128 arms (a spec holds at most MAX_ARMS)
MAX_FACTORIAL = 7


def _parse_design(
    ld: _Loader,
    abl: _Ablations,
    arms: dict[str, Arm],
    baseline: dict[str, Any],
    by_components: dict[str, str],
    check_config: Callable[[str, dict[str, Any]], None],
) -> DesignInfo | None:
    """The design of ``[ablations]`` (None without one); adds the arms it needs to ``arms``."""
    if abl.factorial is not None and abl.fractional is not None:
        raise ld.fail("ablations", "fractional", "set one of 'factorial' or 'fractional', not both")
    kind = "factorial" if abl.factorial is not None else "fractional"
    target = abl.factorial if abl.factorial is not None else abl.fractional
    if target is None:
        for key in ("resolution", "interactions"):
            if getattr(abl, key) is not None:
                raise ld.fail(
                    "ablations",
                    key,
                    "only applies to a design: factorial = ARM or fractional = ARM",
                )
        return None
    if abl.resolution is not None and kind == "factorial":
        raise ld.fail(
            "ablations", "resolution", "only applies to fractional = ARM (a full factorial has all)"
        )
    declared = [a for a in arms.values() if a.kind == "arm"]
    if target not in arms or arms[target].kind != "arm":
        raise ld.fail(
            "ablations",
            f"{kind} = {_show(target)}",
            f"no such arm; valid: {_listed(a.name for a in declared) or 'none'}",
        )
    parent = arms[target]
    factors = tuple(sorted(parent.components))
    k = len(factors)
    least = 2 if kind == "factorial" else 3
    if k < least:
        raise ld.fail(
            "ablations",
            f"{kind} = {_show(target)}",
            f"arm '{target}' has {k} component{'s' if k != 1 else ''}; "
            + (
                "a factorial design needs at least 2"
                if kind == "factorial"
                else "a fraction needs at least 3 (use factorial = ARM)"
            ),
        )
    if kind == "factorial" and k > MAX_FACTORIAL:
        raise ld.fail(
            "ablations",
            f"factorial = {_show(target)}",
            f"arm '{target}' has {k} components: 2^{k} = {2**k} combinations; a full factorial "
            f"takes at most {MAX_FACTORIAL} (use fractional = {_show(target)})",
        )
    info = DesignInfo(
        arm=target,
        kind=kind,  # type: ignore[arg-type]
        factors=factors,
        resolution=(abl.resolution or 4) if kind == "fractional" else None,
        interactions=abl.interactions or 2,
    )
    if info.interactions > k:
        raise ld.fail(
            "ablations",
            f"interactions = {info.interactions}",
            f"arm '{target}' has {k} components: at most {k}",
        )
    try:
        design = info.build()
    except ValueError as exc:
        raise ld.fail("ablations", f"{kind} = {_show(target)}", str(exc)) from None
    for levels in design.runs:
        on = [
            (f, letter)
            for f, letter, lv in zip(factors, design.factors, levels, strict=True)
            if lv > 0
        ]
        kept = {f: parent.components[f] for f, _ in on}
        sig = json.dumps(kept, sort_keys=True)
        if not kept or sig in by_components:
            continue  # the baseline, or an arm the spec already has
        name = f"{target}.{''.join(letter for _, letter in on)}"
        if name in arms or not valid_name(name):
            raise ld.fail(
                f"arms.{name}",
                None,
                f"the design's combination of [arms.{target}] with "
                f"{', '.join(f for f, _ in on)} is named '{name}': rename this arm",
            )
        if len(arms) >= MAX_ARMS:
            raise ld.fail(
                "ablations",
                f"{kind} = {_show(target)}",
                f"the design makes more than {MAX_ARMS} arms; a spec has at most {MAX_ARMS}",
            )
        config = copy.deepcopy(baseline)
        for key, value in kept.items():
            set_dotted(config, key, value)
        check_config(f"arms.{target}", config)
        arms[name] = Arm(name, "design", config, kept, parent=target)
        by_components[sig] = name
    return info


def _check_primary(ld: _Loader, exp: _Experiment, hyp: _Hypothesis) -> None:
    """A speed trial (``primary`` a cost) needs the metric's non-inferiority margin, repeated
    timings, and, for time-to-target, a target."""
    if exp.primary == "metric":
        return
    key = f"primary = {_show(exp.primary)}"
    if hyp.smallest_effect is None:
        raise ld.fail(
            "hypothesis",
            "smallest_effect",
            f"{key} makes the metric a guard: set smallest_effect, how much worse the metric "
            "may be and still count as the same quality",
        )
    if exp.primary == "time_to_target" and exp.target is None:
        raise ld.fail(
            "experiment",
            key,
            "needs target = the value of the watched metric to reach (e.g. target = 0.95)",
        )
    if exp.deterministic:
        raise ld.fail(
            "experiment",
            key,
            "times vary from run to run: a speed trial needs seeds, not deterministic = true",
        )
