"""Performance history in one command: run the asv suite over the last N commits, each
built from source, and publish the HTML.

    python benchmarks/history.py 10            # the last 10 commits of the current branch
    python benchmarks/history.py 10 --quick    # one sample per benchmark: faster, noisier
    python benchmarks/history.py 10 --preview  # then serve the pages (asv preview)

Needs the bench extra (``pip install ".[bench]"``: asv and virtualenv) and git. asv makes
one virtualenv under benchmarks/env (numpy, Cython and setuptools from the package index),
builds each commit's wheel there from source (``build_command`` in asv.conf.json) and
keeps the results in benchmarks/results; commits that already have results are skipped,
so running it again after new commits measures only those. The pages are written to
benchmarks/html; open benchmarks/html/index.html through ``asv preview`` (browsers refuse
to run its scripts from a file:// URL).

The suite is the one in this checkout's benchmarks/benchmarks, run against each commit's
package: commits older than scopeops.bench (the subpackage the suite imports) fail to
import it, and asv records them as failed.

asv.conf.json lists the branch "main" for the graphs; this script runs asv with a copy of
it that names the branch you are on (and absolute paths), so a clone of any branch works.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=BENCHMARKS, check=True, capture_output=True,
                          text=True).stdout.strip()


def history_config(branch: str | None) -> dict[str, object]:
    """asv.conf.json with absolute paths and ``branch`` (if any) the one the graphs follow."""
    with open(os.path.join(BENCHMARKS, "asv.conf.json"), encoding="utf-8") as handle:
        config: dict[str, object] = json.load(handle)
    for key in ("repo", "benchmark_dir", "env_dir", "results_dir", "html_dir"):
        config[key] = os.path.normpath(os.path.join(BENCHMARKS, str(config[key])))
    if branch is not None:
        config["branches"] = [branch]
    return config


def commands(config_path: str, hash_file: str, quick: bool, preview: bool) -> list[list[str]]:
    asv = [sys.executable, "-m", "asv"]
    run = asv + ["run", "--config", config_path, "--show-stderr", "--skip-existing-commits"]
    if quick:
        run.append("--quick")
    steps = [asv + ["machine", "--yes", "--config", config_path],
             run + [f"HASHFILE:{hash_file}"],
             asv + ["publish", "--config", config_path]]
    if preview:
        steps.append(asv + ["preview", "--config", config_path])
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/history.py",
        description="Run the asv suite over the last N commits (each built from source) and "
                    "publish the HTML to benchmarks/html.")
    parser.add_argument("commits", type=int, metavar="N", help="how many commits, from HEAD back")
    parser.add_argument("--quick", action="store_true",
                        help="one sample per benchmark (asv run --quick): faster, noisier")
    parser.add_argument("--preview", action="store_true",
                        help="serve the published pages afterwards (asv preview)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commits and the asv commands, run nothing")
    args = parser.parse_args(argv)
    if args.commits < 1:
        parser.error("N must be at least 1")
    if not args.dry_run:
        try:
            import asv  # noqa: F401 - only checks that the bench extra is installed
        except ImportError:
            parser.error('asv is not installed: pip install ".[bench]"')
    try:
        hashes = _git("rev-list", f"--max-count={args.commits}", "HEAD").split()
        branch = _git("rev-parse", "--abbrev-ref", "HEAD")
    except (OSError, subprocess.CalledProcessError) as exc:
        parser.error(f"this needs a git checkout of scopeops and git on PATH ({exc})")
    # On a detached HEAD the graphs follow the configured branch.
    config = history_config(None if branch == "HEAD" else branch)

    with tempfile.TemporaryDirectory(prefix="scopeops-asv-") as scratch:
        config_path = os.path.join(scratch, "asv.conf.json")
        hash_file = os.path.join(scratch, "commits.txt")
        with open(config_path, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2)
        with open(hash_file, "w", encoding="utf-8") as handle:
            handle.write("\n".join(hashes) + "\n")
        print(f"{len(hashes)} commit(s) of {branch}: {' '.join(h[:8] for h in hashes)}")
        run_status = 0
        for command in commands(config_path, hash_file, args.quick, args.preview):
            print("$ " + " ".join(shlex.quote(part) for part in command), flush=True)
            if args.dry_run:
                continue
            # asv machine --yes still prints its questionnaire: keep only its errors.
            quiet = subprocess.DEVNULL if command[3] == "machine" else None
            status = subprocess.run(command, cwd=BENCHMARKS, stdout=quiet,
                                    check=False).returncode
            if command[3] == "run":
                # A commit that fails to build or a benchmark that fails is recorded as
                # failed; the others are still worth publishing.
                run_status = status
            elif status != 0:
                print(f"asv {command[3]} failed (exit status {status})", file=sys.stderr)
                return status
    if not args.dry_run:
        index = os.path.join(str(config["html_dir"]), "index.html")
        print(f"published {index}; serve it with: cd benchmarks && asv preview")
        if run_status:
            print(f"asv run reported failures (exit status {run_status}): see its output above",
                  file=sys.stderr)
    return run_status


if __name__ == "__main__":
    sys.exit(main())
