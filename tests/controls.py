"""Controls for end-to-end scores: what the same field scores before it learns anything.

A trained score means something only against a control that a broken training would also
reach: the configured field and renderer, freshly built and not trained, scored by the same
evaluation on the same views that the run's own ``test/`` metrics come from.
"""

from __future__ import annotations

import torch
from mlflow.tracking import MlflowClient

from fieldkd.platform.evaluate.views import evaluate_views
from fieldkd.platform.stages import load_scene_from_config, make_field, make_renderer


def untrained_scores(cfg: dict, field: dict | None = None, seed: int | None = None) -> dict[str, float]:
    """The ``{split}/...`` metrics of an untrained ``field`` (default: ``cfg["field"]``) with
    ``cfg``'s renderer, on the views the run scores (``eval.split``, the first ``eval.max_views``)."""
    scene = load_scene_from_config(cfg["scene"])
    device = torch.device("cpu")
    torch.manual_seed(int(cfg["seed"] if seed is None else seed))
    model, _ = make_field(field or cfg["field"], scene, device)
    renderer = make_renderer(cfg, scene, device)
    ecfg = cfg["eval"]
    split = scene.split(ecfg["split"])
    views = range(min(len(split), ecfg["max_views"] or len(split)))
    align = scene.extras.get("depth_kind") == "monocular"
    with torch.no_grad():
        return evaluate_views(renderer, model, split, views, device, prefix=ecfg["split"],
                              depth_align=align).metrics


def untrained_psnr(cfg: dict, field: dict | None = None, seed: int | None = None) -> float:
    return untrained_scores(cfg, field, seed)[f"{cfg['eval']['split']}/psnr"]


def child_metrics(uri: str, parent_id: str, stage: str) -> dict[str, float]:
    """The metrics logged on the child run of ``stage`` under ``parent_id``, read back from the store."""
    client = MlflowClient(uri)
    found = client.search_runs([client.get_run(parent_id).info.experiment_id],
                               f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`fieldkd.stage` = '{stage}'")
    assert len(found) == 1, (stage, [r.info.run_id for r in found])
    return found[0].data.metrics
