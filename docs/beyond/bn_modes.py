"""Test accuracy of finished runs under each way of estimating BN statistics.

Usage: python docs/beyond/bn_modes.py RESULT.json RUN_DIR [RUN_DIR ...]
(with GRAPHNET_DATA set). The weights of each run are fixed; only the BN
buffers change between rows, so the rows of one run are paired figures.
"""

import json
import sys
from pathlib import Path

from graphnet.bnstats import reestimate
from graphnet.data import load_dataset
from graphnet.trainer import load_run

CASES = [
    ("saved", None, {}),
    ("precise seed 0", "precise", {"seed": 0}),
    ("precise seed 1", "precise", {"seed": 1}),
    ("precise 1000 batches", "precise", {"batches": 1000}),
    ("adaptive", "adaptive", {}),
    ("adaptive flip, 2 passes", "adaptive",
     {"augment": {"flip": 0.5, "shift": 0}, "passes": 2}),
    ("adaptive flip+shift1, 4 passes", "adaptive",
     {"augment": {"flip": 0.5, "shift": 1}, "passes": 4}),
]


def main(result, runs):
    out, cache = {}, {}
    for run in runs:
        spec, net = load_run(run)
        key = json.dumps(spec["data"])
        if key not in cache:
            cache[key] = load_dataset(spec["data"],
                                      dtype=spec["train"]["dtype"])
        data = cache[key]
        saved = {k: v.copy() for k, v in net.buffers.items()}
        rows = {}
        for name, mode, kwargs in CASES:
            for k, v in saved.items():
                net.buffers[k][...] = v
            if mode:
                reestimate(net, spec, data, mode, **kwargs)
            rows[name] = net.evaluate(data.X_test, data.y_test)["accuracy"]
            print(Path(run).name, name, rows[name], flush=True)
        out[Path(run).name] = {"spec": spec.name, "test_accuracy": rows}
    Path(result).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
