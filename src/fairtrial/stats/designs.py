"""Two-level factorial and fractional factorial designs: terms, runs, defining relations, aliases.

An arm that changes k components of the baseline defines k two-level factors: off (level -1,
the baseline's value) and on (level +1, the arm's value). :func:`full_factorial` gives all 2^k
combinations, :func:`fractional_factorial` a tabled 2^(k-p) fraction; the effects are
estimated by :mod:`fairtrial.stats.factorial`.

Factors are lettered A, B, C, ... in the order given, skipping I, which denotes the identity in
defining relations (Box, Hunter & Hunter 2005). A term is a string of letters: ``"A"`` a main
effect, ``"AB"`` the interaction of A and B. Runs are in standard (Yates) order: A alternates
fastest, run 0 has every factor off.

References
----------
Box, G. E. P., Hunter, J. S. & Hunter, W. G. (2005). *Statistics for Experimenters*, 2nd ed.,
Wiley, ch. 5-6 (effects as differences of averages; fractions, aliases, resolution).
Montgomery, D. C. (2017). *Design and Analysis of Experiments*, 9th ed., Wiley, Table 8.14
(selected 2^(k-p) fractional factorial designs).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fairtrial.stats._common import FloatArray, Result

#: factor letters; I is the identity of a defining relation, so no factor takes it
LETTERS = "ABCDEFGHJKLMNOPQRSTUVWXYZ"
#: the largest full factorial (256 runs)
MAX_FULL_K = 8

#: Montgomery (2017), Table 8.14: for k factors, the tabled 2^(k-p) fractions, largest first,
#: with the + sign of each generator; the first k - p factors form the base full factorial.
#: These are the minimum-aberration designs of their size (the same generators as the
#: NIST/SEMATECH e-Handbook, §5.3.3.4.7).
FRACTIONS: dict[int, tuple[tuple[str, ...], ...]] = {
    3: (("C=AB",),),
    4: (("D=ABC",),),
    5: (("E=ABCD",), ("D=AB", "E=AC")),
    6: (("F=ABCDE",), ("E=ABC", "F=BCD"), ("D=AB", "E=AC", "F=BC")),
    7: (
        ("G=ABCDEF",),
        ("F=ABCD", "G=ABDE"),
        ("E=ABC", "F=BCD", "G=ACD"),
        ("D=AB", "E=AC", "F=BC", "G=ABC"),
    ),
    8: (
        ("G=ABCD", "H=ABEF"),
        ("F=ABC", "G=ABD", "H=BCDE"),
        ("E=BCD", "F=ACD", "G=ABC", "H=ABD"),
    ),
    9: (
        ("H=ACDFG", "J=BCEFG"),
        ("G=ABCD", "H=ACEF", "J=CDEF"),
        ("F=BCDE", "G=ACDE", "H=ABDE", "J=ABCE"),
        ("E=ABC", "F=BCD", "G=ACD", "H=ABD", "J=ABCD"),
    ),
    10: (
        ("H=ABCG", "J=BCDE", "K=ACDF"),
        ("G=BCDF", "H=ACDF", "J=ABDE", "K=ABCE"),
        ("F=ABCD", "G=ABCE", "H=ABDE", "J=ACDE", "K=BCDE"),
        ("E=ABC", "F=BCD", "G=ACD", "H=ABD", "J=ABCD", "K=AB"),
    ),
    11: (
        ("H=ABCG", "J=BCDE", "K=ACDF", "L=ABCDEFG"),
        ("G=CDE", "H=ABCD", "J=ABF", "K=BDEF", "L=ADEF"),
        ("F=ABC", "G=BCD", "H=CDE", "J=ACD", "K=ADE", "L=BDE"),
        ("E=ABC", "F=BCD", "G=ACD", "H=ABD", "J=ABCD", "K=AB", "L=AC"),
    ),
}
MAX_TABLED_K = max(FRACTIONS)


# -- terms ----------------------------------------------------------------------------------------
def check_int(value: Any, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {span}, got {value}")
    return int(value)


def term_indexes(term: str, k: int | None = None) -> tuple[int, ...]:
    """The factor indexes of a term, ascending: ``"CA"`` → ``(0, 2)``.

    Each letter at most once; with ``k``, every letter must name one of the first k factors.
    """
    if not isinstance(term, str) or not term:
        raise ValueError(f"term must be a non-empty string of factor letters, got {term!r}")
    out: list[int] = []
    for ch in term:
        pos = LETTERS.find(ch)
        if pos < 0:
            raise ValueError(
                f"term {term!r} holds {ch!r}, not a factor letter (A-H, J, K, ...; I is the "
                "identity of the defining relation)"
            )
        if pos in out:
            raise ValueError(f"term {term!r} names factor {ch} twice")
        if k is not None and pos >= k:
            raise ValueError(
                f"term {term!r} names {ch}, but the design's factors are {LETTERS[:k]}"
            )
        out.append(pos)
    return tuple(sorted(out))


def term_name(indexes: Iterable[int]) -> str:
    """The term of some factor indexes: ``(0, 2)`` → ``"AC"``."""
    idx = sorted(set(indexes))
    if not idx or any(
        isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(LETTERS)
        for i in idx
    ):
        raise ValueError(f"indexes must be factor indexes from 0 to {len(LETTERS) - 1}, got {idx}")
    return "".join(LETTERS[i] for i in idx)


def _mask(term: str, k: int | None = None) -> int:
    return sum(1 << i for i in term_indexes(term, k))


def _name(mask: int) -> str:
    return "".join(LETTERS[i] for i in range(mask.bit_length()) if mask >> i & 1)


def _order_key(mask: int) -> tuple[int, tuple[int, ...]]:
    """Lower order first, then lexicographically by factor (AB < AC < BC)."""
    return bin(mask).count("1"), tuple(i for i in range(mask.bit_length()) if mask >> i & 1)


def terms(k: int, max_order: int | None = None) -> tuple[str, ...]:
    """Every term of k factors up to ``max_order`` (default: all), in the usual order: main
    effects, then two-factor interactions lexicographically (AB, AC, ..., BC, ...), and so on."""
    k = check_int(k, "k", 1, len(LETTERS))
    top = k if max_order is None else check_int(max_order, "max_order", 1)
    return tuple(
        term_name(c) for r in range(1, min(top, k) + 1) for c in itertools.combinations(range(k), r)
    )


def _roman(n: int) -> str:
    numerals = ((10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))
    out = ""
    for value, text in numerals:
        while n >= value:
            out, n = out + text, n - value
    return out


# -- designs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AliasChain(Result):
    """One row of :meth:`Design.alias_table`: a main effect or two-factor interaction, the terms
    of order at most ``max_order`` it is confounded with, how many higher-order ones were left
    out, and whether it is clear (aliased with no other main effect or two-factor interaction)."""

    term: str
    order: int
    aliases: tuple[str, ...]
    omitted: int
    clear: bool


@dataclass(frozen=True)
class Design(Result):
    """A two-level (fractional) factorial design.

    ``runs[j][i]`` is factor i's level (-1 off, +1 on) in run j; ``generators`` like
    ``("E=ABCD",)`` define the factors after the base ones (none for a full factorial);
    ``defining_relation`` holds every word of the defining contrast subgroup (I = each word),
    shortest first; ``resolution`` is the length of the shortest word (None for a full
    factorial, where no effect is aliased).
    """

    factors: tuple[str, ...]
    generators: tuple[str, ...]
    runs: tuple[tuple[int, ...], ...]
    resolution: int | None
    defining_relation: tuple[str, ...]
    name: str

    @property
    def k(self) -> int:
        return len(self.factors)

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    def matrix(self) -> FloatArray:
        """The runs as a float array (runs × factors) of -1/+1."""
        return np.asarray(self.runs, dtype=np.float64).reshape(self.n_runs, self.k)

    def column(self, term: str) -> FloatArray:
        """The term's contrast column: the product of its factors' levels in each run."""
        return np.asarray(self.matrix()[:, list(term_indexes(term, self.k))].prod(axis=1))

    def _words(self) -> list[int]:
        return [_mask(w, self.k) for w in self.defining_relation]

    def aliases(self, term: str) -> tuple[str, ...]:
        """The terms confounded with ``term`` (term × each word, I removed), shortest first.

        Empty for a full factorial. E.g. with I = ABCDE: ``aliases("AB") == ("CDE",)``.
        """
        m = _mask(term, self.k)
        return tuple(_name(a) for a in sorted({m ^ w for w in self._words()} - {0}, key=_order_key))

    def alias_table(self, max_order: int = 2) -> tuple[AliasChain, ...]:
        """For every main effect and two-factor interaction, its alias chain truncated at
        ``max_order`` (longer aliases are counted in ``omitted``), and whether it is clear."""
        max_order = check_int(max_order, "max_order", 1)
        words = self._words()
        rows = []
        for t in terms(self.k, 2):
            m = _mask(t)
            chain = sorted({m ^ w for w in words} - {0}, key=_order_key)
            short = [a for a in chain if _order_key(a)[0] <= max_order]
            rows.append(
                AliasChain(
                    term=t,
                    order=len(t),
                    aliases=tuple(_name(a) for a in short),
                    omitted=len(chain) - len(short),
                    clear=all(_order_key(a)[0] > 2 for a in chain),
                )
            )
        return tuple(rows)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["n_runs"] = self.n_runs
        out["alias_table"] = [c.to_dict() for c in self.alias_table()] if self.generators else []
        return out


def _yates(k: int) -> FloatArray:
    j = np.arange(2**k)[:, None]
    return np.where((j >> np.arange(k)) & 1, 1.0, -1.0)


def full_factorial(k: int) -> Design:
    """The 2^k full factorial in standard (Yates) order, for 1 to :data:`MAX_FULL_K` factors."""
    k = check_int(k, "k", 1, MAX_FULL_K)
    runs = tuple(tuple(int(v) for v in row) for row in _yates(k))
    return Design(
        factors=tuple(LETTERS[:k]),
        generators=(),
        runs=runs,
        resolution=None,
        defining_relation=(),
        name=f"2^{k} full factorial, {2**k} runs",
    )


def design_from_generators(k: int, generators: Sequence[str]) -> Design:
    """The 2^(k-p) fraction defined by p generators like ``"E=ABCD"``, in standard order.

    The first k - p factors form a full factorial; generator j defines factor k - p + j as the
    product of base factors. The design must have resolution III or more (no two main effects
    aliased), else ``ValueError``.
    """
    k = check_int(k, "k", 1, len(LETTERS))
    if isinstance(generators, str):
        generators = (generators,)
    p = len(generators)
    if not generators:
        return full_factorial(k)
    base = k - p
    if base < 2:
        raise ValueError(f"generators: {p} generators leave {base} base factors of {k}; at least 2")
    x = _yates(base)
    columns = [x[:, i] for i in range(base)]
    canonical, words = [], []
    for j, g in enumerate(generators):
        left, eq, right = str(g).replace(" ", "").partition("=")
        want = LETTERS[base + j]
        if not eq or left != want:
            raise ValueError(f"generator {g!r} must define factor {want}, like '{want}=ABC'")
        idx = term_indexes(right, base) if right else ()
        if not idx:
            raise ValueError(f"generator {g!r} needs base factors ({LETTERS[:base]}) after '='")
        columns.append(np.prod(x[:, list(idx)], axis=1))
        canonical.append(f"{want}={term_name(idx)}")
        words.append(_mask(right) | 1 << (base + j))
    relation = sorted(
        {
            int(np.bitwise_xor.reduce(combo))
            for r in range(1, p + 1)
            for combo in itertools.combinations(words, r)
        },
        key=_order_key,
    )
    resolution = _order_key(relation[0])[0]
    if resolution < 3:
        raise ValueError(
            f"generators {list(generators)} alias main effects (I = {_name(relation[0])}): "
            "a design needs resolution III or more"
        )
    n = 2**base
    plural = "generator" if p == 1 else "generators"
    gens = ", ".join(c.replace("=", " = ") for c in canonical)
    return Design(
        factors=tuple(LETTERS[:k]),
        generators=tuple(canonical),
        runs=tuple(tuple(int(v) for v in row) for row in np.column_stack(columns)),
        resolution=resolution,
        defining_relation=tuple(_name(w) for w in relation),
        name=(
            f"2^({k}-{p}) fractional factorial, resolution {_roman(resolution)}, {n} runs, "
            f"{plural} {gens}"
        ),
    )


def fractional_factorial(k: int, resolution: int = 4) -> Design:
    """The tabled design of k factors with the fewest runs that reaches ``resolution``.

    The candidates are the minimum-aberration 2^(k-p) fractions of Montgomery (2017),
    Table 8.14 (:data:`FRACTIONS`, k from 3 to 11) and the full factorial (up to
    :data:`MAX_FULL_K` factors), whose resolution is unbounded: when only the full factorial
    reaches the resolution (e.g. k = 4 at resolution V) it is the answer. Resolution III
    aliases main effects with two-factor interactions, IV two-factor interactions with each
    other, V leaves every main effect and two-factor interaction clear. ``ValueError`` when no
    tabled design reaches the resolution.
    """
    k = check_int(k, "k", 1, MAX_TABLED_K)
    resolution = check_int(resolution, "resolution", 3)
    candidates = [design_from_generators(k, g) for g in FRACTIONS.get(k, ())]
    if k <= MAX_FULL_K:
        candidates.append(full_factorial(k))
    fits = [d for d in candidates if d.resolution is None or d.resolution >= resolution]
    if not fits:
        best = max(d.resolution or 0 for d in candidates)
        raise ValueError(
            f"resolution: no tabled design of {k} factors reaches resolution "
            f"{_roman(resolution)} (the best has resolution {_roman(best)})"
        )
    return min(fits, key=lambda d: d.n_runs)


def estimable_terms(design: Design, max_order: int | None = None) -> tuple[str, ...]:
    """One term per alias chain, up to ``max_order``: in the order of :func:`terms`, each term
    is kept unless it is aliased with a term already kept (or with I, the mean), so every chain
    is represented by its lowest-order, lexicographically first term. All terms of a full
    factorial."""
    words = set(design._words())
    covered: set[int] = set()
    kept = []
    for t in terms(design.k, max_order):
        m = _mask(t)
        if m in covered or m in words:
            continue
        kept.append(t)
        covered |= {m ^ w for w in words} | {m}
    return tuple(kept)


def effect_contrasts(design: Design, y: Any, term_list: Sequence[str]) -> FloatArray:
    """Per row of ``y`` (seeds × runs, no NaN), each term's effect: the mean of the runs where
    the term's column is +1 minus the mean where it is -1 (Box, Hunter & Hunter 2005, ch. 5: a
    main effect is the average change from off to on; an interaction AB half the difference of
    A's effect at B on and B off). Returns seeds × terms."""
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"y must be a seeds × runs array of numbers: {exc}") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != design.n_runs:
        raise ValueError(
            f"y must be seeds × runs with one column per run of the design ({design.n_runs}), "
            f"got shape {arr.shape}"
        )
    cols = np.column_stack([design.column(t) for t in term_list]) if term_list else None
    if cols is None:
        return np.empty((arr.shape[0], 0))
    return np.asarray(arr @ cols / (design.n_runs / 2.0))
