"""baseline: one field trained on all training views, then evaluated."""

from __future__ import annotations

from fieldkd.platform.stages import RunContext, evaluate_field, load_scene_from_config, train_field


def run(ctx: RunContext) -> dict[str, float]:
    scene = load_scene_from_config(ctx.cfg["scene"])
    trained = train_field(ctx, scene, ctx.run, stage="baseline")
    ctx.run.set_tags(ctx.tags(field=ctx.cfg["field"]["name"], backend=trained.backend, stage="baseline"))
    return evaluate_field(ctx, trained, scene, ctx.run)
