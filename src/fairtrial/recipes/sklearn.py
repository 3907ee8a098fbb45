"""Two scikit-learn baselines: logistic regression and histogram gradient boosting.

Strong, cheap references that every new method on a small tabular task should beat:

* ``logistic`` - multinomial logistic regression (L2-penalized, L-BFGS), on features
  standardized with training statistics. Its optimum is unique, so its result does not depend
  on the seed: it is a fixed reference point, not a source of seed-to-seed variance.
* ``gradient_boosting`` - ``HistGradientBoostingClassifier``, scikit-learn's implementation of
  histogram-based gradient boosting in the style of LightGBM (Ke et al. 2017, NeurIPS;
  Friedman 2001, "Greedy function approximation: a gradient boosting machine"). It uses the
  seed where it has randomness: feature subsampling and the early-stopping split.

scikit-learn is imported inside each recipe: it is an optional extra of fairtrial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fairtrial.errors import MissingDependency
from fairtrial.recipes import recipe

if TYPE_CHECKING:
    from fairtrial.context import TrialContext

#: The most iterations an option may ask for: far beyond convergence on the tasks these
#: recipes are for, low enough that a typo fails the spec instead of every trial.
MAX_ITER = 1_000_000


@dataclass(frozen=True)
class LogisticConfig:
    """Options of the logistic regression recipe."""

    C: float = field(
        default=1.0,
        metadata={"help": "inverse L2 penalty strength (smaller = stronger penalty)", "gt": 0},
    )
    max_iter: int = field(
        default=1000, metadata={"help": "most L-BFGS iterations", "ge": 1, "le": MAX_ITER}
    )
    tol: float = field(default=1e-4, metadata={"help": "L-BFGS stopping tolerance", "ge": 0})
    standardize: bool = field(
        default=True,
        metadata={"help": "scale each feature to mean 0, sd 1 with TRAIN statistics only"},
    )


@dataclass(frozen=True)
class GradientBoostingConfig:
    """Options of the gradient boosting recipe (names as in HistGradientBoostingClassifier)."""

    learning_rate: float = field(default=0.1, metadata={"help": "shrinkage of each tree", "gt": 0})
    max_iter: int = field(
        default=100,
        metadata={"help": "boosting rounds (trees per class)", "ge": 1, "le": MAX_ITER},
    )
    max_leaf_nodes: int = field(
        default=31, metadata={"help": "most leaves per tree", "ge": 2, "le": 65_536}
    )
    min_samples_leaf: int = field(
        default=20, metadata={"help": "fewest training rows per leaf", "ge": 1, "le": 2**31 - 1}
    )
    l2_regularization: float = field(
        default=0.0, metadata={"help": "L2 penalty on leaf values", "ge": 0}
    )
    max_features: float = field(
        default=1.0,
        metadata={
            "help": "fraction of features each split may consider (< 1 draws from the seed)",
            "gt": 0,
            "le": 1,
        },
    )
    early_stopping: bool = field(
        default=False,
        metadata={
            "help": "stop when a held-out 10% of TRAIN stops improving (the split uses the seed); "
            "off by default so every seed trains max_iter rounds"
        },
    )


def _fit_and_score(model: Any, ctx: TrialContext) -> None:
    """Fit on train, log val accuracy, score the sealed test split."""
    d = ctx.data
    if ctx.meter is not None:
        ctx.meter.flops_not_counted("scikit-learn estimators have no FLOP counter")
    with ctx.phase("train"):
        model.fit(d.x_train, d.y_train)
    with ctx.phase("eval"):
        ctx.log(step=0, val_accuracy=float(np.mean(model.predict(d.x_val) == d.y_val)))
        ctx.evaluate_test(model.predict)


@recipe(LogisticConfig)
def logistic(cfg: LogisticConfig, ctx: TrialContext) -> None:
    """Multinomial logistic regression (L2, L-BFGS) on train-standardized features."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise MissingDependency("sklearn", "sklearn", "the 'logistic' recipe") from None

    clf = LogisticRegression(
        C=cfg.C, max_iter=cfg.max_iter, tol=cfg.tol, random_state=ctx.seed_for("init") % 2**32
    )
    # Inside the pipeline the scaler is fitted on the training rows only.
    _fit_and_score(make_pipeline(StandardScaler(), clf) if cfg.standardize else clf, ctx)


@recipe(GradientBoostingConfig)
def gradient_boosting(cfg: GradientBoostingConfig, ctx: TrialContext) -> None:
    """Histogram gradient boosting (scikit-learn's HistGradientBoostingClassifier)."""
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError:
        raise MissingDependency("sklearn", "sklearn", "the 'gradient_boosting' recipe") from None

    model = HistGradientBoostingClassifier(
        learning_rate=cfg.learning_rate,
        max_iter=cfg.max_iter,
        max_leaf_nodes=cfg.max_leaf_nodes,
        min_samples_leaf=cfg.min_samples_leaf,
        l2_regularization=cfg.l2_regularization,
        max_features=cfg.max_features,
        early_stopping=cfg.early_stopping,
        random_state=ctx.seed_for("init") % 2**32,
    )
    _fit_and_score(model, ctx)
