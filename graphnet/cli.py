"""The ``graphnet`` command line.

Exit codes: 0 success; 1 a failure while running (a gradient check over
its threshold, a diverging run); 2 a bad spec, bad data or bad arguments,
reported in one message without a traceback; 130 interrupted.
"""

import argparse
import logging
import sys

from . import __version__
from .errors import GraphnetError, RunError

log = logging.getLogger("graphnet")


def add_overrides(p):
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override a spec value by dotted path, e.g. "
                        "loss.l2=0.01 (repeatable; VALUE is JSON or text)")


def make_parser():
    parser = argparse.ArgumentParser(
        prog="graphnet",
        description="Declare, train, check and draw neural networks written "
                    "as JSON graph specs with hand-written gradients.")
    parser.add_argument("--version", action="version",
                        version=f"graphnet {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv debug)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser("run", help="train a spec and write a run folder",
                         description="Train the network of SPEC on CIFAR-10 "
                         "and write runs/<name>-<stamp>/ with metrics, "
                         "model, curves and diagram.")
    p.add_argument("spec", nargs="?", help="spec JSON file")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run from its checkpoint")
    add_overrides(p)
    p.add_argument("--out", default="runs", help="parent folder of the run "
                   "folder (default: runs)")
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py "
                   "(default: $GRAPHNET_DATA, else ~/.cache/graphnet)")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--threads", type=int, metavar="N",
                   help="BLAS threads, evaluations inline (default: one "
                        "BLAS thread, evaluations on a second thread)")
    p.set_defaults(func=cmd_run)

    p = verbs.add_parser("validate", help="check a spec, print its nodes",
                         description="Validate SPEC and print a table of "
                         "its nodes: op, inputs, output shape, parameters.")
    p.add_argument("spec")
    add_overrides(p)
    p.add_argument("--expand", action="store_true",
                   help="print the expanded spec (templates as explicit "
                        "nodes, every default filled in) as JSON")
    p.set_defaults(func=cmd_validate)

    p = verbs.add_parser("gradcheck", help="check gradients numerically",
                         description="Compare every parameter's analytic "
                         "gradient with centred differences on a reduced "
                         "copy of the network (float64; see "
                         "graphnet.gradcheck).")
    p.add_argument("spec")
    add_overrides(p)
    p.add_argument("--dims", type=int, default=10,
                   help="input features of the reduced copy (default 10)")
    p.add_argument("--batch", type=int, default=5,
                   help="examples in the batch (default 5)")
    p.add_argument("--steps", type=int, default=3,
                   help="SGD steps taken before checking (default 3)")
    p.add_argument("--l2", type=float, action="append",
                   help="L2 strength(s) to check (default: 0 and the "
                        "spec's)")
    p.add_argument("--threshold", type=float, default=1e-6,
                   help="worst relative error allowed (default 1e-6)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_gradcheck)

    p = verbs.add_parser("render", help="draw a spec's network",
                         description="Draw the network of SPEC with "
                         "Graphviz to .svg, .png, .pdf or .gv (DOT source).")
    p.add_argument("spec")
    add_overrides(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--rankdir", choices=("TB", "LR"), default="TB")
    p.add_argument("--no-shapes", dest="shapes", action="store_false",
                   help="hide output shapes")
    p.add_argument("--no-params", dest="params", action="store_false",
                   help="hide parameter counts")
    p.set_defaults(func=cmd_render)

    p = verbs.add_parser("eval", help="evaluate a finished run",
                         description="Reload RUN_DIR/model.npz and report "
                         "test accuracy and cost.")
    p.add_argument("run_dir")
    p.add_argument("--bn-stats", choices=("ema", "precise", "adaptive"),
                   default="ema", help="BN statistics used in test mode: "
                   "the run's own (ema), PreciseBN over training batches, "
                   "or re-estimated from the test images (adaptive)")
    p.add_argument("--flip", type=float, default=0.0, metavar="P",
                   help="adaptive: mirror each test image with probability "
                        "P while estimating (default 0)")
    p.add_argument("--shift", type=int, default=0, metavar="K",
                   help="adaptive: shift each test image by up to K pixels "
                        "while estimating (default 0)")
    p.add_argument("--passes", type=int, default=1,
                   help="adaptive: passes over the test images (default 1)")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_eval)

    p = verbs.add_parser("sweep", help="search hyper-parameters",
                         description="Run the sweep SWEEP (random or grid "
                         "search, coarse to fine) in parallel.")
    p.add_argument("sweep")
    add_overrides(p)
    p.add_argument("--out", default="runs")
    p.add_argument("--data-dir")
    p.add_argument("--workers", type=int)
    p.add_argument("--dask", metavar="ADDRESS|local",
                   help="run on a Dask distributed scheduler")
    p.set_defaults(func=cmd_sweep)

    p = verbs.add_parser("report", help="run a study and write its report",
                         description="Run (or reuse) every run and sweep of "
                         "SUITE and write report.md and report.pdf.")
    p.add_argument("suite")
    add_overrides(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--data-dir")
    p.add_argument("--workers", type=int)
    p.set_defaults(func=cmd_report)
    return parser


# ---- verbs -----------------------------------------------------------------

def cmd_validate(args):
    from .executor import build
    from .spec import load_spec

    spec = load_spec(args.spec, overrides=args.overrides)
    if args.expand:
        print(spec.to_json(), end="")
        return 0
    net = build(spec)
    print(node_table(spec, net))
    return 0


def node_table(spec, net):
    """Text table of a network's nodes with shapes and parameter counts."""
    rows = [("node", "op", "inputs", "output", "params")]
    g = spec["graph"]
    for name, width in g["inputs"].items():
        rows.append((name, "input", "", f"(n, {width})", ""))
    for step in net.steps:
        node = net.dag.nodes[step.name]["spec"]
        widths = [net.widths[s] for s in node["inputs"]]
        count = step.op.count_params(widths)
        rows.append((step.name, node["op"], ", ".join(node["inputs"]),
                     f"(n, {net.widths[step.name]})",
                     f"{count:,}" if count else ""))
    cols = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, cols))).rstrip()
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"{spec.name}: {len(net.steps)} nodes, output "
                 f"{g['output']!r}, {net.n_params():,} parameters")
    return "\n".join(lines)


def cmd_gradcheck(args):
    from .gradcheck import check_spec
    from .spec import load_spec

    spec = load_spec(args.spec, overrides=args.overrides)
    width = next(iter(spec["graph"]["inputs"].values()))
    # centred differences cost two passes per parameter: the bounds keep
    # a typo from allocating (or computing) without end
    for name, value, low, high in (("--dims", args.dims, 1, width),
                                   ("--batch", args.batch, 2, 1000),
                                   ("--steps", args.steps, 0, 1000)):
        if not low <= value <= high:
            raise GraphnetError(f"{name}: expected an integer from {low} "
                                f"to {high}, found {value}")
    rows = check_spec(spec, dims=args.dims, batch=args.batch,
                      steps=args.steps, l2_values=args.l2, seed=args.seed)
    print(f"{spec.name}: centred differences on a reduced copy "
          f"(input {args.dims}, batch {args.batch}, after {args.steps} "
          "SGD steps), float64")
    print(f"{'l2':>8}  {'param':<16} {'shape':<12} {'worst rel err':>13}  "
          f"{'max |grad|':>10}")
    worst = 0.0
    for r in rows:
        flag = "  FAIL" if r["error"] > args.threshold else ""
        print(f"{r['l2']:>8g}  {r['param']:<16} {str(r['shape']):<12} "
              f"{r['error']:>13.2e}  {r['max_abs']:>10.2e}{flag}")
        worst = max(worst, r["error"])
    ok = worst <= args.threshold
    print(f"worst relative error {worst:.2e} "
          f"{'<=' if ok else '>'} threshold {args.threshold:g}: "
          f"{'pass' if ok else 'FAIL'}")
    return 0 if ok else 1


def cmd_run(args):
    from . import trainer
    return trainer.cli_run(args)


def cmd_eval(args):
    from . import trainer
    return trainer.cli_eval(args)


def cmd_render(args):
    from . import render
    return render.cli_render(args)


def cmd_sweep(args):
    from . import sweep
    return sweep.cli_sweep(args)


def cmd_report(args):
    from . import report
    return report.cli_report(args)


def main(argv=None):
    """Entry point of the ``graphnet`` console script."""
    parser = make_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: "
                                            "%(message)s")
    try:
        return args.func(args)
    except GraphnetError as exc:
        print(f"graphnet {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except RunError as exc:
        print(f"graphnet {args.verb}: failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:      # disk full, permissions: one line, no trace
        print(f"graphnet {args.verb}: failed: {exc}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"graphnet {args.verb}: failed: out of memory; use a smaller "
              "network, batch or data split", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"graphnet {args.verb}: interrupted", file=sys.stderr)
        return 130


def run():
    sys.exit(main())


if __name__ == "__main__":
    run()
