"""The CLI on a tiny scene, then the run as MLflow recorded it."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from controls import untrained_psnr
from mlflow.tracking import MlflowClient
from PIL import Image
import torch

from fieldkd.platform.cli import compose_config, main

GAIN = 4.0  # dB over the same field untrained


def fieldkd(args, cwd, uri):
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run([sys.executable, "-m", "fieldkd.platform.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def artifact_paths(client, run_id, path=None):
    found = []
    for item in client.list_artifacts(run_id, path):
        found += artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def test_run_baseline_and_find_it_in_mlflow(tiny_blender, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = ["method=baseline", "field=hash", "scene=blender", f"scene.path={tiny_blender}",
                 "trainer.steps=150", "trainer.eval_every=75", "trainer.checkpoint_every=75",
                 "trainer.batch_rays=512",
                 "field.log2_hashmap_size=12", "render.samples_per_ray=32", "eval.mesh=true",
                 "eval.mesh_resolution=32", "eval.mesh_level=2.0", "tracking.system_metrics_s=1",
                 f"output_dir={tmp_path / 'out'}"]
    proc = fieldkd(["run", *overrides], tmp_path, uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1  # stdout carries the summary line and nothing else
    summary = json.loads(lines[-1])
    assert set(summary) == {"run_id", "method", "metrics", "seconds"}
    assert summary["method"] == "baseline"
    # The same field untrained, on the same two views: 10.77 dB; this training, observed: 19.06 dB.
    control = untrained_psnr(compose_config(overrides))
    assert summary["metrics"]["test/psnr"] > control + GAIN, (summary["metrics"], control)

    client = MlflowClient(uri)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.steps"] == "150"
    assert run.data.params["field.name"] == "hash"
    assert run.data.tags["fieldkd.method"] == "baseline"
    assert run.data.tags["fieldkd.backend"] == "torch"
    assert run.data.tags["fieldkd.stage"] == "baseline"
    assert "fieldkd.lpips" in run.data.tags  # lpips weights are not installed here: the reason is recorded
    assert abs(run.data.metrics["test/psnr"] - summary["metrics"]["test/psnr"]) < 1e-9
    assert "mesh/chamfer" in run.data.metrics
    assert 0 < run.data.metrics["eval/seconds"] < summary["seconds"]  # what scoring took, beside training
    assert "eval/seconds" not in summary["metrics"]  # a cost, not a score
    assert run.data.metrics["system/system_memory_usage_megabytes"] > 0  # sampled while the run lasted
    assert "system/cpu_utilization_percentage" in run.data.metrics
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps[-1] == 150 and len(steps) >= 2
    assert len(client.get_metric_history(run.info.run_id, "val/psnr")) >= 1
    assert client.get_metric_history(run.info.run_id, "train/samples_per_second")[-1].value > 0
    artifacts = artifact_paths(client, run.info.run_id)
    assert "config.yaml" in artifacts
    assert "checkpoints/last.pt" in artifacts
    assert "mesh/mesh.ply" in artifacts
    # Renders are an image series at the final step (the UI's image grid), at a size a person can see.
    images = [a for a in artifacts if a.startswith("images/test~view_000+step+150+") and a.endswith(".png")]
    assert images, artifacts
    panel = np.asarray(Image.open(client.download_artifacts(run.info.run_id, images[0], str(tmp_path))))
    assert panel.shape[0] > 256 and panel.shape[1] >= 3 * 256  # 24 px views, enlarged; 3 panels and more
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "renders/test_per_view.json",
                                                      str(tmp_path))).read_text())
    assert table["columns"][:2] == ["view", "psnr"] and len(table["data"]) == 2
    assert abs(sum(row[1] for row in table["data"]) / 2 - summary["metrics"]["test/psnr"]) < 1e-6

    # What the UI shows: a model-training experiment, a telling run name, only the config the run uses.
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.info.run_name.startswith(f"baseline hash {tiny_blender.name} 20")
    assert not any(k.startswith(("distill.", "tune.")) for k in run.data.params)
    assert "supervision.rgb" in run.data.params and "render.samples_per_ray" in run.data.params


# The quick cases call the CLI's main() in this process: a Python start and the imports cost
# seconds each on two busy cores; the exit code through the process is checked by the run above.

def test_bad_input_is_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    missing = tmp_path / "no_such_scene"
    assert main(["run", "scene=blender", f"scene.path={missing}"]) == 2
    out, err = capsys.readouterr()
    message = err.strip().splitlines()[-1]
    assert "no_such_scene" in message and message.startswith("fieldkd: error:")
    assert out == ""


def test_bad_override_is_exit_code_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["run", "field=nonexistent"]) == 2
    out, err = capsys.readouterr()
    assert "nonexistent" in err.strip().splitlines()[-1] and out == ""


def test_scenes_make_writes_a_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["scenes", "make", "default", f"out={tmp_path / 's'}", "format=nerfstudio", "width=16",
                 "height=16", "n_train=3", "n_val=1", "n_test=1"]) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["format"] == "nerfstudio"
    assert (tmp_path / "s" / "transforms.json").exists()


def test_scenes_make_takes_the_orbit(tmp_path, capsys):
    from fieldkd.platform.scenes import load_scene

    assert main(["scenes", "make", "default", f"out={tmp_path / 's'}", "width=8", "height=8", "n_train=4",
                 "n_val=0", "n_test=1", "camera_radius=6", "elevation_range=30,30"]) == 0
    c2w = load_scene("blender", tmp_path / "s").split("train").cameras.c2w
    centres = c2w[:, :3, 3]
    assert torch.allclose(centres.norm(dim=-1), torch.full((4,), 6.0), atol=1e-4)
    assert torch.allclose(centres[:, 2] / 6.0, torch.full((4,), math.sin(math.radians(30))), atol=1e-4)
