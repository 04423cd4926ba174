"""How a trained radiance field is scored (see :mod:`.evaluators`): ``views`` renders the evaluation
split and scores it, ``mesh`` extracts a mesh by marching cubes and compares it with the scene's."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from .evaluate.image import make_lpips
from .evaluate.mesh import extract_mesh, load_mesh, mesh_metrics
from .evaluate.views import evaluate_views
from .evaluators import register_evaluator
from .render.renderer import Renderer
from .scenes.scene import Scene
from .stage_request import RunContext, TrainedField
from .tracking import Run


def monocular_depth(scene: Scene) -> bool:
    """True when the scene's depth is scale-free (MonoSDF's monocular cues): metrics align it first."""
    return scene.extras.get("depth_kind") == "monocular"


def periodic_validation(cfg: dict, scene: Scene, renderer: Renderer, field: torch.nn.Module,
                        device: torch.device):
    """The validation PSNR the trainer logs every ``trainer.eval_every`` steps (a few views only)."""
    val = scene.split("val")
    views = range(min(int(cfg["eval"]["periodic_views"]), len(val)))
    align = monocular_depth(scene)
    return lambda step: evaluate_views(renderer, field, val, views, device, prefix="val", depth_align=align).metrics


@register_evaluator("views")
def evaluate_rendered_views(ctx: RunContext, request, parts, trained: TrainedField) -> dict[str, float]:
    """Render the evaluation split and score it (PSNR, SSIM, LPIPS, depth), with pictures and a per-view
    table; the request's ``eval_groups`` also average the scores over named subsets of the views, and its
    ``eval_views`` (where given) are the only ones rendered."""
    ecfg, scene, run, groups = ctx.cfg["eval"], parts.scene, ctx.run, request.eval_groups
    split = scene.split(ecfg["split"])
    views = range(min(len(split), ecfg["max_views"] or len(split)))
    if request.eval_views is not None:
        views = [v for v in request.eval_views if v in views]
    lpips, reason = make_lpips(device=str(ctx.device)) if ecfg["lpips"] else (None, "disabled by eval.lpips")
    if lpips is None:
        run.set_tags({"fieldkd.lpips": f"skipped: {reason}"})
    scores = evaluate_views(trained.renderer, trained.field, split, views, ctx.device, lpips=lpips,
                            keep_images=int(ecfg["log_images"]), depth_align=monocular_depth(scene))
    metrics = dict(scores.metrics)
    for name, group in (groups or {}).items():
        metrics.update(scores.over(group, f"{name}/{ecfg['split']}"))
    step = trained.result.steps
    for view, panel in zip(scores.views, scores.images):
        run.log_image(panel, f"{ecfg['split']}/view_{view:03d}", step)
    log_per_view(run, scores, ecfg["split"])
    return metrics


def log_per_view(run: Run, scores, split: str) -> None:
    """The scores of each view: an MLflow table (``renders/<split>_per_view.json``) and a TSV."""
    columns = {"view": scores.views, **scores.per_view}
    run.log_table(columns, f"renders/{split}_per_view.json")
    rows = ["\t".join(columns)] + ["\t".join(str(values[i]) if name == "view" else f"{values[i]:.4f}"
                                              for name, values in columns.items()) for i in range(len(scores.views))]
    run.log_text("\n".join(rows) + "\n", f"renders/{split}_per_view.tsv")


@register_evaluator("mesh")
def evaluate_mesh(ctx: RunContext, request, parts, trained: TrainedField) -> dict[str, float]:
    """Marching cubes on the density (with ``eval.mesh``), then Chamfer / F-score against the scene's mesh."""
    from .scenes.ply import write_ply

    ecfg, scene, run = ctx.cfg["eval"], parts.scene, ctx.run
    if not ecfg["mesh"]:
        return {}
    field = trained.field
    # A field with a surface of its own (an SDF's zero level) says where it is; else a density level.
    surface, level = field.surface() if hasattr(field, "surface") else (field.density, float(ecfg["mesh_level"]))
    grid = trained.renderer.grid if trained.renderer is not None else None
    # A density is asked only in the occupancy grid's occupied cells: the renderer sees nothing elsewhere.
    keep = grid.query if grid is not None and not hasattr(field, "surface") else None
    try:
        verts, faces = extract_mesh(surface, scene.aabb, resolution=int(ecfg["mesh_resolution"]),
                                    level=level, device=next(field.parameters()).device, keep=keep)
    except ValueError as exc:
        run.set_tags({"fieldkd.mesh": f"skipped: {exc}"})
        return {}
    world = scene.extras.get("world_from_scene")
    if world is not None:  # the ground truth and the F-score threshold are in world units
        world = np.asarray(world, dtype=np.float64)
        verts = (verts @ world[:3, :3].T + world[:3, 3]).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mesh.ply"
        write_ply(path, verts, faces)
        run.log_artifact(path, "mesh")
    if scene.mesh_path is None:
        return {}
    gt_verts, gt_faces = load_mesh(scene.mesh_path)
    found = mesh_metrics(verts, faces, gt_verts, gt_faces, threshold=float(ecfg["mesh_threshold"]))
    return {f"mesh/{k}": v for k, v in found.items() if k in ("chamfer", "fscore", "accuracy", "completeness")}
