"""unikd: incremental neural fields with uncertainty-filtered distillation (methods.md §3).

The training views arrive as ``unikd.chunks`` contiguous chunks of the
trajectory. ``chunk_0`` is fit on its own views; at each later chunk the
previous field is frozen as the teacher, and the student (starting from
it) fits the new chunk while the teacher recalls the past at poses
interpolated along the trajectory seen so far, where the teacher is sure
(``unikd.threshold`` on its rendered uncertainty).

Baselines (``unikd.baselines``), run in the same pipeline from the same
``chunk_0``: ``finetune`` (each chunk fit alone, no teacher), ``nofilter``
(teacher without the filter), ``joint`` (every view at once, for as many
steps as the whole stream). Streams run concurrently on the actor pool;
``unikd.streams`` adds whole streams with other settings (seeds, thresholds).

Summary: the stream's final field unprefixed (``test/psnr``,
``chunk_k/test/psnr``, ``mesh/*``, ``forgetting/mean``), each baseline and
extra stream under its name. The parent run holds ``chunks/views.tsv`` and
the forgetting matrices (``forgetting/matrix.tsv``, ``forgetting/matrix.png``).
"""

from __future__ import annotations

import copy

import numpy as np

from fieldkd.platform.distill.stage import TeacherRef
from fieldkd.platform.errors import InputError
from fieldkd.platform.evaluate.forgetting import forgetting, forgetting_matrix, matrix_figure, matrix_table
from fieldkd.platform.scenes.scene import SceneSplit
from fieldkd.platform.stages import (RunContext, StageOutcome, StageRequest, load_scene_from_config, prefixed,
                                     run_stages, run_streams, stage_config)

BASELINES = ("finetune", "nofilter", "joint")
FILTERS = ("pose", "ray")


def contiguous_chunks(n_views: int, chunks: int) -> list[list[int]]:
    """The views 0..n-1, in order, cut into ``chunks`` runs of near-equal length."""
    if not 1 <= chunks <= n_views:
        raise ValueError(f"unikd.chunks must be between 1 and the {n_views} training views, got {chunks}")
    return [part.tolist() for part in np.array_split(np.arange(n_views), chunks)]


def chunk_of_views(train: SceneSplit, chunks: list[list[int]], views: SceneSplit) -> np.ndarray:
    """The chunk of each view of another split: that of the nearest training camera,
    by position plus viewing direction (so a test frame joins its stretch of the path)."""
    owner = np.empty(len(train), dtype=int)
    for k, group in enumerate(chunks):
        owner[group] = k
    centres, forwards = train.cameras.centers.numpy(), -train.cameras.c2w[:, :3, 2].numpy()
    scale = max(float(np.linalg.norm(centres.max(0) - centres.min(0))), 1e-6)
    dist = (np.linalg.norm(views.cameras.centers.numpy()[:, None] - centres[None], axis=-1) / scale
            + (1.0 - (-views.cameras.c2w[:, :3, 2].numpy())[:, None] @ forwards.T[None]).squeeze(1) * 0.5)
    return owner[dist.argmin(axis=1)]


def evenly_spaced(views: list[int], count: int | None) -> list[int]:
    """``count`` of ``views``, spread from the first to the last (all of them when ``count`` is None or
    not smaller)."""
    if count is None or count >= len(views):
        return list(views)
    picks = np.unique(np.round(np.linspace(0, len(views) - 1, int(count))).astype(int))
    return [views[i] for i in picks]


def with_overrides(cfg: dict, overrides: dict) -> dict:
    """A deep copy of ``cfg`` with dotted keys set (``{"unikd.threshold": 0.01, "seed": 1}``)."""
    out = copy.deepcopy(cfg)
    for dotted, value in (overrides or {}).items():
        node, keys = out, str(dotted).split(".")
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise InputError(f"unikd.streams: {dotted}", f"no config section {key!r}")
            node = node[key]
        if keys[-1] not in node:
            raise InputError(f"unikd.streams: {dotted}", "no such config key")
        node[keys[-1]] = value
    return out


class Stream:
    """The stages of one stream, planned from one config: requests and their checkpoints."""

    def __init__(self, ctx: RunContext, cfg: dict, prefix: str = ""):
        self.ctx, self.cfg, self.prefix, self.u = ctx, cfg, prefix, cfg["unikd"]
        if self.u["filter"] not in FILTERS:
            raise InputError("unikd.filter", f"one of {', '.join(FILTERS)}, got {self.u['filter']!r}")
        if self.u["threshold"] is not None and not cfg["field"].get("uncertainty"):
            raise InputError("unikd.threshold", "the filter reads the teacher's uncertainty: set "
                                                "field.uncertainty=true (or unikd.threshold=null for no filter)")
        scene = load_scene_from_config(cfg["scene"])
        self.train = scene.split("train")
        try:
            self.chunks = contiguous_chunks(len(self.train), int(self.u["chunks"]))
        except ValueError as exc:
            raise InputError("unikd.chunks", str(exc)) from exc
        test_owner = chunk_of_views(self.train, self.chunks, scene.split(cfg["eval"]["split"]))
        self.groups = {f"chunk_{k}": [int(i) for i in np.flatnonzero(test_owner == k)] for k in range(len(self.chunks))}
        self.groups = {name: views for name, views in self.groups.items() if views}

    def name(self, stage: str) -> str:
        return f"{self.prefix}_{stage}" if self.prefix else stage

    def stage_cfg(self, t: int | None, threshold, steps_scale: int = 1) -> dict:
        """Chunk t's config (None: the joint baseline's): its place in the stream, the filter,
        and a mesh only where a stream ends."""
        cfg, u = self.cfg, self.u
        stage = stage_config(cfg, cfg["field"])
        last = t is None or t == len(self.chunks) - 1
        stage["eval"] = {**cfg["eval"], "mesh": bool(u["mesh"]) and last}
        if t is not None:
            n = len(self.chunks)
            stage["distill"] = {**cfg["distill"], "stream_span": [t / n, (t + 1) / n], "kd_weight": u["kd_weight"],
                                "uncertainty_threshold": threshold, "uncertainty_level": u["filter"],
                                "uncertainty_tries": u["max_tries"]}
        if steps_scale > 1:
            trainer = stage["trainer"]
            trainer["steps"] = int(trainer["steps"]) * steps_scale
            if trainer.get("max_seconds"):
                trainer["max_seconds"] = float(trainer["max_seconds"]) * steps_scale
        return stage

    def request(self, stage: str, cfg: dict, last: bool = True, **options) -> StageRequest:
        """A stage of the stream; one before the stream's ``last`` scores only ``eval.during_stream_views``
        views of each chunk (cheaper; its row of the forgetting matrix is then an estimate)."""
        name = self.name(stage)
        groups, views = self.groups, None
        count = cfg["eval"].get("during_stream_views")
        if not last and count is not None:
            groups = {chunk: evenly_spaced(group, int(count)) for chunk, group in self.groups.items()}
            views = sorted(v for group in groups.values() for v in group)
        return self.ctx.request(name, self.ctx.child(name, cfg), cfg, eval_groups=groups, eval_views=views,
                                **options)

    def checkpoint(self, stage: str) -> str:
        return str(self.ctx.stage_dir(self.name(stage)) / "last.pt")

    def first(self, report: bool = False) -> StageRequest:
        return self.request("chunk_0", self.stage_cfg(0, None), last=len(self.chunks) == 1, views=self.chunks[0],
                            report=report)

    def later(self, kind: str, start: str, report: bool = False) -> list[StageRequest]:
        """Chunks 1.. of a stream starting from the checkpoint of stage ``start``: ``unikd``
        (filtered teacher), ``nofilter`` (teacher, no filter) or ``finetune`` (no teacher)."""
        threshold = self.u["threshold"] if kind == "unikd" else None
        requests, previous = [], start
        for t in range(1, len(self.chunks)):
            stage = f"chunk_{t}" if kind == "unikd" else f"{kind}_chunk_{t}"
            cfg = self.stage_cfg(t, threshold)
            field = cfg["field"]
            options = {"init": self.checkpoint(previous), "views": self.chunks[t], "report": report}
            if kind != "finetune":
                past = [v for chunk in self.chunks[:t] for v in chunk]
                options.update(task="incremental", teacher=TeacherRef(self.checkpoint(previous), field),
                               teacher_views=past)
            requests.append(self.request(stage, cfg, last=t == len(self.chunks) - 1, **options))
            previous = stage
        return requests

    def joint(self) -> StageRequest:
        return self.request("joint", self.stage_cfg(None, None, steps_scale=len(self.chunks)))

    def table(self) -> str:
        lines = ["view\tframe\tchunk"]
        for k, group in enumerate(self.chunks):
            lines += [f"{v}\t{self.train.frame_paths[v]}\t{k}" for v in group]
        return "\n".join(lines) + "\n"


def check_baselines(names) -> list[str]:
    names = list(names or [])
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise InputError("unikd.baselines", f"unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)}")
    return names


def stream_metrics(outcomes: list[StageOutcome], chunks: int) -> tuple[dict[str, float], np.ndarray]:
    """The final stage's metrics and the forgetting matrix of the whole stream."""
    matrix = forgetting_matrix([o.metrics for o in outcomes], chunks)
    metrics = dict(outcomes[-1].metrics)
    if matrix.shape[0] == chunks and chunks > 1:
        metrics["forgetting/mean"] = float(np.nanmean(forgetting(matrix)[:-1]))
    return metrics, matrix


def run(ctx: RunContext) -> dict[str, float]:
    cfg, u = ctx.cfg, ctx.cfg["unikd"]
    baselines = check_baselines(u["baselines"])
    main = Stream(ctx, cfg)
    ctx.run.log_text(main.table(), "chunks/views.tsv")
    ctx.run.log_metrics({f"chunks/chunk_{k}/views": len(c) for k, c in enumerate(main.chunks)}, 0)

    first = run_stages(ctx, [main.first(report=True)])["chunk_0"]
    streams = {"unikd": main.later("unikd", "chunk_0", report=True)}
    for kind in ("finetune", "nofilter"):
        if kind in baselines:
            streams[kind] = main.later(kind, "chunk_0")
    if "joint" in baselines:
        streams["joint"] = [main.joint()]
    extra = {}
    for name, overrides in (u.get("streams") or {}).items():
        if name in streams or name in BASELINES:
            raise InputError(f"unikd.streams.{name}", "a stream name must differ from the baselines' and 'unikd'")
        extra[name] = Stream(ctx, with_overrides(cfg, overrides), prefix=name)
        streams[name] = [extra[name].first()] + extra[name].later("unikd", "chunk_0")
    streams = {name: requests for name, requests in streams.items() if requests}
    done = run_streams(ctx, streams)

    n = len(main.chunks)
    metrics, matrices = {}, {}
    own, matrices["unikd"] = stream_metrics([first] + done.get("unikd", []), n)
    metrics.update(own)
    for name in ("finetune", "nofilter"):
        if name in done:
            found, matrices[name] = stream_metrics([first] + done[name], n)
            metrics.update(prefixed(found, name))
    if "joint" in done:
        found, matrices["joint"] = stream_metrics(done["joint"], n)
        metrics.update(prefixed(found, "joint"))
    for name, stream in extra.items():
        found, matrices[name] = stream_metrics(done[name], len(stream.chunks))
        metrics.update(prefixed(found, name))
    ctx.run.log_text(matrix_table(matrices), "forgetting/matrix.tsv")
    ctx.run.log_figure(matrix_figure(matrices), "forgetting/matrix.png")
    return metrics
