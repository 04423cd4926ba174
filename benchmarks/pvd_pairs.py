"""PVD between every pair of field architectures: the teacher x student test PSNR matrix.

    python benchmarks/pvd_pairs.py [--fields mlp,hash,kplanes,vm,grid]
        [--teacher-seconds 120] [--student-seconds 120]     # wall budget per stage (default)
        [--teacher-steps N] [--student-steps N]             # or step budgets (independent of machine load)
        [--student-seconds-for mlp=240 ...]                 # a wall budget of its own for one student field
        [--teacher-seconds-for mlp=240 ...]                 # ... and for one teacher field
        [--pvd KEY=VALUE ...]                               # overrides of every distillation run
        [--pvd-for-teacher grid:KEY=VALUE ...]              # overrides of the distillations from one teacher field
        [--eval-views N]                                    # score each pair on the first N test views
        [--workdir /tmp/fieldkd-bench/pvd_pairs]

One teacher per field is trained once on the default scene
(`fieldkd run method=baseline field=A ...`), then every pair is distilled with
`fieldkd run method=pvd teacher.run_id=<A's run> teacher.field=A student.field=B ...`
(the teacher is only re-scored). A step budget, when given, replaces that stage's
wall budget; --student-seconds-for and --teacher-seconds-for give one field a wall
budget of its own (an MLP needs several times a grid's: it is the slowest field per
step). --pvd-for-teacher replaces (or adds) --pvd overrides for one teacher's row.
Finished runs are kept in WORKDIR/pvd_pairs.progress.json, keyed by field and
budget, so re-running resumes; every run goes to one MLflow store, WORKDIR/mlflow.db.
Stage logs are kept in WORKDIR/logs.

Writes results/pvd_pairs.json (per pair: teacher and student test PSNR, the gap
student - teacher, run ids, seconds), results/pvd_pairs.md (student PSNR and gap
matrices; bold: the student is within 1.5 dB of its teacher) and
results/pvd_pairs.png (heat map of the gap), and logs the three as artifacts of an
MLflow run named `benchmark-pvd_pairs` in the same store, tagged with the pair runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, command_line, write_results  # noqa: E402

NAME = "pvd_pairs"
HUGE_STEPS = 1_000_000  # a step budget no stage reaches: the wall budget stops it
LEAN = ["eval.lpips=false", "tracking.system_metrics_s=0", "trainer.progress=false"]
CLOSE_DB = 1.5  # a student within this many dB of its teacher is marked
BENCH_EXPERIMENT = "fieldkd-benchmarks"


class Work:
    """A resumable work dir: one MLflow store, the runs' logs and a JSON file of finished runs."""

    def __init__(self, path: str | Path, name: str):
        self.path = Path(path).resolve()
        (self.path / "logs").mkdir(parents=True, exist_ok=True)
        self.uri = f"sqlite:///{self.path / 'mlflow.db'}"
        self.progress_file = self.path / f"{name}.progress.json"
        self.done: dict = json.loads(self.progress_file.read_text()) if self.progress_file.is_file() else {}

    def cached(self, key: str, make) -> dict:
        """The finished entry ``key``, or ``make()``'s, recorded before it is returned."""
        if key in self.done:
            print(f"[done] {key}", flush=True)
            return self.done[key]
        print(f"[run ] {key}", flush=True)
        entry = make()
        self.done[key] = entry
        tmp = self.progress_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.done, indent=2) + "\n")
        os.replace(tmp, self.progress_file)  # atomic: an interrupt never leaves a torn file
        return entry

    def run(self, args: list[str], log_name: str) -> dict:
        """``fieldkd run ARGS`` in a child process (stderr to logs/LOG_NAME.log); its summary and wall time."""
        log = self.path / "logs" / f"{log_name.replace('/', '_')}.log"
        args = [*args, *LEAN, f"output_dir={self.path / 'outputs'}"]
        started = time.perf_counter()
        with open(log, "w") as err:
            err.write("fieldkd run " + " ".join(args) + "\n")
            err.flush()
            proc = subprocess.run([sys.executable, "-m", "fieldkd.platform.cli", "run", *args],
                                  stdout=subprocess.PIPE, stderr=err, text=True, cwd=self.path, check=False,
                                  env={**os.environ, "MLFLOW_TRACKING_URI": self.uri})
        if proc.returncode != 0:
            lines = log.read_text().splitlines() or [""]
            raise RuntimeError(f"fieldkd run {' '.join(args)} exited with {proc.returncode}: {lines[-1]} "
                               f"(log: {log})\n" + "\n".join(lines[-15:]))
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        summary["wall_seconds"] = time.perf_counter() - started
        return summary

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.uri)


def child_runs(client, parent_id: str) -> dict:
    """A pipeline run's child runs by their ``fieldkd.stage`` tag."""
    experiment = client.get_run(parent_id).info.experiment_id
    found = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return {r.data.tags.get("fieldkd.stage", r.info.run_id): r for r in found}


def log_benchmark_run(work: Work, name: str, params: dict, tags: dict, metrics: dict, write) -> str:
    """An MLflow run ``benchmark-NAME`` in the work dir's store; ``write(run_id)`` returns files to attach."""
    import mlflow

    mlflow.set_tracking_uri(work.uri)
    mlflow.set_experiment(BENCH_EXPERIMENT)
    with mlflow.start_run(run_name=f"benchmark-{name}") as run:
        mlflow.log_params(params)
        mlflow.set_tags(tags)
        if metrics:
            mlflow.log_metrics(metrics)
        for path in write(run.info.run_id):
            mlflow.log_artifact(str(path))
    return run.info.run_id


def budget(steps: int | None, seconds: float, prefix: str = "") -> tuple[list[str], str]:
    """Overrides bounding a stage by steps (if given) or wall seconds, and a tag naming that budget."""
    if steps:
        return [f"{prefix}trainer.steps={steps}"], f"{steps}steps"
    return [f"{prefix}trainer.max_seconds={seconds}", f"{prefix}trainer.steps={HUGE_STEPS}"], f"{seconds:g}s"


def seconds_for(option: str, items: list[str]) -> dict[str, float]:
    """``["mlp=240"]`` -> ``{"mlp": 240.0}``."""
    out = {}
    for item in items:
        field, sep, seconds = item.partition("=")
        if not sep:
            raise SystemExit(f"{option} {item!r}: expected FIELD=SECONDS")
        out[field] = float(seconds)
    return out


def overrides_for_teacher(items: list[str]) -> dict[str, list[str]]:
    """``["grid:distill.weights.density=0.002"]`` -> ``{"grid": ["distill.weights.density=0.002"]}``."""
    out: dict[str, list[str]] = {}
    for item in items:
        field, sep, override = item.partition(":")
        if not sep or "=" not in override:
            raise SystemExit(f"--pvd-for-teacher {item!r}: expected FIELD:KEY=VALUE")
        out.setdefault(field, []).append(override)
    return out


def merge_overrides(base: list[str], extra: list[str]) -> list[str]:
    """``base`` with each KEY of ``extra`` replaced in place (or appended): Hydra refuses a key twice."""
    merged = {o.partition("=")[0]: o for o in base}
    merged.update({o.partition("=")[0]: o for o in extra})
    return list(merged.values())


def train_teacher(work: Work, field: str, overrides: list[str]) -> dict:
    summary = work.run(["method=baseline", f"field={field}", *overrides], f"teacher-{field}")
    final = work.client().get_run(summary["run_id"]).data.metrics
    return {"field": field, "run_id": summary["run_id"], "test_psnr": summary["metrics"]["test/psnr"],
            "test_ssim": summary["metrics"].get("test/ssim"), "steps": int(final.get("train/steps", 0)),
            "train_seconds": final.get("train/seconds"), "seconds": summary["seconds"],
            "wall_seconds": summary["wall_seconds"]}


def distill_pair(work: Work, teacher: dict, student: str, overrides: list[str]) -> dict:
    name = f"{teacher['field']}-{student}"
    summary = work.run(["method=pvd", f"teacher.run_id={teacher['run_id']}", f"teacher.field={teacher['field']}",
                        f"student.field={student}", "tracking.log_checkpoint=false",  # no reuse: spare the disk
                        *overrides], f"pair-{name}")
    metrics = summary["metrics"]
    stages = child_runs(work.client(), summary["run_id"])
    student_run = stages["student"].data.metrics
    return {"teacher": teacher["field"], "student": student,
            "teacher_psnr": metrics["teacher/test/psnr"], "student_psnr": metrics["student/test/psnr"],
            "gap": metrics["student/test/psnr"] - metrics["teacher/test/psnr"],
            "teacher_ssim": metrics.get("teacher/test/ssim"), "student_ssim": metrics.get("student/test/ssim"),
            "run_id": summary["run_id"], "teacher_stage_run_id": stages["teacher"].info.run_id,
            "student_stage_run_id": stages["student"].info.run_id, "teacher_source_run_id": teacher["run_id"],
            "teacher_stage_steps": stages["teacher"].data.metrics.get("train/steps"),  # 0: only re-scored
            "student_steps": int(student_run.get("train/steps", 0)),
            "student_train_seconds": student_run.get("train/seconds"),
            "seconds": summary["seconds"], "wall_seconds": summary["wall_seconds"]}


def matrix_md(fields: list[str], teachers: dict, pairs: dict, cell) -> str:
    header = ["teacher \\ student", "teacher PSNR", *fields]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t in fields:
        # The teacher as its pairs scored it (their views), else as its baseline run did.
        scored = [p["teacher_psnr"] for (pt, _), p in pairs.items() if pt == t and "teacher_psnr" in p]
        psnr = scored[0] if scored else teachers[t]["test_psnr"] if t in teachers else None
        row = [f"**{t}**", "failed" if psnr is None else f"{psnr:.2f}"]
        for s in fields:
            pair = pairs.get((t, s))
            if pair is None:
                row.append("-")
            elif "error" in pair:
                row.append("failed")
            else:
                text = cell(pair)
                row.append(f"**{text}**" if pair["gap"] >= -CLOSE_DB else text)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def heat_map(fields: list[str], pairs: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    gaps = np.full((len(fields), len(fields)), np.nan)
    for i, t in enumerate(fields):
        for j, s in enumerate(fields):
            pair = pairs.get((t, s))
            if pair and "gap" in pair:
                gaps[i, j] = pair["gap"]
    finite = gaps[np.isfinite(gaps)]
    span = max(float(np.abs(finite).max()) if finite.size else 0.0, CLOSE_DB * 2)
    fig, ax = plt.subplots(figsize=(1.3 * len(fields) + 2.5, 1.1 * len(fields) + 1.8))
    image = ax.imshow(np.ma.masked_invalid(gaps), cmap="RdYlGn", vmin=-span, vmax=span)
    for i in range(len(fields)):
        for j in range(len(fields)):
            if np.isfinite(gaps[i, j]):
                close = gaps[i, j] >= -CLOSE_DB
                ax.text(j, i, f"{gaps[i, j]:+.2f}", ha="center", va="center", fontsize=10,
                        fontweight="bold" if close else "normal")
                if close:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="black"))
            else:
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=9, color="grey")
    ax.set_xticks(range(len(fields)), fields)
    ax.set_yticks(range(len(fields)), fields)
    ax.set_xlabel("student")
    ax.set_ylabel("teacher")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="student - teacher test PSNR (dB)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fields", default="mlp,hash,kplanes,vm,grid", help="rows and columns, in this order")
    parser.add_argument("--teacher-seconds", type=float, default=120.0, help="wall budget of a teacher's training")
    parser.add_argument("--student-seconds", type=float, default=120.0, help="wall budget of a distillation")
    parser.add_argument("--teacher-steps", type=int, default=None, help="step budget instead of --teacher-seconds")
    parser.add_argument("--student-steps", type=int, default=None, help="step budget instead of --student-seconds")
    parser.add_argument("--student-seconds-for", action="append", default=[], metavar="FIELD=SECONDS",
                        help="the wall budget of every distillation into FIELD (repeatable)")
    parser.add_argument("--teacher-seconds-for", action="append", default=[], metavar="FIELD=SECONDS",
                        help="the wall budget of the FIELD teacher (repeatable)")
    parser.add_argument("--pvd", action="append", default=[], metavar="KEY=VALUE",
                        help="an override of every pvd run, e.g. distill.weights.density=0.2 (repeatable)")
    parser.add_argument("--pvd-for-teacher", action="append", default=[], metavar="FIELD:KEY=VALUE",
                        help="an override of the pvd runs from the FIELD teacher; wins over --pvd (repeatable)")
    parser.add_argument("--eval-views", type=int, default=None,
                        help="score teacher and student of each pair on the first N test views (default: all)")
    parser.add_argument("--workdir", default="/tmp/fieldkd-bench/pvd_pairs",
                        help="MLflow store, checkpoints, logs and the progress file (kept: re-running resumes)")
    args = parser.parse_args()

    fields = args.fields.split(",")
    work = Work(args.workdir, NAME)
    own_seconds = seconds_for("--student-seconds-for", args.student_seconds_for)
    teacher_own_seconds = seconds_for("--teacher-seconds-for", args.teacher_seconds_for)
    teacher_pvd = overrides_for_teacher(args.pvd_for_teacher)

    def teacher_budget(field: str) -> tuple[list[str], str]:
        if field in teacher_own_seconds:
            return budget(None, teacher_own_seconds[field])
        return budget(args.teacher_steps, args.teacher_seconds)

    def student_budget(field: str, teacher: str = "") -> tuple[list[str], str]:
        if field in own_seconds:
            overrides, tag = budget(None, own_seconds[field], prefix="student.")
        else:
            overrides, tag = budget(args.student_steps, args.student_seconds, prefix="student.")
        if args.eval_views:  # both sides of a pair are scored on the same views, so the gap stays fair
            overrides, tag = [*overrides, f"eval.max_views={args.eval_views}"], f"{tag}/views{args.eval_views}"
        pvd = merge_overrides(args.pvd, teacher_pvd.get(teacher, []))
        return [*overrides, *pvd], tag + "".join(f"/{o}" for o in pvd)

    failures = []

    teachers = {}
    for field in fields:
        overrides, tag = teacher_budget(field)
        try:
            teachers[field] = work.cached(f"teacher/{field}/{tag}",
                                          lambda field=field, o=overrides: train_teacher(work, field, o))
        except RuntimeError as error:
            print(error, file=sys.stderr, flush=True)
            failures.append({"teacher": field, "error": str(error).splitlines()[0]})

    pairs = {}
    for t in fields:
        for s in fields:
            if t not in teachers:
                continue
            overrides, student_tag = student_budget(s, t)
            key = f"pair/{t}->{s}/{teacher_budget(t)[1]}/{student_tag}"
            try:
                pairs[(t, s)] = work.cached(key, lambda t=t, s=s, o=overrides: distill_pair(work, teachers[t], s, o))
            except RuntimeError as error:
                print(error, file=sys.stderr, flush=True)
                pairs[(t, s)] = {"teacher": t, "student": s, "error": str(error).splitlines()[0]}
                failures.append(pairs[(t, s)])
            if "gap" in pairs[(t, s)]:
                p = pairs[(t, s)]
                print(f"  {t} -> {s}: teacher {p['teacher_psnr']:.2f}  student {p['student_psnr']:.2f}  "
                      f"gap {p['gap']:+.2f} dB", flush=True)

    budgets = ((f"teacher {args.teacher_steps} steps" if args.teacher_steps else f"teacher {args.teacher_seconds:g} s")
               + ", " + (f"student {args.student_steps} steps" if args.student_steps
                         else f"student {args.student_seconds:g} s")
               + "".join(f" ({field} students {seconds:g} s)" for field, seconds in own_seconds.items())
               + "".join(f" ({field} teacher {seconds:g} s)" for field, seconds in teacher_own_seconds.items()))
    done = [p for p in pairs.values() if "gap" in p]
    close = [p for p in done if p["gap"] >= -CLOSE_DB]
    # With --eval-views the pvd run scores its teacher on fewer views than the baseline did.
    mismatched = [] if args.eval_views else [f"{p['teacher']}->{p['student']}" for p in done
                                             if abs(p["teacher_psnr"] - teachers[p["teacher"]]["test_psnr"]) > 1e-3]
    table = "\n".join([
        f"PVD on the default scene: every teacher x student pair; {budgets}; 2 CPU cores.",
        f"Command: `{command_line()}`",
        ("Rows: the teacher (trained once by `method=baseline`), columns: the student. "
         f"**Bold**: the student is within {CLOSE_DB} dB of its teacher."),
        *([f"Teacher PSNR: re-scored by each pvd run on the first {args.eval_views} test views."]
          if args.eval_views else []),
        *[f"Distillations from the {field} teacher also take: `{' '.join(o)}`." for field, o in teacher_pvd.items()],
        "",
        "Student test PSNR (dB), with the teacher's own test PSNR:",
        "",
        matrix_md(fields, teachers, pairs, lambda p: f"{p['student_psnr']:.2f}"),
        "",
        "Gap, student - teacher test PSNR (dB):",
        "",
        matrix_md(fields, teachers, pairs, lambda p: f"{p['gap']:+.2f}"),
        "",
        f"{len(close)} of {len(done)} pairs within {CLOSE_DB} dB"
        + (f"; {len(failures)} runs failed (see the JSON)" if failures else "") + ".",
        *([f"Teacher re-scored by pvd differs from its baseline score: {', '.join(mismatched)}"]
          if mismatched else []),
    ]) + "\n"
    payload = {"fields": fields, "teacher_seconds": None if args.teacher_steps else args.teacher_seconds,
               "student_seconds": None if args.student_steps else args.student_seconds,
               "teacher_steps": args.teacher_steps, "student_steps": args.student_steps,
               "student_seconds_for": own_seconds, "teacher_seconds_for": teacher_own_seconds,
               "pvd_overrides": args.pvd, "pvd_overrides_for_teacher": teacher_pvd,
               "command": command_line(),
               "close_db": CLOSE_DB, "teachers": teachers,
               "pairs": [pairs[(t, s)] for t in fields for s in fields if (t, s) in pairs],
               "failures": failures, "mlflow": {"tracking_uri": "WORKDIR/mlflow.db", "experiment": BENCH_EXPERIMENT}}

    def write(run_id: str) -> list[Path]:
        payload["mlflow"]["run_id"] = run_id
        write_results(NAME, payload, table + f"\nMLflow: run `{run_id}` (benchmark-{NAME}) in WORKDIR/mlflow.db\n")
        heat_map(fields, pairs, f"PVD gap, student - teacher test PSNR (dB)\n{budgets}", RESULTS / f"{NAME}.png")
        return [RESULTS / f"{NAME}.{ext}" for ext in ("json", "md", "png")]

    tags = {f"pair.{p['teacher']}.{p['student']}": p["run_id"] for p in done}
    tags.update({f"teacher.{f}": t["run_id"] for f, t in teachers.items()})
    params = {"fields": args.fields, "teacher_budget": teacher_budget("")[1], "student_budget": student_budget("")[1],
              **{f"student_seconds_for.{f}": v for f, v in own_seconds.items()},
              **{f"teacher_seconds_for.{f}": v for f, v in teacher_own_seconds.items()}}
    metrics = {f"gap.{p['teacher']}.{p['student']}": p["gap"] for p in done}
    run_id = log_benchmark_run(work, NAME, params, tags, metrics, write)
    print(f"benchmark run {run_id} in {work.uri}")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
