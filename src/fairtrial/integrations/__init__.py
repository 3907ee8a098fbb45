"""Callbacks for the training loops researchers already use, inside a fairtrial recipe.

* :mod:`fairtrial.integrations.lightning` - PyTorch Lightning (the ``lightning`` extra);
* :mod:`fairtrial.integrations.hf` - the Hugging Face ``Trainer`` (the ``hf`` extra).

Importing one of them imports its framework: that is the opt-in. Each gives a
``FairtrialCallback(ctx)`` that forwards the framework's logged metrics to ``ctx.log``, times
its train and evaluation phases, counts the FLOPs of its training steps and checks that the
framework was seeded from the trial's seeds, and a helper that does the seeding.
"""
