"""UNIKD's first stage (chunk_0) at its defaults, with and without a change: time and quality.

    python benchmarks/unikd_first_chunk.py [--seeds 0,1] [--variants visible,every] [overrides...]

Each variant (VARIANTS: overrides on top of ``method=unikd``) trains the first chunk's
views for ``trainer.steps`` (600) from the same seed, one run after the other in
this process, and is scored on every test view of that chunk (the stream's own
evaluation, run during the stream, scores two). Reports training seconds, PSNR and
SSIM, per seed and their means, into results/unikd_first_chunk.{md,json}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, markdown_table, write_results  # noqa: E402

# "every": every one of the 128 samples per ray is evaluated in full (UNIKD before the visibility pass).
VARIANTS = {
    "visible": [],
    "every": ["render.min_alpha=0", "render.min_transmittance=0"],
}


def first_chunk(seed: int, overrides: list[str], workdir: Path) -> dict:
    import mlflow

    from fieldkd.methods.unikd import chunk_of_views, contiguous_chunks
    from fieldkd.platform.cli import compose_config
    from fieldkd.platform.stages import StageRequest, fit_stage, load_scene_from_config
    from fieldkd.platform.tracking import Run

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    cfg = compose_config(["method=unikd", f"seed={seed}", "trainer.progress=false", "tracking.system_metrics_s=0",
                          f"output_dir={workdir / 'out'}", *overrides])
    scene = load_scene_from_config(cfg["scene"])
    train = scene.split("train")
    chunks = contiguous_chunks(len(train), int(cfg["unikd"]["chunks"]))
    owner = chunk_of_views(train, chunks, scene.split(cfg["eval"]["split"]))
    views = [int(i) for i in np.flatnonzero(owner == 0)]
    run = Run.start(cfg["tracking"]["experiment"], f"chunk_0 seed {seed}")
    started = time.perf_counter()
    outcome = fit_stage(StageRequest(run.run_id[:8], run.run_id, uri, str(workdir / "out"), cfg, views=chunks[0],
                                     eval_groups={"chunk_0": views}, eval_views=views))
    seconds = time.perf_counter() - started
    from mlflow.tracking import MlflowClient

    logged = MlflowClient(uri).get_run(run.run_id).data.metrics
    return {"seed": seed, "seconds": seconds, "train_seconds": logged["train/seconds"],
            "views": len(views), "psnr": outcome.metrics["chunk_0/test/psnr"],
            "ssim": outcome.metrics["chunk_0/test/ssim"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--variants", default="visible,every")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fieldkd-unikd-chunk0-"))
    names = args.variants.split(",")
    results: dict[str, list[dict]] = {name: [] for name in names}
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in names:  # alternating variants: a changing load hits both alike
            found = first_chunk(seed, [*VARIANTS[name], *args.overrides], workdir / f"{name}-{seed}")
            print(name, found, flush=True)
            results[name].append(found)
    rows = []
    for name in names:
        for r in results[name]:
            rows.append([name, r["seed"], f"{r['train_seconds']:.0f}", f"{r['seconds']:.0f}", f"{r['psnr']:.2f}",
                         f"{r['ssim']:.3f}"])
        mean = lambda key: float(np.mean([r[key] for r in results[name]]))  # noqa: E731
        rows.append([f"**{name}** mean", "", f"{mean('train_seconds'):.0f}", f"{mean('seconds'):.0f}",
                     f"{mean('psnr'):.2f}", f"{mean('ssim'):.3f}"])
    views = results[names[0]][0]["views"]
    table = markdown_table(["variant", "seed", "training s", "stage s", f"PSNR ({views} views)", "SSIM"], rows)
    text = (f"UNIKD's chunk_0 stage at its defaults (`method=unikd`, {' '.join(args.overrides) or 'no overrides'}), "
            f"scored on every test view of the chunk; variants: "
            + "; ".join(f"{n}: {' '.join(VARIANTS[n]) or 'the defaults'}" for n in names)
            + f".\n\n{table}\n\nCommand: `{command_line()}`\n")
    write_results("unikd_first_chunk", {"results": results, "variants": {n: VARIANTS[n] for n in names},
                                        "command": command_line()}, text)


if __name__ == "__main__":
    main()
