"""Stages that train a BTS density field over driving sequences, registered as the platform's stage
kinds (:mod:`fieldkd.platform.stage_kinds`):

- ``bts_self_supervised``: image reconstruction alone, through the head ``bts.head`` names
  ("multi": the MVBTS teacher; "single": the single-view BTS baseline);
- ``bts_distilled``: the single-view head learns from the multi-view head of the network in
  ``request.init`` (the teacher's checkpoint) in 3D, besides image reconstruction
  (:class:`.tasks.DistilledBTSTask`). ``bts.teacher=shared`` (official): one network, the student
  starting from the teacher's weights; ``frozen``: a separate frozen copy of the teacher. With
  ``request.teacher`` (a :class:`BTSTeacher`) the frozen teacher is that checkpoint and the student
  starts from ``request.init`` (e.g. the trained single-view baseline).

Both are scored by :func:`.evaluation.evaluate_bts` on the test split, through the head the stage
trains (``head_of``): every number carries it as the run tag ``fieldkd.head``. The config
sections read: ``scene`` (a KITTI-360-layout folder, conf/scene/kitti360.yaml), ``bts`` (``head``,
``teacher``, ``batch_size``, ``network``: :data:`.model.DEFAULTS`, ``loss``:
:data:`.tasks.TASK_DEFAULTS`), ``trainer``, ``eval`` (``bts_*`` keys, :data:`.evaluation.EVAL_DEFAULTS`).

:func:`fieldkd.platform.stages.fit_stage` runs such a stage like any other (an actor, a Tune trial);
``run_stages`` runs several at once on the actor pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import InputError
from ...evaluators import register_evaluator
from ...models import register_model
from ...stage_kinds import register_stage_kind
from ..stage_parts import NetworkParts, NetworkStage

MODEL_KIND = "bts"
BTS_DEFAULTS = {"head": "multi", "teacher": "shared", "batch_size": 1, "network": {}, "loss": {}}
TEACHER_KINDS = ("shared", "frozen")


def bts_options(cfg: dict) -> dict:
    found = dict(cfg.get("bts") or {})
    unknown = sorted(set(found) - set(BTS_DEFAULTS))
    if unknown:
        raise InputError("bts", f"unknown keys {unknown}; known: {sorted(BTS_DEFAULTS)}")
    out = {**BTS_DEFAULTS, **{k: v for k, v in found.items() if v is not None}}
    if out["head"] not in ("single", "multi"):
        raise InputError("bts.head", f"one of single, multi; got {out['head']!r}")
    if out["teacher"] not in TEACHER_KINDS:
        raise InputError("bts.teacher", f"one of {', '.join(TEACHER_KINDS)}; got {out['teacher']!r}")
    return out


def sequence_data(scene: dict):
    """The data module a ``scene`` section (conf/scene/kitti360.yaml) describes: it trains on
    ``<split_dir>/train_files.txt`` and evaluates on ``test_files.txt``. A null path is the bundled
    generated driving set."""
    from ...data.sequences import SequenceData
    from ...scenes.kitti_generator import default_kitti_dir
    from ...scenes.limits import ReadLimits

    root = Path(scene["path"]) if scene.get("path") else default_kitti_dir(progress=False)
    splits = root / str(scene.get("split_dir") or "splits")
    files = {name: splits / f"{name}_files.txt" for name in ("train", "test")}
    for path in files.values():
        if not path.is_file():
            raise InputError(path, "split file not found (see scene.split_dir)")
    return SequenceData(root, split_file=files["train"], eval_split_file=files["test"],
                        offsets=scene.get("offsets") or (0, 1), height=int(scene.get("height") or 64),
                        width=int(scene.get("width") or 192), lidar_sweeps=int(scene.get("lidar_sweeps") or 20),
                        limits=ReadLimits.from_config(scene), fisheyes=bool(scene.get("fisheyes", False)),
                        fisheye_offset=int(scene.get("fisheye_offset", 10)),
                        fisheye_turn=scene.get("fisheye_turn") or (0, -15))


def load_bts_net(checkpoint, device="cpu"):
    """The BTS network of a stage checkpoint (``last.pt``); nothing in the file is run (``weights_only``)."""
    from ...train.checkpoint import load_checkpoint
    from .model import build_bts

    state = load_checkpoint(checkpoint)
    task = state.get("task")
    if not isinstance(task, dict) or "net" not in task or "net_config" not in task:
        raise InputError(checkpoint, "not a checkpoint of a BTS network (no task.net and task.net_config)")
    config = {**dict(task["net_config"]), "pretrained": None}  # the weights are here: no user file again
    net = build_bts(config)
    net.load_state_dict(task["net"])
    return net.to(device)


@dataclass(frozen=True)
class BTSTeacher:
    """The teacher of a distilled stage whose student starts from another network (``request.init``):
    ``request.teacher``. Without it the student's teacher is the network it starts from."""

    checkpoint: str


def teacher_source(request) -> str | None:
    """The checkpoint a distilled stage's teacher comes from."""
    return request.init if request.teacher is None else request.teacher.checkpoint


class BTSStage(NetworkStage):
    """What the two BTS stage kinds share; ``distilled`` picks the task."""

    name = "bts"
    distilled = False
    evaluators = ("bts",)
    gradient_sync = "all_reduce"  # a step encodes, then asks the heads at points: no one forward for DDP

    def head_of(self, cfg: dict) -> str:
        """The head this stage trains, and so the one its scores come from."""
        return "single" if self.distilled else bts_options(cfg)["head"]

    def build(self, request, device) -> NetworkParts:
        from .model import build_bts

        cfg = request.cfg
        options = bts_options(cfg)
        data = sequence_data(cfg["scene"])
        teacher = None
        if request.init is not None:  # go on from a trained network (the student: from its teacher)
            net = load_bts_net(request.init, device)
        elif self.distilled:
            raise InputError("init", "a distilled BTS stage needs its teacher's checkpoint")
        else:
            net = build_bts(dict(options["network"])).to(device)
        if self.distilled:
            source = teacher_source(request)
            if options["teacher"] == "shared" and source != request.init:
                raise InputError("bts.teacher", "a student that starts from another network than its teacher's "
                                                "needs bts.teacher=frozen")
            teacher = net if options["teacher"] == "shared" else load_bts_net(source, device)
        return NetworkParts(data, net, teacher)

    def batch_size(self, cfg: dict) -> int:
        return int(bts_options(cfg)["batch_size"])

    def task(self, request, parts: NetworkParts, device, *, batches=None, batch_size: int | None = None, rank: int = 0,
             world: int = 1, sync=None, evaluate=None, forward=None):
        from .tasks import DistilledBTSTask, SelfSupervisedBTSTask

        cfg = request.cfg
        size = int(batch_size or self.batch_size(cfg))
        stream = batches if batches is not None else parts.data.train_batches(rank, world, size, int(cfg["seed"]))
        loss = dict(bts_options(cfg)["loss"])
        if self.distilled:
            return DistilledBTSTask(parts.net, parts.teacher, stream, device, loss, evaluate=evaluate)
        return SelfSupervisedBTSTask(parts.net, stream, device, loss, head=self.head_of(cfg), evaluate=evaluate)

    def record(self, request, parts: NetworkParts) -> dict:
        return {"kind": MODEL_KIND, "config": dict(parts.net.config)}

    def tags(self, request) -> dict[str, str]:
        options = bts_options(request.cfg)
        tags = {"field": MODEL_KIND, "network": MODEL_KIND, "task": request.task, "head": self.head_of(request.cfg)}
        if request.init:
            tags["init"] = str(request.init)
        if self.distilled:
            tags["kd_teacher"] = options["teacher"]
            tags["teacher_checkpoint"] = str(teacher_source(request))
        return tags


@register_stage_kind
class SelfSupervisedStage(BTSStage):
    name = "bts_self_supervised"
    distilled = False


@register_stage_kind
class DistilledStage(BTSStage):
    name = "bts_distilled"
    distilled = True


@register_evaluator("bts")
def evaluate_bts_stage(ctx, request, parts, trained) -> dict[str, float]:
    """The network on the test split's frames through the head its stage trains (tag ``fieldkd.head``)."""
    from ...stage_kinds import stage_kind
    from .evaluation import evaluate_bts
    from .tasks import task_config

    cfg = request.cfg
    views = task_config(bts_options(cfg)["loss"])["encoder_views"]
    return evaluate_bts(trained.field, sequence_data(cfg["scene"]), cfg["eval"],
                        head=stage_kind(request.task).head_of(cfg), views=views, run=ctx.run,
                        step=trained.result.steps)


@register_model(MODEL_KIND)
def load_bts(state: dict, record: dict, device, source: str):
    """The BTS network of a stage checkpoint (see :mod:`fieldkd.platform.models`)."""
    from .model import build_bts

    net = build_bts({**dict(record["config"]), "pretrained": None})  # the weights are here: no user file again
    net.load_state_dict(state["task"]["net"])
    return net.to(device).eval()
