"""Hash-field training steps: where a step's time goes, and what each speed-up buys.

    python benchmarks/step_speed.py [--warmup 80] [--rounds 4] [--block 16] [--quality-steps 1000]
                                    [--threads 1] [--variants before,defaults,packed,sparse_adam] [overrides...]
    python benchmarks/step_speed.py --profile [--warmup 80] [--steps 32] [overrides...]

Builds the default config's scene, hash field (torch backend), renderer and
photometric task in this process, as a plain training stage does, and steps it
by hand: render and loss, backward, optimizer step, occupancy refresh.

Speed mode trains one copy per variant (VARIANTS: config overrides on top of the
defaults; "before" is the step as it was before the fused optimizer, the
capped occupancy refresh and the hash grid's compiled CPU kernel) from the same seed, each warmed up past the occupancy
grid's warm-up, then times them in interleaved blocks of steps (so that a shared
machine's changing load hits all alike) and reports steps/s and samples/s
relative to the first variant. Then every variant trains on to
``--quality-steps`` and is scored on the test views: the same quality per step
is part of the claim.

Profile mode times the phases of the default step and, separately, the field
alone (forward and backward on the very points and directions that step sent
it, with the same gradients), which splits rendering into field and layout.
Shares of the step are written to results/profile_hash_step.md, with the
profiler's busiest operators.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, command_line, markdown_table, write_results  # noqa: E402

from fieldkd.platform.config import compose_config  # noqa: E402
from fieldkd.platform.evaluate.views import evaluate_views  # noqa: E402
from fieldkd.platform.fields import build_field  # noqa: E402
from fieldkd.platform.render import RenderConfig, Renderer  # noqa: E402
from fieldkd.platform.scenes import default_scene_dir, load_scene  # noqa: E402
from fieldkd.platform.train.loop import TrainerConfig, make_optimizer, seed_everything  # noqa: E402
from fieldkd.platform.train.photometric import PhotometricTask  # noqa: E402
from fieldkd.platform.train.sparse_adam import touched_rows  # noqa: E402


class Recording(torch.nn.Module):
    """The field, remembering its last inputs (for timing the field alone) and its outputs' gradients."""

    def __init__(self, field):
        super().__init__()
        self.field = field
        self.last = None

    def forward(self, x, d):
        out = self.field(x, d)
        self.last = (x.detach(), d.detach(), out)
        return out


def scene_of(cfg: dict):
    scene_cfg = cfg["scene"]
    path = scene_cfg["path"] or default_scene_dir(scene_cfg["generate"], scene_cfg["format"])
    return load_scene(scene_cfg["format"], path, background=tuple(scene_cfg["background"]))


VARIANTS = {
    "before": ["trainer.fused=false", "render.occupancy_refresh_share=null", "field.hash_kernel=torch"],
    "defaults": [],
    "full_refresh": ["render.occupancy_refresh_share=null"],
    "packed": ["render.packed=true"],
    "sparse_adam": ["trainer.optimizer=sparse_adam"],
    # the hash grid on torch operations alone, without the compiled CPU kernel
    "torch_ops": ["field.hash_kernel=torch"],
    # without a tight box (rooms: field=sdf scene=indoor): every sample of the march, or proposals
    "dense": ["render.occupancy=false"],
    "proposal": ["render.sampler=proposal"],
}


def build(cfg: dict, scene):
    seed_everything(cfg["seed"])
    options = {k: v for k, v in cfg["field"].items() if k != "name"}
    options["backend"] = "torch"
    field = build_field(cfg["field"]["name"], scene.aabb, **options)
    renderer = Renderer(scene.aabb, scene.near, scene.far, scene.background, RenderConfig(**cfg["render"]))
    wrapped = Recording(field)
    task = PhotometricTask(field, renderer, scene.split("train"), int(cfg["trainer"]["batch_rays"]),
                           torch.device("cpu"), forward=wrapped)
    trainer_cfg = TrainerConfig.from_dict(cfg["trainer"])
    return task, make_optimizer(task.param_groups(trainer_cfg.lr), trainer_cfg), wrapped


class Run:
    """One training being stepped by hand, with the time of each phase of its last step."""

    def __init__(self, name: str, cfg: dict, scene):
        self.name = name
        self.task, self.optimizer, self.recorder = build(cfg, scene)
        self.step_index = 0
        self.touched = []  # with count_touched: the share of hash-table rows each step's gradient touched
        self.count_touched = False

    def step(self) -> tuple[dict, int]:
        clock = time.perf_counter
        t0 = clock()
        loss, _, n_samples = self.task.training_step(self.step_index)
        t1 = clock()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = clock()
        if self.count_touched:
            table = self.task.field.encoding.table
            self.touched.append(touched_rows(table.grad).numel() / table.shape[0])
            t2 = clock()
        self.optimizer.step()
        t3 = clock()
        self.task.after_step(self.step_index)
        t4 = clock()
        self.step_index += 1
        return {"render_loss": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2, "occupancy": t4 - t3}, n_samples

    def field_alone(self) -> tuple[float, float]:
        """Forward and backward of the field alone on the last step's inputs (no update)."""
        x, d, out = self.recorder.last
        field = self.task.field
        grads = [torch.randn_like(out.density), torch.randn_like(out.rgb)]
        t0 = time.perf_counter()
        again = field(x, d)
        t1 = time.perf_counter()
        torch.autograd.backward([again.density, again.rgb], grads)
        t2 = time.perf_counter()
        field.zero_grad(set_to_none=True)
        return t1 - t0, t2 - t1


def load_average() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def speed(overrides: list[str], args) -> None:
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    configs = {n: compose_config(["method=baseline", *overrides, *VARIANTS[n]]) for n in names}
    scene = scene_of(configs[names[0]])
    runs = [Run(n, configs[n], scene) for n in names]
    for run in runs:
        for _ in range(args.warmup):
            run.step()
    load_before = load_average()
    seconds = {r.name: 0.0 for r in runs}
    samples = {r.name: 0 for r in runs}
    steps = {r.name: 0 for r in runs}
    for _ in range(args.rounds):
        for run in runs:
            for _ in range(args.block):
                phases, n = run.step()
                seconds[run.name] += sum(phases.values())
                samples[run.name] += n
                steps[run.name] += 1
    load_after = load_average()
    test = scene.split("test")
    views = list(range(min(len(test), args.eval_views)))
    quality = {}
    for run in runs:
        while run.step_index < args.quality_steps:
            run.step()
        scores = evaluate_views(run.task.renderer, run.task.field, test, views=views)
        quality[run.name] = scores.metrics["test/psnr"]
    base = runs[0].name
    rows, payload = [], {"command": command_line(), "load_average_before": load_before,
                         "load_average_after": load_after, "threads": torch.get_num_threads(),
                         "quality_steps": args.quality_steps, "eval_views": len(views), "variants": {}}
    for run in runs:
        sps, samps = steps[run.name] / seconds[run.name], samples[run.name] / seconds[run.name]
        payload["variants"][run.name] = {"overrides": VARIANTS[run.name], "steps_per_s": sps, "samples_per_s": samps,
                                         "steps": steps[run.name], "test_psnr": quality[run.name]}
        rows.append([run.name, " ".join(VARIANTS[run.name]) or "(none)", sps / (steps[base] / seconds[base]),
                     samps / (samples[base] / seconds[base]), f"{samps:.3g}", samples[run.name] / steps[run.name],
                     f"{quality[run.name]:.2f}"])
    table = markdown_table(["variant", "overrides", f"steps/s (x {base})", f"samples/s (x {base})", "samples/s",
                            "field samples/step", f"test PSNR at step {args.quality_steps}"], rows)
    text = (f"# Training steps: what each variant buys, and the quality per step\n\n`{command_line()}`\n\n"
            f"Load average {load_before} before the timed steps, {load_after} after ({os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch thread(s)); ratios are measured in one run. {args.warmup} warm-up "
            f"steps each, then {args.rounds} interleaved rounds of {args.block} steps per variant; then each "
            f"trains on to step {args.quality_steps} and is scored on the first {len(views)} test views.\n\n{table}")
    write_results(args.name, payload, text)


def profile(overrides: list[str], args) -> None:
    cfg = compose_config(["method=baseline", *overrides])
    run = Run("defaults", cfg, scene_of(cfg))
    for _ in range(args.warmup):
        run.step()
    run.count_touched = True
    load_before = load_average()
    totals = {"render_loss": [], "backward": [], "optimizer": [], "occupancy": [], "field_fwd": [], "field_bwd": []}
    n_samples = []
    for _ in range(args.steps):
        phases, n = run.step()
        for k, v in phases.items():
            totals[k].append(v)
        fwd, bwd = run.field_alone()
        totals["field_fwd"].append(fwd)
        totals["field_bwd"].append(bwd)
        n_samples.append(n)
    mean = {k: statistics.fmean(v) for k, v in totals.items()}
    step = mean["render_loss"] + mean["backward"] + mean["optimizer"] + mean["occupancy"]
    field = mean["field_fwd"] + mean["field_bwd"]
    layout = mean["render_loss"] + mean["backward"] - field
    every = cfg["render"]["occupancy_update_every"]
    rows = [
        ["field forward (hash encoding + MLPs)", mean["field_fwd"] / step],
        ["field backward", mean["field_bwd"] / step],
        [f"optimizer step ({cfg['trainer']['optimizer']}{', fused' if cfg['trainer'].get('fused') else ''}, "
         "the whole table)", mean["optimizer"] / step],
        [f"occupancy refresh (every {every} steps, amortised)", mean["occupancy"] / step],
        [f"sampling, culling, {'packed' if cfg['render']['packed'] else 'padded'} compositing, loss (fwd + bwd)",
         layout / step],
    ]
    run.count_touched = False  # the profiled steps are plain steps: counting rows adds two passes over the table
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.profiled_steps):
            run.step()
    ops = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40)
    table = markdown_table(["part of a default hash training step", "share of the step"], rows)
    text = (f"# Where a default hash training step goes (CPU)\n\n`{command_line()}`\n\n"
            f"Load average {load_before} before, {load_average()} after ("
            f"{os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s)); shares of the step, not "
            f"absolute times. Default config (hash field, torch backend, {cfg['trainer']['batch_rays']} rays x "
            f"{cfg['render']['samples_per_ray']} samples, occupancy grid), steps {args.warmup}-"
            f"{args.warmup + args.steps} (after the grid's warm-up), mean "
            f"{statistics.fmean(n_samples):.0f} field samples per step, whose gradient touched "
            f"{statistics.fmean(run.touched):.0%} of the hash table's rows. The field's share is its forward and "
            f"backward timed alone on the same points; the layout row is the rest of rendering, loss and "
            f"backward.\n\n{table}\n\nBusiest operators over {args.profiled_steps} further steps "
            f"(torch profiler, self CPU time):\n\n```\n{ops}\n```")
    payload = {"command": command_line(), "load_average_before": load_before,
               "mean_seconds": mean, "samples_per_step": statistics.fmean(n_samples),
               "touched_row_share": statistics.fmean(run.touched)}
    write_results("profile_hash_step", payload, text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--warmup", type=int, default=80, help="steps before timing (past the grid's warm-up)")
    parser.add_argument("--steps", type=int, default=32, help="profile: timed steps")
    parser.add_argument("--profiled-steps", type=int, default=16, help="profile: steps under the torch profiler")
    parser.add_argument("--rounds", type=int, default=4, help="speed: interleaved rounds")
    parser.add_argument("--block", type=int, default=16, help="speed: steps per variant and round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="before,defaults,packed,sparse_adam",
                        help=f"speed: a comma-separated list of {sorted(VARIANTS)}; the first is the reference")
    parser.add_argument("--quality-steps", type=int, default=1000, help="speed: steps before the test PSNR")
    parser.add_argument("--eval-views", type=int, default=10, help="speed: test views scored")
    parser.add_argument("--name", default="step_speed", help="speed: results/NAME.md and .json")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for fieldkd run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (profile if args.profile else speed)(args.overrides, args)


if __name__ == "__main__":
    main()
