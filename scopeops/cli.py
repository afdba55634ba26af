"""The ``scopeops`` command: ``demo``, ``bench`` and ``inspect``."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from scopeops.demo import DemoConfig, run_demo
    cfg = DemoConfig(steps=args.steps, seed=args.seed, out=args.out,
                     micro_batches=args.micro_batches, quiet=args.quiet)
    try:
        run_demo(cfg)
    except ValueError as exc:
        print(f"scopeops demo: {exc}", file=sys.stderr)
        return 2
    return 0


def _bench(args: argparse.Namespace) -> int:
    from scopeops import bench
    return bench.main(args.bench_args)


def _inspect(args: argparse.Namespace) -> int:
    import scopeops as so
    from scopeops.checkpoint import read_checkpoint_header
    try:
        entries = read_checkpoint_header(args.path)
    except so.CheckpointError as exc:
        print(f"scopeops inspect: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"scopeops inspect: cannot read {args.path}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    total = 0
    print(f"{args.path}: checkpoint with {len(entries)} blob(s)")
    for i, entry in enumerate(entries):
        last = i == len(entries) - 1
        shape = "" if entry.shape is None else f" shape {tuple(entry.shape)}"
        dtype = "" if entry.dtype is None else f" {entry.dtype}"
        print(f"{'└──' if last else '├──'} {entry.name}: {entry.type}{dtype}{shape}, "
              f"{entry.nbytes} bytes")
        total += entry.nbytes
    print(f"total {total} bytes")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scopeops",
        description="Caffe2's workspace scopes for numeric Python pipelines.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser("demo", help="train a small recurrent net whose steps run as "
                               "Do sub-nets on a workspace stack (the main job)")
    demo.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--out", default="scopeops-demo",
                      help="output folder for the loss plot and workspace picture")
    demo.add_argument("--micro-batches", type=int, default=4,
                      help="micro-batches per step (default 4; must divide 128)")
    demo.add_argument("--quiet", action="store_true",
                      help="no progress bar (the results are still printed)")
    demo.set_defaults(run=_demo)

    # The bench options are scopeops.bench's own (`scopeops bench --help` prints them).
    bench = commands.add_parser("bench", add_help=False,
                                help="print the performance ratios against their references "
                                "and targets (--quick, --only, --check, --json FILE, --quiet)")
    bench.set_defaults(run=_bench)

    inspect = commands.add_parser("inspect", help="show a saved checkpoint as a tree")
    inspect.add_argument("path", help="a file written by scopeops.save_workspace")
    inspect.set_defaults(run=_inspect)

    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
