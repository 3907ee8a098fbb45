"""A command recipe that uses only the standard library: the protocol is language-agnostic.

Reads CSVs from $FAIRTRIAL_DATA_DIR, trains nearest-centroid, prints JSON metric lines,
writes one prediction per line to $FAIRTRIAL_PREDICTIONS.
"""

import csv
import json
import os
import random
import sys


def read(name):
    with open(os.path.join(os.environ["FAIRTRIAL_DATA_DIR"], name + ".csv")) as fh:
        return [[float(v) for v in row] for row in csv.reader(fh)]


def main():
    shrink = float(sys.argv[sys.argv.index("--shrink") + 1])
    seed = int(sys.argv[sys.argv.index("--seed") + 1])
    assert seed == int(os.environ["FAIRTRIAL_SEED"])
    rng = random.Random(int(os.environ["FAIRTRIAL_SEED_DATA"]))
    x, y = read("x_train"), [int(r[0]) for r in read("y_train")]
    keep = sorted(rng.sample(range(len(x)), int(len(x) * 0.8)))
    sums, counts = {}, {}
    for i in keep:
        c = y[i]
        sums.setdefault(c, [0.0] * len(x[i]))
        sums[c] = [a + b for a, b in zip(sums[c], x[i], strict=True)]
        counts[c] = counts.get(c, 0) + 1
    cents = {c: [shrink * v / counts[c] for v in s] for c, s in sums.items()}

    def predict(row):
        return min(
            cents, key=lambda c: sum((a - b) ** 2 for a, b in zip(row, cents[c], strict=True))
        )

    xv, yv = read("x_val"), [int(r[0]) for r in read("y_val")]
    acc = sum(predict(r) == t for r, t in zip(xv, yv, strict=True)) / len(yv)
    print("training done")  # plain lines are allowed
    if "--flops" in sys.argv:  # the trial's FLOPs, reported to fairtrial's meter
        print(
            json.dumps(
                {
                    "compute": {
                        "flops": float(sys.argv[sys.argv.index("--flops") + 1]),
                        "flops_method": "2 x multiply-adds, counted by hand",
                    }
                }
            )
        )
    print(json.dumps({"step": 1, "val_accuracy": acc}))
    with open(os.environ["FAIRTRIAL_PREDICTIONS"], "w") as fh:
        for row in read("x_test"):
            fh.write(f"{predict(row)}\n")
    if os.environ.get("FAIRTRIAL_ARM") == "broken":
        sys.exit(3)


if __name__ == "__main__":
    main()
