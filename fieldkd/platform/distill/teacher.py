"""A frozen teacher: a trained field, with its renderer and occupancy grid, that only answers queries.

Built from a field in memory, from a training checkpoint (the Trainer's
``last.pt``: ``state["task"]["field"]`` is the field's state dict,
``state["task"]["renderer"]`` the occupancy grid) together with the field's
config, or from an MLflow run (its ``checkpoints/last.pt`` and the
``config.yaml`` saved with it, or with its parent pipeline run).

The wrapper is not an ``nn.Module``: an optimiser or a ``.train()`` call on
the student's modules can never reach the teacher's parameters.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from pathlib import Path

import torch

from ..fields import FieldOutput, build_field, pick_hash_backend
from ..fields.radiance import RadianceField
from ..render.renderer import RenderConfig, Renderer
from ..scenes.cameras import Cameras, Rays
from ..train.checkpoint import load_checkpoint

CHECKPOINT_ARTIFACT = "checkpoints/last.pt"
CONFIG_ARTIFACT = "config.yaml"
RENDERED = ("rgb", "depth", "opacity", "normal", "uncertainty")  # what a teacher's rendered rays carry


class Teacher:
    """Queries of a frozen field: outputs at points, densities, rendered rays and images."""

    def __init__(self, field: RadianceField, renderer: Renderer | None = None, source: str = "memory"):
        field.eval()
        field.requires_grad_(False)
        self.field = field
        self.renderer = renderer
        self.source = source  # where it came from: a checkpoint path or "run:<id>", for lineage

    @property
    def has_feature(self) -> bool:
        return bool(self.field.has_feature)

    @property
    def name(self) -> str:
        return getattr(self.field, "field_name", type(self.field).__name__)

    @property
    def device(self) -> torch.device:
        return self.field.aabb.device

    def to(self, device) -> "Teacher":
        self.field.to(device)
        if self.renderer is not None:
            self.renderer.to(device)
        return self

    def fingerprint(self) -> str:
        """A digest of the teacher's weights and buffers: two teachers answer alike iff equal."""
        digest = hashlib.sha1(self.name.encode())
        for key, value in sorted(self.field.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def _frozen(self) -> RadianceField:
        if self.field.training:  # someone called .train() on it: a teacher always answers in eval mode
            self.field.eval()
        return self.field

    @torch.no_grad()
    def query(self, points: torch.Tensor, directions: torch.Tensor, views: torch.Tensor | None = None) -> FieldOutput:
        """Feature (or None), raw density, density and colour at points (N, 3) seen along directions (N, 3).
        ``views`` (the training view of each point) matters only to teachers that split the
        views among experts; one teacher answers for all."""
        return self._frozen()(points, directions)

    @torch.no_grad()
    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self._frozen().density(points)

    def _renderer(self) -> Renderer:
        if self.renderer is None:
            raise ValueError("this teacher was built without a renderer; pass one to render rays")
        return self.renderer

    @torch.no_grad()
    def render(self, rays: Rays, chunk: int | None = None) -> dict[str, torch.Tensor]:
        """rgb (R, 3), depth (R,), opacity (R,) through the teacher's own renderer and grid,
        and normal (R, 3) / uncertainty (R,) where the field has them."""
        renderer = self._renderer()
        chunk = chunk or renderer.cfg.chunk
        parts = [renderer.render_rays(self._frozen(), rays[i:i + chunk], train=False)
                 for i in range(0, len(rays), chunk)]
        keys = [k for k in RENDERED if k in parts[0]]
        return {k: torch.cat([p[k].detach() for p in parts]) for k in keys}

    @torch.no_grad()
    def render_image(self, cameras: Cameras, index: int) -> dict[str, torch.Tensor]:
        return self._renderer().render_image(self._frozen(), cameras, index, device=self.device)


def _field_options(field_cfg: dict, backend: str | None) -> tuple[str, dict]:
    options = {k: v for k, v in field_cfg.items() if k != "name"}
    if "backend" in options:
        options["backend"] = pick_hash_backend(backend or options["backend"])
    return field_cfg["name"], options


def teacher_from_state(task_state: dict, field_cfg: dict, aabb=None, *, near: float = 0.0,
                       far: float = math.inf, background=(1.0, 1.0, 1.0), render_cfg: dict | RenderConfig | None = None,
                       device="cpu", backend: str | None = None, source: str = "memory") -> Teacher:
    """A teacher from a training task's state (``{"field": ..., "renderer": ...}``).

    The scene box is read from the field's state (its ``aabb`` buffer); a
    given ``aabb`` must agree with it. ``near``/``far``/``background`` only
    matter for rendering whole rays; the defaults clip nothing and composite
    on white. The occupancy grid's resolution is taken from the state, and so
    are proposal networks (render.sampler=proposal) and their sizes.
    """
    field_state = task_state["field"]
    stored = field_state.get("aabb")
    if stored is None and aabb is None:
        raise ValueError("the field state has no aabb; pass the scene's aabb")
    box = torch.as_tensor(stored if stored is not None else aabb, dtype=torch.float32).reshape(2, 3)
    if aabb is not None and not torch.allclose(box, torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3)):
        raise ValueError(f"aabb {torch.as_tensor(aabb).tolist()} disagrees with the checkpoint's {box.tolist()}")
    name, options = _field_options(field_cfg, backend)
    field = build_field(name, box, **options)
    field.load_state_dict(field_state)

    if isinstance(render_cfg, RenderConfig):
        cfg = render_cfg
    else:
        cfg = RenderConfig(**{k: v for k, v in (render_cfg or {}).items() if k in RenderConfig.__dataclass_fields__})
    renderer_state = task_state.get("renderer") or {}
    grid_state, proposal_state = renderer_state.get("grid"), renderer_state.get("proposal")
    # The teacher samples as it was trained, whatever this run's render.sampler says.
    if proposal_state is not None:
        cfg = RenderConfig(**{**cfg.__dict__, "sampler": "proposal", **proposal_state["config"]})
    elif cfg.sampler == "proposal":
        cfg = RenderConfig(**{**cfg.__dict__, "sampler": "occupancy"})
    if grid_state is not None:
        cfg = RenderConfig(**{**cfg.__dict__, "occupancy": True,
                              "occupancy_resolution": int(grid_state["density_ema"].shape[0])})
    renderer = Renderer(box, near, far, torch.as_tensor(background, dtype=torch.float32), cfg)
    if grid_state is not None:
        renderer.load_state_dict({"grid": grid_state})
    if proposal_state is not None:
        renderer.load_state_dict({"proposal": proposal_state})
    return Teacher(field, renderer, source).to(device)


def load_teacher(checkpoint: str | Path, field_cfg: dict, aabb=None, **kwargs) -> Teacher:
    """A teacher from a Trainer checkpoint (``last.pt`` or the folder holding it)."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    return teacher_from_state(state["task"], field_cfg, aabb, source=str(checkpoint), **kwargs)


def _run_config(client, run_id: str, folder: Path) -> dict:
    """The resolved config logged with the run or, for a pipeline stage, with an ancestor."""
    import yaml

    from ..tracking.run import PARENT_TAG

    current = run_id
    while current:
        names = {a.path for a in client.list_artifacts(current)}
        if CONFIG_ARTIFACT in names:
            path = client.download_artifacts(current, CONFIG_ARTIFACT, str(folder))
            return yaml.safe_load(Path(path).read_text())
        current = client.get_run(current).data.tags.get(PARENT_TAG)
    raise FileNotFoundError(f"no {CONFIG_ARTIFACT} on run {run_id} or its parents")


def teacher_from_run(run_id: str, *, tracking_uri: str | None = None, field_cfg: dict | None = None,
                     checkpoint: str = CHECKPOINT_ARTIFACT, device="cpu", **kwargs) -> Teacher:
    """A teacher from an MLflow run: its checkpoint artifact and the field, render and
    scene settings of the config saved with it (``field_cfg`` overrides the field's)."""
    from ..tracking.store import client as make_client

    client = make_client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _run_config(client, run_id, Path(tmp))
        stored = _stored_checkpoint(client.get_run(run_id)) if checkpoint == CHECKPOINT_ARTIFACT else None
        path = stored or client.download_artifacts(run_id, checkpoint, tmp)
        state = load_checkpoint(path, map_location="cpu")
    scene = cfg.get("scene") or {}
    defaults = {"render_cfg": cfg.get("render"), "background": scene.get("background") or (1.0, 1.0, 1.0)}
    if scene.get("near") is not None:
        defaults["near"] = float(scene["near"])
    if scene.get("far") is not None:
        defaults["far"] = float(scene["far"])
    return teacher_from_state(state["task"], field_cfg or cfg["field"], device=device,
                              source=f"run:{run_id}", **{**defaults, **kwargs})


def _stored_checkpoint(run) -> Path | None:
    """The run's final checkpoint in storage (tag ``fieldkd.checkpoint``), if this machine sees it."""
    from ..tracking.run import CHECKPOINT_TAG

    path = run.data.tags.get(CHECKPOINT_TAG)
    return Path(path) if path and Path(path).is_file() else None


def _logged_checkpoint(client, run_id: str) -> bool:
    folder = CHECKPOINT_ARTIFACT.rsplit("/", 1)[0]
    return any(a.path == CHECKPOINT_ARTIFACT for a in client.list_artifacts(run_id, folder))


def _has_checkpoint(client, run) -> bool:
    return _stored_checkpoint(run) is not None or _logged_checkpoint(client, run.info.run_id)


def _missing(run) -> str:
    from ..tracking.run import CHECKPOINT_TAG

    path = run.data.tags.get(CHECKPOINT_TAG)
    if path:
        return (f"its checkpoint {path} is not on this machine and no copy was logged to MLflow "
                "(tracking.log_checkpoint=true keeps one)")
    return f"it has no {CHECKPOINT_ARTIFACT}"


def checkpoint_run(client, run_id: str) -> str:
    """The run that holds the trained field of ``run_id``: the run itself, or, for a
    pipeline, its child run of the teacher stage."""
    from mlflow.exceptions import MlflowException

    from ..errors import InputError
    from ..tracking.run import PARENT_TAG

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise InputError("teacher.run_id", f"no MLflow run {run_id!r} in {client.tracking_uri}") from exc
    if _has_checkpoint(client, run):
        return run_id
    query = f"tags.`{PARENT_TAG}` = '{run_id}' and tags.`fieldkd.stage` = 'teacher'"
    children = client.search_runs([run.info.experiment_id], query)
    for child in children:
        if _has_checkpoint(client, child):
            return child.info.run_id
    why = _missing(children[0]) if children else _missing(run)
    raise InputError("teacher.run_id", f"run {run_id} has no checkpoint to use: {why} (nor a teacher stage with one)")


def fetch_teacher(run_id: str, folder: str | Path, tracking_uri: str | None = None) -> tuple[Path, dict, str]:
    """The trained field of an MLflow run: its checkpoint in storage where this machine sees it,
    else its logged copy, downloaded into ``folder`` (kept if already there).

    Returns the checkpoint's path, the field's config (from the ``config.yaml``
    saved with the run or an ancestor) and the id of the run it came from.
    """
    from ..tracking.store import client as make_client

    client = make_client(tracking_uri)
    source = checkpoint_run(client, run_id)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = _run_config(client, source, folder)
    stored = _stored_checkpoint(client.get_run(source))
    if stored is not None:  # the checkpoint in storage, used where it is: no second copy
        return stored.resolve(), cfg["field"], source
    path = folder / Path(CHECKPOINT_ARTIFACT).name
    if not path.exists():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            Path(client.download_artifacts(source, CHECKPOINT_ARTIFACT, tmp)).rename(path)
    return path, cfg["field"], source


@torch.no_grad()
def inherit_colour_head(student: torch.nn.Module, teacher: Teacher) -> bool:
    """Start the student from the teacher's colour head, where both fields have one of the same shape.

    In the shared form the 16-d feature (raw density, then 15 values for the colour
    head) fixes everything a field outputs once the heads agree: a student that
    matches the teacher's feature then reproduces it, instead of also learning the
    view-dependent colour mapping from scratch. Returns whether the head was copied.
    """
    mine, theirs = getattr(student, "colour", None), getattr(teacher.field, "colour", None)
    if mine is None or theirs is None:
        return False
    source = theirs.state_dict()
    target = mine.state_dict()
    if source.keys() != target.keys() or any(source[k].shape != target[k].shape for k in source):
        return False
    mine.load_state_dict(source)
    return True
