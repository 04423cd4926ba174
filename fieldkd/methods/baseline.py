"""baseline: one field trained on all training views, then evaluated."""

from __future__ import annotations

from fieldkd.platform.stages import RunContext, run_stages


def run(ctx: RunContext) -> dict[str, float]:
    outcome = run_stages(ctx, [ctx.request("baseline")], distributed=True)["baseline"]
    return outcome.metrics
