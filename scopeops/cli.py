"""The ``scopeops`` command: ``demo``, ``bench`` and ``inspect``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence, TextIO

import scopeops as so
from scopeops.checkpoint import read_checkpoint_header

__all__ = ["main"]


# The demo (matplotlib) and the bench (timing loops and fixtures) are imported when their
# command runs, so `scopeops inspect` and `--help` start without them.
def _demo(args: argparse.Namespace) -> int:
    if args.workers:
        return _demo_on_workers(args)
    from scopeops.demo import DemoConfig, run_demo
    cfg = DemoConfig(steps=args.steps, seed=args.seed, out=args.out,
                     micro_batches=args.micro_batches, quiet=args.quiet)
    try:
        run_demo(cfg)
    except ValueError as exc:
        print(f"scopeops demo: {exc}", file=sys.stderr)
        return 2
    return 0


def _demo_on_workers(args: argparse.Namespace) -> int:
    """``demo --workers N``: the demo data-parallel on a local Dask cluster."""
    from scopeops.demo import DemoConfig, run_demo_distributed
    try:
        run_demo_distributed(DemoConfig(steps=args.steps, seed=args.seed, out=args.out,
                                        quiet=args.quiet), args.workers)
    except ImportError as exc:
        print(f"scopeops demo --workers: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"scopeops demo: {exc}", file=sys.stderr)
        return 2
    return 0


def _bench(args: argparse.Namespace) -> int:
    from scopeops import bench
    return bench.main(args.bench_args)


def _printable(text: str, escape_backslash: bool = True) -> str:
    """``text`` with every character that is not printable (control characters, terminal
    escapes, bidi overrides, lone surrogates) written as a Python escape, so a name from
    a file can neither drive the terminal nor fail to encode."""
    out = []
    for char in text:
        if char == "\\" and escape_backslash:
            out.append("\\\\")
        elif char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def _emit(stream: TextIO, text: str) -> None:
    # What the stream cannot encode (é on an ASCII stdout) is escaped, never an error.
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text = text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:
        text = text.encode("ascii", "backslashreplace").decode("ascii")
    stream.write(text + "\n")


def _tree_glyphs(stream: TextIO) -> tuple[str, str]:
    try:
        "├└─".encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return "|--", "`--"
    return "├──", "└──"


def _inspect(args: argparse.Namespace) -> int:
    path = _printable(args.path)
    try:
        entries = read_checkpoint_header(args.path)
    except so.CheckpointError as exc:
        _emit(sys.stderr, f"scopeops inspect: {_printable(str(exc), escape_backslash=False)}")
        return 1
    except OSError as exc:
        reason = _printable(str(exc.strerror or exc), escape_backslash=False)
        _emit(sys.stderr, f"scopeops inspect: cannot read {path}: {reason}")
        return 1
    branch, corner = _tree_glyphs(sys.stdout)
    try:
        _emit(sys.stdout, f"{path}: checkpoint with {len(entries)} blob(s)")
        total = 0
        for i, entry in enumerate(entries):
            last = i == len(entries) - 1
            shape = "" if entry.shape is None else f" shape {tuple(entry.shape)}"
            dtype = "" if entry.dtype is None else f" {entry.dtype}"
            variable = "" if not entry.variable else \
                " (variable)" if entry.trainable else " (variable, not trainable)"
            _emit(sys.stdout, f"{corner if last else branch} {_printable(entry.name)}: "
                              f"{entry.type}{dtype}{shape}, {entry.nbytes} bytes{variable}")
            total += entry.nbytes
        _emit(sys.stdout, f"total {total} bytes")
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python's exit-time
        # flush from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
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
    demo.add_argument("--workers", type=int, default=0, metavar="N",
                      help="train data-parallel on a local Dask cluster of N worker processes "
                      '(needs pip install "scopeops[distributed]")')
    demo.add_argument("--quiet", action="store_true",
                      help="no progress bar (the results are still printed)")
    demo.set_defaults(run=_demo)

    # The bench options are scopeops.bench's own (`scopeops bench --help` prints them).
    bench = commands.add_parser("bench", add_help=False,
                                help="print the performance ratios against their references "
                                "and targets (--quick, --only, --check, --json FILE, --quiet)")
    bench.set_defaults(run=_bench)

    inspect = commands.add_parser("inspect", help="show a saved checkpoint as a tree")
    inspect.add_argument("path", help="a file written by scopeops.save_workspace, or any "
                         "safetensors file")
    inspect.set_defaults(run=_inspect)

    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
