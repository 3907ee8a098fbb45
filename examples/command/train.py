"""A command recipe: any program that follows the protocol. This one uses only the stdlib.

fairtrial fills {shrink} and {seed} in the command line, passes the derived stream seeds and
the data folder in environment variables, reads JSON metric lines from stdout, and scores the
predictions written to $FAIRTRIAL_PREDICTIONS.
"""

import argparse
import csv
import json
import os
import random


def read(name):
    with open(os.path.join(os.environ["FAIRTRIAL_DATA_DIR"], name + ".csv")) as fh:
        return [[float(v) for v in row] for row in csv.reader(fh)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shrink", type=float, required=True)
    parser.add_argument("--bag", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)  # the seed index, for logging
    args = parser.parse_args()
    rng = random.Random(int(os.environ["FAIRTRIAL_SEED_DATA"]))  # same draw for every arm

    x, y = read("x_train"), [int(r[0]) for r in read("y_train")]
    rows = rng.sample(range(len(x)), int(len(x) * args.bag))  # a bootstrap-like subsample
    dims = len(x[0])
    mean = [sum(x[i][j] for i in rows) / len(rows) for j in range(dims)]
    sums, counts = {}, {}
    for i in rows:
        c = y[i]
        acc = sums.setdefault(c, [0.0] * dims)
        for j in range(dims):
            acc[j] += x[i][j]
        counts[c] = counts.get(c, 0) + 1
    # shrunken centroids: pull each class centre towards the overall mean
    cents = {
        c: [mean[j] + args.shrink * (s[j] / counts[c] - mean[j]) for j in range(dims)]
        for c, s in sums.items()
    }

    def predict(row):
        return min(
            cents, key=lambda c: sum((a - b) ** 2 for a, b in zip(row, cents[c], strict=True))
        )

    xv, yv = read("x_val"), [int(r[0]) for r in read("y_val")]
    val = sum(predict(r) == t for r, t in zip(xv, yv, strict=True)) / len(yv)
    print(json.dumps({"step": 0, "val_accuracy": val}))
    with open(os.environ["FAIRTRIAL_PREDICTIONS"], "w") as fh:
        fh.writelines(f"{predict(r)}\n" for r in read("x_test"))


if __name__ == "__main__":
    main()
