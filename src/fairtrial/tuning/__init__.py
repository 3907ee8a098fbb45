"""Fair tuning: every arm gets the same tuning budget, then its best configuration runs on the
experiment's fresh paired seeds.

* :mod:`fairtrial.tuning.records`: the typed tuning part of the result document;
* :mod:`fairtrial.tuning.space`: the search space and what the sampler asks for;
* :mod:`fairtrial.tuning.select`: scoring configurations and choosing each arm's best;
* :mod:`fairtrial.tuning.driver`: the ask/tell driver that runs tuning trials (Optuna);
* :mod:`fairtrial.tuning.summary`: the tuning part of an analysis (curves, importance, compute).

This namespace imports nothing, so the result model can import the records alone.
"""
