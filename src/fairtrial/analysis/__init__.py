"""From per-seed results to verdicts.

* :mod:`fairtrial.analysis.verdicts`: the paired statistics and the verdict rule (pure);
* :mod:`fairtrial.analysis.methodology`: the method as data and in words (the report's settings,
  the preregistration's frozen plan);
* :mod:`fairtrial.analysis.predictions`: learning curves and where the arms disagree;
* :mod:`fairtrial.analysis.document`: the one builder of an :class:`~fairtrial.results.Analysis`
  (:func:`~fairtrial.analysis.document.build`) and the ledger's way to call it
  (:func:`~fairtrial.analysis.document.analyze`; ``fairtrial.analyze`` in notebooks).

This package's namespace holds the pure parts only: the assembly reads the preregistration,
which itself is derived from :mod:`~fairtrial.analysis.methodology`.
"""

from fairtrial.analysis.methodology import (
    method,
    method_changes,
    method_labels,
    method_of,
    method_text,
    run_method,
    settings,
)
from fairtrial.analysis.predictions import (
    curves_from_points,
    disagreement_table,
    disagreements,
    input_shape,
    learning_curves,
    majority_votes,
)
from fairtrial.analysis.verdicts import (
    ARMS_FAMILY,
    BCA_MIN_PAIRS,
    VERDICT_RULE,
    VERDICTS,
    FailurePolicy,
    Options,
    ablation_family,
    analyze_scores,
    arm_summary,
    compare,
    compare_runs,
    holm_families,
    judge,
    seed_blind_arms,
    seed_blind_reason,
    worst_score,
)
from fairtrial.record import Hypothesis

__all__ = [
    "ARMS_FAMILY",
    "BCA_MIN_PAIRS",
    "VERDICTS",
    "VERDICT_RULE",
    "FailurePolicy",
    "Hypothesis",
    "Options",
    "ablation_family",
    "analyze_scores",
    "arm_summary",
    "compare",
    "compare_runs",
    "curves_from_points",
    "disagreement_table",
    "disagreements",
    "holm_families",
    "input_shape",
    "judge",
    "learning_curves",
    "majority_votes",
    "method",
    "method_changes",
    "method_labels",
    "method_of",
    "method_text",
    "run_method",
    "seed_blind_arms",
    "seed_blind_reason",
    "settings",
    "worst_score",
]
