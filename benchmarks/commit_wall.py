"""One `fieldkd run` at several commits, one after the other: wall time, CPU, memory and the summary.

    python benchmarks/commit_wall.py --commits 8bf2892,HEAD --name unikd_wall [--workdir DIR] \
        [--metrics test/psnr,mesh/chamfer] method=unikd [KEY=VALUE ...]

Each commit is checked out into its own detached git worktree and run from there with that
worktree first on ``PYTHONPATH`` (Ray's workers inherit it), each in a fresh working folder with a
fresh MLflow store; the process tree is sampled as ``default_cost.py`` does. The commits run in
the order given; the table's last row is the last commit against the first. Valid only on an
idle machine: the 1-min load at each start is recorded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, markdown_table, write_results
from default_cost import measure, stage_seconds

REPO = Path(__file__).resolve().parents[1]


def resolve(rev: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout.strip()


def run_at(commit: str, overrides: list[str], workdir: Path) -> dict:
    tree = workdir / f"src-{commit}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=REPO, check=True,
                       capture_output=True)
    cwd = workdir / f"run-{commit}"
    cwd.mkdir(exist_ok=True)
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    try:
        found = measure(overrides, cwd, {"MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(tree)})
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
    found["commit"] = commit
    found["stages"] = stage_seconds(found["run_id"], uri) if found["run_id"] else {}
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", required=True, help="comma-separated revisions, the baseline first")
    parser.add_argument("--name", required=True, help="results file name")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--metrics", default="test/psnr", help="comma-separated summary metrics to compare")
    parser.add_argument("overrides", nargs="+", help="the fieldkd run overrides, e.g. method=unikd")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fieldkd-commit-wall-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    keys = args.metrics.split(",")
    commits = [resolve(rev) for rev in args.commits.split(",")]  # before any run: HEAD may move meanwhile
    runs = [run_at(commit, args.overrides, workdir) for commit in commits]
    rows = []
    for r in runs:
        evaluation = sum(s["eval_seconds"] for s in r["stages"].values())
        rows.append([r["commit"], r["exit_code"], f"{r['wall_seconds'] / 60:.1f}", f"{r['cpu_seconds_sampled']:.0f}",
                     f"{evaluation:.0f}", f"{r['peak_pss_tree_gib']:.2f}", f"{r['load_before'][0]:.2f}",
                     *[f"{r['metrics'].get(k, float('nan')):.4g}" for k in keys]])
    first, last = runs[0], runs[-1]
    rows.append([f"{last['commit']} / {first['commit']}", "", f"{last['wall_seconds'] / first['wall_seconds']:.2f}x",
                 f"{last['cpu_seconds_sampled'] / max(first['cpu_seconds_sampled'], 1e-9):.2f}x", "", "", "",
                 *[f"{last['metrics'].get(k, float('nan')) - first['metrics'].get(k, float('nan')):+.3g}"
                   for k in keys]])
    table = markdown_table(["commit", "exit", "wall min", "CPU s (tree)", "evaluation s (stages)",
                            "peak PSS (GiB)", "1-min load at start", *keys], rows)
    overrides = " ".join(args.overrides)
    text = (f"`fieldkd run {overrides}` at {len(runs)} commits, one after the other (2 cores); the last row is "
            f"the last commit against the first (ratios; differences for the metrics).\n\n{table}\n\n"
            f"Command: `{command_line()}`\n")
    write_results(args.name, {"overrides": args.overrides, "runs": runs, "command": command_line()}, text)


if __name__ == "__main__":
    main()
