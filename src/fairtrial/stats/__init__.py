"""Statistics for paired multi-seed comparisons: pure functions, frozen results.

Conventions shared by every function:

* Inputs are 1-D array-likes of floats; paired inputs ``a`` (the baseline) and ``b`` (the
  treated arm) have the same length, pair i being seed i. Effects are ``b - a``: positive means
  ``b`` is larger. Bad input (mismatched lengths, fewer than 2 pairs, NaN) raises ``ValueError``
  naming the parameter.
* Every resampling function takes ``rng``: a ``numpy.random.Generator``, an int seed, or
  ``None``, which means a generator seeded with 0, so results are deterministic by default.
* Across tasks (:mod:`fairtrial.stats.across`, :mod:`fairtrial.stats.task_effects`), the unit
  is the task: rank tests take one difference per task, matrices are tasks × arms (higher is
  better), and the bootstrap takes per task a pair (against, arm) of per-seed scores.
* Results are frozen dataclasses carrying the settings they used; ``to_dict()`` returns plain
  JSON-ready values (non-finite floats become ``None``).
"""

from fairtrial.stats.across import (
    CriticalDifference,
    FriedmanTest,
    PairwiseTest,
    SignedRankTest,
    SignTest,
    friedman,
    pairwise_wilcoxon_holm,
    sign_test,
    wilcoxon_signed_rank,
)
from fairtrial.stats.aggregate import AggregateCI, aggregate_difference, aggregate_interval, iqm
from fairtrial.stats.bootstrap import BootstrapCI, paired_bootstrap_ci
from fairtrial.stats.cost import (
    CostRatio,
    TimingNoise,
    cost_verdict,
    format_ratio,
    paired_log_ratio,
    timing_noise,
)
from fairtrial.stats.effect import ASO, ProbabilityOfImprovement, aso, probability_of_improvement
from fairtrial.stats.factorial import (
    AliasChain,
    Design,
    FactorialAnalysis,
    FactorialEffect,
    PooledTerms,
    design_from_generators,
    effect_contrasts,
    estimable_terms,
    estimate_effects,
    fractional_factorial,
    full_factorial,
    term_indexes,
    term_name,
    terms,
)
from fairtrial.stats.multiple import benjamini_hochberg, holm
from fairtrial.stats.permutation import PermutationTest, paired_permutation_test
from fairtrial.stats.power import minimum_detectable_effect, paired_t_power, required_seeds
from fairtrial.stats.task_effects import (
    AcrossTasksCI,
    PerformanceProfile,
    performance_profile,
    stratified_paired_bootstrap,
)
from fairtrial.stats.ttest import TOST, TTest, cohens_dz, paired_t_test, tost_paired, welch_t_test
from fairtrial.stats.tuning import ExpectedMaxCurve, expected_max, tuning_curve

__all__ = [  # noqa: RUF022 (plain sorted(), as the project pins its __all__)
    "ASO",
    "AcrossTasksCI",
    "AggregateCI",
    "AliasChain",
    "BootstrapCI",
    "CostRatio",
    "CriticalDifference",
    "Design",
    "ExpectedMaxCurve",
    "FactorialAnalysis",
    "FactorialEffect",
    "FriedmanTest",
    "PairwiseTest",
    "PerformanceProfile",
    "PermutationTest",
    "PooledTerms",
    "ProbabilityOfImprovement",
    "SignTest",
    "SignedRankTest",
    "TOST",
    "TTest",
    "TimingNoise",
    "aggregate_difference",
    "aggregate_interval",
    "aso",
    "benjamini_hochberg",
    "cohens_dz",
    "cost_verdict",
    "design_from_generators",
    "effect_contrasts",
    "estimable_terms",
    "estimate_effects",
    "expected_max",
    "format_ratio",
    "fractional_factorial",
    "friedman",
    "full_factorial",
    "holm",
    "iqm",
    "minimum_detectable_effect",
    "paired_bootstrap_ci",
    "paired_log_ratio",
    "paired_permutation_test",
    "paired_t_power",
    "paired_t_test",
    "pairwise_wilcoxon_holm",
    "performance_profile",
    "probability_of_improvement",
    "required_seeds",
    "sign_test",
    "stratified_paired_bootstrap",
    "term_indexes",
    "term_name",
    "terms",
    "timing_noise",
    "tost_paired",
    "tuning_curve",
    "welch_t_test",
    "wilcoxon_signed_rank",
]
