"""Statistics of one claim across several tasks: rank tests over per-task effects, the Friedman
test with Wilcoxon-Holm groups for a critical-difference diagram, a stratified paired bootstrap
of normalised per-task effects, and performance profiles.

The unit of evidence here is the task: each task contributes one number per arm (its mean over
seeds) to the rank tests, and its seeds are resampled only within it by the bootstrap.

Differences (and scores within one task) equal up to a relative ``1e-9`` of the largest
magnitude count as ties, and differences that small as zeros, so that decimal scores tie as
they do on paper (``.768 - .763`` and ``.936 - .931`` differ in binary floating point).

References
----------
Wilcoxon, F. (1945). Individual comparisons by ranking methods. *Biometrics Bulletin* 1(6),
80-83.
Pratt, J. W. (1959). Remarks on zeros and ties in the Wilcoxon signed rank procedures. *JASA*
54(287), 655-667.
Demšar, J. (2006). Statistical comparisons of classifiers over multiple data sets. *JMLR* 7,
1-30 (§3.1.3 the Wilcoxon signed-ranks test and its zeros, §3.1.4 the sign test, §3.2.2 the
Friedman test and the Iman-Davenport statistic).
Friedman, M. (1937). The use of ranks to avoid the assumption of normality implicit in the
analysis of variance. *JASA* 32(200), 675-701.
Iman, R. L. & Davenport, J. M. (1980). Approximations of the critical region of the Friedman
statistic. *Communications in Statistics - Theory and Methods* 9(6), 571-595.
Conover, W. J. (1999). *Practical Nonparametric Statistics*, 3rd ed., §5.8 (Friedman's
statistic with ties).
Benavoli, A., Corani, G. & Mangili, F. (2016). Should we really use post-hoc tests based on
mean-ranks? *JMLR* 17(5), 1-10.
Ismail Fawaz, H., Forestier, G., Weber, J., Idoumghar, L. & Muller, P.-A. (2019). Deep
learning for time series classification: a review. *Data Mining and Knowledge Discovery* 33(4),
917-963 (the Wilcoxon-Holm critical-difference diagram).
Dolan, E. D. & Moré, J. J. (2002). Benchmarking optimization software with performance
profiles. *Mathematical Programming* 91(2), 201-213.
Agarwal, R. et al. (2021). Deep reinforcement learning at the edge of the statistical
precipice. *NeurIPS 2021* (stratified bootstrap, IQM over tasks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fairtrial.stats._common import (
    FloatArray,
    Result,
    as_sample,
    check_alpha,
    check_resamples,
)
from fairtrial.stats.multiple import holm

ZERO_METHODS = ("demsar", "wilcox", "pratt")
NORMALISATIONS = ("none", "baseline", "sd")
PROFILE_MEASURES = ("ratio", "gap")
MAX_EXACT_N = 25
_REL_TIE = 1e-9

IntArray = npt.NDArray[np.int64]


# -- ranks ----------------------------------------------------------------------------------------
def _tolerance(values: FloatArray) -> float:
    return _REL_TIE * float(np.max(np.abs(values))) if len(values) else 0.0


def _tie_groups(values: FloatArray, tol: float) -> tuple[FloatArray, list[int]]:
    """Average ranks (1 = smallest) of ``values`` and the sizes of the tie groups.

    Sorted neighbours closer than ``tol`` share a group, and each member gets the group's
    average position, so every rank is a multiple of one half.
    """
    n = len(values)
    if n == 0:
        return np.zeros(0), []
    order = np.argsort(values, kind="stable")
    srt = values[order]
    starts = np.concatenate(([True], np.diff(srt) > tol))
    group = np.cumsum(starts) - 1
    positions = np.arange(1, n + 1, dtype=np.float64)
    sizes = np.bincount(group)
    mean_pos = np.bincount(group, weights=positions) / sizes
    ranks = np.empty(n)
    ranks[order] = mean_pos[group]
    return ranks, [int(s) for s in sizes]


# -- Wilcoxon signed-rank test --------------------------------------------------------------------
@dataclass(frozen=True)
class SignedRankTest(Result):
    """Result of :func:`wilcoxon_signed_rank`.

    ``r_plus``/``r_minus``: sums of the ranks of the positive/negative differences (with the
    zeros' share, see ``zero_method``); ``statistic`` is ``T = min(r_plus, r_minus)``. ``n`` is
    the number of differences ranked (after the zero rule), ``zeros`` the zero differences in
    the input. ``min_p`` is the smallest two-sided p-value this test could give with these
    ranks, reached when every nonzero difference has the same sign: when it is not below the
    level, no outcome of these tasks could have been significant.
    """

    r_plus: float
    r_minus: float
    statistic: float
    pvalue: float
    min_p: float
    n: int
    zeros: int
    exact: bool
    zero_method: str
    method: str


def _signed_rank_pvalues(ranks2: IntArray, sums: Sequence[int], exact: bool) -> list[float]:
    """Two-sided p-values of sums ``sums`` of the doubled ranks that came out positive.

    Under the null each nonzero difference is as likely positive as negative, whatever its
    (possibly tied, average) rank, so the statistic is a sum of independent terms
    ``ranks2[i] * B_i`` with fair coins ``B_i``. The exact distribution is built by dynamic
    programming over the integer doubled ranks (every one of the ``2^m`` sign vectors); the
    normal approximation uses its exact mean and variance, ``sum(r)/2`` and ``sum(r^2)/4``,
    which is the usual tie-corrected variance.
    """
    m = len(ranks2)
    if m == 0:
        return [1.0 for _ in sums]
    total = int(ranks2.sum())
    if exact:
        # Probabilities halved at each step: dyadic, so exact in floating point up to 52 terms.
        prob = np.zeros(total + 1)
        prob[0] = 1.0
        for w in ranks2:
            prob[w:] = prob[w:] + prob[: total + 1 - w]
            prob *= 0.5
        dev = np.abs(2 * np.arange(total + 1) - total)
        return [min(1.0, float(prob[dev >= abs(2 * s - total)].sum())) for s in sums]
    r = ranks2 / 2.0
    sd = math.sqrt(float(np.sum(r**2)) / 4.0)
    zs = [(s / 2.0 - float(r.sum()) / 2.0) / sd for s in sums]
    return [min(1.0, math.erfc(abs(z) / math.sqrt(2.0))) for z in zs]


def _zero_words(zero_method: str, zeros: int) -> str:
    if zeros == 0:
        return "no zero differences"
    plural = "difference" if zeros == 1 else "differences"
    if zero_method == "wilcox":
        return f"{zeros} zero {plural} dropped before ranking (Wilcoxon)"
    if zero_method == "pratt":
        return f"{zeros} zero {plural} ranked, their ranks then left out (Pratt)"
    words = f"{zeros} zero {plural}: ranks split evenly between R+ and R- (Demšar)"
    return words + ("; one ignored, as their number is odd" if zeros % 2 else "")


def wilcoxon_signed_rank(
    diffs: Any, *, zero_method: str = "demsar", max_exact_n: int = MAX_EXACT_N
) -> SignedRankTest:
    """Wilcoxon signed-rank test of per-task differences (Wilcoxon 1945; Demšar 2006, §3.1.3).

    ``diffs``: one difference per task, e.g. the mean over seeds of ``arm - against``. The
    absolute differences are ranked (1 = smallest, ties get average ranks) and ``R+``/``R-``
    sum the ranks of the positive/negative ones. Zero differences, by ``zero_method``:

    * ``"demsar"`` (default): zeros are ranked with the rest and their ranks split evenly
      between ``R+`` and ``R-``; of an odd number of zeros one is ignored (Demšar 2006). The
      zeros' share is the same in every sign arrangement, so it shifts both sums and leaves
      the p-value to the nonzero differences; ``n`` counts the zeros kept.
    * ``"wilcox"``: zeros are dropped before ranking (Wilcoxon 1945; scipy's default).
    * ``"pratt"``: zeros are ranked, then their ranks left out of both sums (Pratt 1959).

    The two-sided p-value is exact up to ``max_exact_n`` (25) ranked differences: the null
    distribution of the signed-rank sum is enumerated with the actual ranks, so it stays exact
    with ties and zeros (scipy's ``method="exact"`` is exact only without them). Beyond, the
    normal approximation with the tie-corrected variance, without continuity correction
    (scipy's ``method="asymptotic", correction=False``; with Demšar's zeros the variance is
    that of the nonzero ranks only, since the zeros' share never changes, where scipy's
    ``"zsplit"`` counts the zeros as if they had signs). ``min_p`` is the smallest p-value
    reachable with these ranks: ``2 / 2**m`` with ``m`` nonzero differences (exact), e.g.
    0.0625 for 5 tasks, so 5 tasks can never be significant at 0.05.
    """
    d = as_sample(diffs, "diffs")
    max_exact_n = check_resamples(max_exact_n, "max_exact_n", minimum=0)
    if zero_method not in ZERO_METHODS:
        raise ValueError(
            f"zero_method must be one of {', '.join(repr(z) for z in ZERO_METHODS)}, "
            f"got {zero_method!r}"
        )
    tol = _tolerance(d)
    is_zero = np.abs(d) <= tol
    zeros = int(is_zero.sum())
    keep = np.ones(len(d), dtype=bool)
    if zero_method == "wilcox":
        keep = ~is_zero
    elif zero_method == "demsar" and zeros % 2:
        keep[int(np.flatnonzero(is_zero)[0])] = False
    kept = np.where(is_zero, 0.0, d)[keep]
    kept_zero = is_zero[keep]
    n = len(kept)
    ranks, _ = _tie_groups(np.abs(kept), tol)
    ranks2 = np.rint(2.0 * ranks).astype(np.int64)
    pos, neg = kept > 0.0, kept < 0.0
    r_plus = float(ranks2[pos].sum()) / 2.0
    r_minus = float(ranks2[neg].sum()) / 2.0
    if zero_method == "demsar":
        share = float(ranks2[kept_zero].sum()) / 4.0
        r_plus, r_minus = r_plus + share, r_minus + share
    nonzero = ranks2[~kept_zero]
    exact = n <= max_exact_n
    s = int(ranks2[pos].sum())
    pvalue, min_p = _signed_rank_pvalues(nonzero, [s, int(nonzero.sum())], exact)
    kind = "exact" if exact else "normal approximation, tie-corrected variance"
    return SignedRankTest(
        r_plus=r_plus,
        r_minus=r_minus,
        statistic=min(r_plus, r_minus),
        pvalue=pvalue,
        min_p=min_p,
        n=n,
        zeros=zeros,
        exact=exact,
        zero_method=zero_method,
        method=f"{kind}; {_zero_words(zero_method, zeros)}",
    )


# -- sign test ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SignTest(Result):
    """Result of :func:`sign_test`: ``wins`` (difference > 0), ``losses``, ``ties``; ``n`` the
    count the binomial test used (ties split, an odd one dropped)."""

    wins: int
    losses: int
    ties: int
    n: int
    pvalue: float
    min_p: float
    method: str


def _binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial p-value for ``k`` of ``n`` at probability 1/2 (symmetric, so
    twice the smaller tail, capped at 1, as ``scipy.stats.binomtest``)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1))
    return min(1.0, 2.0 * tail / 2.0**n)


def sign_test(diffs: Any) -> SignTest:
    """Sign test of per-task differences (Demšar 2006, §3.1.4).

    Counts the tasks an arm wins (difference > 0) and loses; under the null the wins are
    Binomial(n, 1/2). Ties are split evenly between wins and losses and, if their number is
    odd, one is ignored, as Demšar does; the two-sided p-value is the exact binomial one.
    ``min_p = 2 / 2**n``: the p-value of a clean sweep, the best these tasks could ever give.
    """
    d = as_sample(diffs, "diffs")
    tol = _tolerance(d)
    wins = int(np.sum(d > tol))
    losses = int(np.sum(d < -tol))
    ties = len(d) - wins - losses
    split = ties // 2
    n = wins + losses + 2 * split
    k = wins + split
    words = "no ties" if ties == 0 else f"{ties} ties split evenly"
    if ties % 2:
        words += ", one ignored as their number is odd"
    return SignTest(
        wins=wins,
        losses=losses,
        ties=ties,
        n=n,
        pvalue=_binomial_two_sided(k, n),
        min_p=_binomial_two_sided(0, n),
        method=f"exact binomial; {words} (Demšar)",
    )


# -- tasks × arms matrices ------------------------------------------------------------------------
def _score_matrix(
    scores: Any, names: Sequence[str] | None, *, min_tasks: int = 2
) -> tuple[FloatArray, tuple[str, ...]]:
    """A tasks × arms matrix and its arm names, from a matrix (with ``names``) or a mapping
    arm name → one score per task."""
    if isinstance(scores, Mapping):
        if names is not None and list(names) != [str(k) for k in scores]:
            raise ValueError(
                f"names {list(names)} do not match the arms of scores {list(scores)}; "
                "leave names out when scores is a mapping"
            )
        names = [str(k) for k in scores]
        columns = [as_sample(v, f"scores[{k!r}]", min_n=0) for k, v in scores.items()]
        lengths = {len(c) for c in columns}
        if len(lengths) > 1:
            raise ValueError(
                "scores needs one value per task for every arm: "
                + ", ".join(f"{k!r} has {len(c)}" for k, c in zip(names, columns, strict=True))
            )
        x = np.column_stack(columns) if columns else np.zeros((0, 0))
    else:
        try:
            x = np.asarray(scores, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"scores must be a tasks × arms matrix of numbers: {exc}") from None
        if x.ndim != 2:
            raise ValueError(f"scores must be a tasks × arms matrix (2-D), got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("scores holds a NaN or infinite value")
        if names is None:
            names = [f"arm {j + 1}" for j in range(x.shape[1])]
    out_names = tuple(str(n) for n in names)
    if len(out_names) != x.shape[1]:
        raise ValueError(f"names has {len(out_names)} entries for {x.shape[1]} arms (columns)")
    if len(set(out_names)) != len(out_names):
        raise ValueError(f"names must be distinct, got {list(out_names)}")
    if x.shape[1] < 2:
        raise ValueError(f"scores needs at least 2 arms (columns), got {x.shape[1]}")
    if x.shape[0] < min_tasks:
        raise ValueError(f"scores needs at least {min_tasks} tasks (rows), got {x.shape[0]}")
    return x, out_names


def _row_ranks(x: FloatArray) -> tuple[FloatArray, float]:
    """Ranks within each task, 1 = the highest score, and Friedman's ``sum(t^3 - t)`` over the
    tie groups of every task."""
    ranks = np.empty_like(x)
    ties = 0.0
    for i, row in enumerate(x):
        r, sizes = _tie_groups(-row, _tolerance(row))
        ranks[i] = r
        ties += float(sum(t**3 - t for t in sizes))
    return ranks, ties


# -- Friedman -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FriedmanTest(Result):
    """Result of :func:`friedman`: average ranks per arm (1 = best, in the order of ``names``),
    Friedman's chi-square with ``k - 1`` degrees of freedom and the Iman-Davenport F with
    ``(k - 1, (k - 1)(N - 1))``."""

    names: tuple[str, ...]
    avg_ranks: tuple[float, ...]
    statistic: float  # Friedman's chi-square
    pvalue: float
    df: int
    iman_davenport: float
    f_pvalue: float
    df_num: int
    df_den: int
    n_tasks: int
    n_arms: int
    tie_correction: bool


def _friedman(x: FloatArray, names: tuple[str, ...], tie_correction: bool) -> FriedmanTest:
    from scipy.stats import chi2 as chi2_dist
    from scipy.stats import f as f_dist

    n, k = x.shape
    ranks, ties = _row_ranks(x)
    avg = ranks.mean(axis=0)
    chi2 = 12.0 * n / (k * (k + 1)) * (float(np.sum(avg**2)) - k * (k + 1) ** 2 / 4.0)
    chi2 = max(chi2, 0.0)
    if tie_correction:
        c = 1.0 - ties / (n * k * (k * k - 1))
        # Every arm tied on every task: no spread at all, so no evidence of any difference.
        chi2 = chi2 / c if c > 1e-12 else 0.0
    df_num, df_den = k - 1, (k - 1) * (n - 1)
    denom = n * (k - 1) - chi2
    if denom <= 1e-9 * n * (k - 1):
        # Every task ranks the arms the same way: the F statistic is infinite.
        f_stat, f_p = math.inf, 0.0
    else:
        f_stat = (n - 1) * chi2 / denom
        f_p = float(f_dist.sf(f_stat, df_num, df_den))
    return FriedmanTest(
        names=names,
        avg_ranks=tuple(float(r) for r in avg),
        statistic=chi2,
        pvalue=float(chi2_dist.sf(chi2, df_num)),
        df=df_num,
        iman_davenport=f_stat,
        f_pvalue=f_p,
        df_num=df_num,
        df_den=df_den,
        n_tasks=n,
        n_arms=k,
        tie_correction=bool(tie_correction),
    )


def friedman(
    scores: Any, names: Sequence[str] | None = None, *, tie_correction: bool = True
) -> FriedmanTest:
    """Friedman test of ``k`` arms over ``N`` tasks (Friedman 1937; Demšar 2006, §3.2.2).

    ``scores``: a tasks × arms matrix (higher is better) with optional ``names``, or a mapping
    arm name → one score per task. Within each task the arms are ranked, 1 = best, ties
    averaged; ``avg_ranks`` are the ranks' means over tasks.
    ``chi2 = 12N / (k(k+1)) * (sum_j R_j^2 - k(k+1)^2 / 4)``, divided by Conover's tie
    correction ``1 - sum(t^3 - t) / (N k (k^2 - 1))`` when ``tie_correction`` (default, as
    ``scipy.stats.friedmanchisquare``; ``False`` gives Demšar's formula as printed). The
    Iman-Davenport ``F = (N - 1) chi2 / (N(k - 1) - chi2)`` is less conservative than the
    chi-square (Iman & Davenport 1980) and is the one Demšar recommends. When every task ranks
    the arms identically ``F`` is infinite (p = 0); when every arm ties on every task, both
    statistics are 0 (p = 1).
    """
    x, out_names = _score_matrix(scores, names)
    return _friedman(x, out_names, tie_correction)


# -- Wilcoxon-Holm groups for the critical-difference diagram -------------------------------------
@dataclass(frozen=True)
class PairwiseTest(Result):
    """One pair of :func:`pairwise_wilcoxon_holm`: ``a`` has the better (lower) average rank;
    ``r_plus`` sums the ranks of the tasks where ``a`` scores higher than ``b``."""

    a: str
    b: str
    r_plus: float
    r_minus: float
    pvalue: float
    pvalue_holm: float
    significant: bool
    min_p: float
    exact: bool


@dataclass(frozen=True)
class CriticalDifference(Result):
    """Result of :func:`pairwise_wilcoxon_holm`, the data of a critical-difference diagram.

    ``names``/``avg_ranks`` are sorted by average rank, best first; ``cliques`` are the groups
    (of at least two arms, in that order) whose every pair is not significantly different,
    each a bar under the rank axis.
    """

    names: tuple[str, ...]
    avg_ranks: tuple[float, ...]
    pairs: tuple[PairwiseTest, ...]
    cliques: tuple[tuple[str, ...], ...]
    alpha: float
    zero_method: str
    n_tasks: int
    friedman: FriedmanTest

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["pairs"] = [p.to_dict() for p in self.pairs]
        out["friedman"] = self.friedman.to_dict()
        return out


def _cliques(same: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``[i, j]`` of consecutive arms (in rank order) whose every pair is not
    significantly different; ``same[i, j]`` says pair (i, j) is not. The run from ``i`` can
    only reach as far as the run from ``i + 1`` or less, so a run is maximal exactly when it
    reaches further than the one before it."""
    k = len(same)
    reach = []
    for i in range(k):
        j = i
        while j + 1 < k and all(same[a, j + 1] for a in range(i, j + 1)):
            j += 1
        reach.append(j)
    out = []
    for i, j in enumerate(reach):
        if j > i and (i == 0 or j > reach[i - 1]):
            out.append((i, j))
    return out


def pairwise_wilcoxon_holm(
    scores: Any,
    names: Sequence[str] | None = None,
    alpha: float = 0.05,
    *,
    zero_method: str = "demsar",
    max_exact_n: int = MAX_EXACT_N,
) -> CriticalDifference:
    """Every pair of arms compared by :func:`wilcoxon_signed_rank` over the tasks, Holm-adjusted,
    with the groups of arms not significantly different: the Wilcoxon-Holm critical-difference
    diagram (Benavoli et al. 2016; Ismail Fawaz et al. 2019), not Nemenyi's critical
    difference, whose verdict on two arms depends on which other arms are in the comparison.

    ``scores`` as :func:`friedman` (higher is better). A pair is significant when its
    Holm-adjusted p-value (Holm 1979, over the ``k(k-1)/2`` pairs) is at most ``alpha``. The
    arms are sorted by average rank (ties in the input order), and a clique is a maximal run
    of consecutive arms in that order whose every pair is not significant: what the bar of a
    critical-difference diagram claims. (Ismail Fawaz et al. draw a bar from the best to the
    worst member of each maximal clique of the "not significant" graph, which can pass over an
    arm outside the clique; a run cannot.) The Friedman test of the same scores comes with it.
    """
    x, out_names = _score_matrix(scores, names)
    alpha = check_alpha(alpha)
    fr = _friedman(x, out_names, True)
    avg = np.asarray(fr.avg_ranks)
    order = [int(i) for i in np.argsort(avg, kind="stable")]
    k = len(order)
    tests = []
    for ia in range(k):
        for ib in range(ia + 1, k):
            a, b = order[ia], order[ib]
            t = wilcoxon_signed_rank(
                x[:, a] - x[:, b], zero_method=zero_method, max_exact_n=max_exact_n
            )
            tests.append((ia, ib, t))
    adjusted = holm([t.pvalue for _, _, t in tests])
    same = np.ones((k, k), dtype=bool)
    pairs = []
    for (ia, ib, t), p_adj in zip(tests, adjusted, strict=True):
        significant = bool(p_adj <= alpha)
        same[ia, ib] = same[ib, ia] = not significant
        pairs.append(
            PairwiseTest(
                a=out_names[order[ia]],
                b=out_names[order[ib]],
                r_plus=t.r_plus,
                r_minus=t.r_minus,
                pvalue=t.pvalue,
                pvalue_holm=float(p_adj),
                significant=significant,
                min_p=t.min_p,
                exact=t.exact,
            )
        )
    cliques = tuple(tuple(out_names[order[m]] for m in range(i, j + 1)) for i, j in _cliques(same))
    return CriticalDifference(
        names=tuple(out_names[i] for i in order),
        avg_ranks=tuple(float(avg[i]) for i in order),
        pairs=tuple(pairs),
        cliques=cliques,
        alpha=alpha,
        zero_method=zero_method,
        n_tasks=x.shape[0],
        friedman=fr,
    )
