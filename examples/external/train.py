"""A training script that loads and evaluates its own data: a recipe that evaluates itself.

It runs on its own (``python train.py --lr 0.01 --epochs 20 --seed 1``) and, unchanged but for
two printed JSON lines, as a fairtrial command recipe on ``task = "external:NAME"``:

* ``{"step": epoch, "val_accuracy": ...}`` each epoch: a metric point (learning curves);
* ``{"test": {"accuracy": ...}}`` once, at the end: the trial's result, as this script computed
  it. fairtrial never sees this test split, so its reports say the evaluation was the recipe's.

The data stand for what fairtrial cannot hold (an image folder, a tokenised corpus): the digits
file scikit-learn ships, read and split by this script with a split seed of its own, the same
in every run. ``--seed`` seeds
the weights; the order of the batches comes from ``$FAIRTRIAL_SEED_DATA`` when fairtrial runs it
(the same stream for every arm of a seed), else from ``--seed``.
"""

import argparse
import importlib.util
import json
import os

import numpy as np
import torch


def load_data(split_seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """This script's own data and split: 60% train, 20% validation, 20% test.

    The file is scikit-learn's copy of the UCI digits (8x8 images, 64 values 0..16, then the
    label), read straight from disk: importing scikit-learn would take longer than training.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("this example reads scikit-learn's digits: pip install scikit-learn")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x, y = table[:, :-1] / 16.0, table[:, -1].astype(np.int64)
    order = np.random.default_rng(split_seed).permutation(len(y))
    parts = np.split(order, [int(len(y) * 0.6), int(len(y) * 0.8)])
    return {
        name: (torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))
        for name, idx in zip(("train", "val", "test"), parts, strict=True)
    }


def accuracy(model: torch.nn.Module, split: tuple[torch.Tensor, torch.Tensor]) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(split[0]).argmax(1) == split[1]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seeds the initial weights")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = load_data()
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    order = torch.Generator().manual_seed(int(os.environ.get("FAIRTRIAL_SEED_DATA", args.seed)))
    # SGD with momentum, written out: torch.optim's first use imports torch's compiler stack,
    # which takes longer than this whole training run
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    x, y = data["train"]
    for epoch in range(args.epochs):
        model.train()
        for batch in torch.randperm(len(y), generator=order).split(args.batch_size):
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, v, g in zip(params, velocity, grads, strict=True):
                    v.mul_(0.9).add_(g)
                    p.sub_(args.lr * v)
        print(json.dumps({"step": epoch, "val_accuracy": accuracy(model, data["val"])}))
    print(json.dumps({"test": {"accuracy": accuracy(model, data["test"])}}))


if __name__ == "__main__":
    main()
