"""Training tasks of the BTS density field (the ``Task`` protocol of ``train.loop``).

Each step takes one batch of frame sequences ("images" [B, F, 3, H, W] in [0, 1],
"intrinsics" [B, F, 3, 3] in pixels, "cam_to_world" [B, F, 4, 4] OpenCV; frame 0 is
the input view; an unbatched [F, ...] sample is accepted too). Per sequence, the
frames are split at random into two halves; rays are cast as square patches from
the frames of one half, the density field (always the input view's) is rendered
along them, and each sample takes its colour from the frames of the other half
(image-based rendering); then the halves swap. The loss is the photometric error,
minimum over render frames, plus edge-aware smoothness.

- ``SelfSupervisedBTSTask``: renders through the head it is given ("single" for BTS,
  "multi" for the multi-view teacher MVBTS).
- ``DistilledBTSTask``: adds the KD term between the student's single-view densities
  and the teacher's multi-view densities at every ray sample of the step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from ...errors import InputError
from .geometry import inverse_depth_samples, pixel_rays
from .losses import edge_aware_smoothness, kd_density_loss, reconstruction_loss
from .model import HEADS, BTSNet, DensityOutput
from .render import expected_depth, ray_weights, render_colours, sample_colours

TASK_DEFAULTS = dict(
    patch_size=8,           # rays come as p x p patches
    patches_per_frame=4,    # patches cast from each ray frame, per sequence and direction
    n_samples=16,           # samples per ray (the KDBTS training configs; evaluation uses 64)
    near=3.0,
    far=50.0,
    encoder_views=2,        # frames the multi-view head encodes (0 .. n-1); the single head uses frame 0
    jitter=True,            # stratified sample depths in training
    ssim_weight=0.85,
    smoothness_weight=1e-3,
    max_invalid=0.9,        # a ray with more of its weight on invalid samples is dropped
    kd_weight=1e-2,
    kd_clip=2.0,
    kd_clip_form="both",    # both: student and teacher clipped (official) | teacher: only the teacher (losses.py)
    kd_teacher_views=None,  # frames the teacher encodes for the KD term (None: encoder_views; a shared network's
                            # multi head also renders with them)
    kd_points=0,            # extra KD points per ray group, uniform in the input view's frustum (official: 0)
    render_head=None,       # distillation only: "single", "multi", "both" or "none" (see DistilledBTSTask)
    head_lr_scale=1.0,      # the density heads' learning rate over the encoder-decoder's (see param_groups)
    train_encoder=True,     # False: the encoder-decoder keeps its weights and running BatchNorm statistics and
                            # only the heads learn (a student that keeps its teacher's features)
)


def task_config(cfg: dict | None) -> dict:
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(TASK_DEFAULTS)
    if unknown:
        raise InputError("bts task config", f"unknown keys {sorted(unknown)}; known: {sorted(TASK_DEFAULTS)}")
    return {**TASK_DEFAULTS, **cfg}


def sequence_batch(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, intrinsics, cam_to_world) of a batch of frame sequences, batched and float32."""
    out = []
    for key, tail in (("images", 3), ("intrinsics", 2), ("cam_to_world", 2)):
        if key not in batch:
            raise InputError(f"batch[{key!r}]", "missing from the sequence batch")
        value = batch[key]
        value = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
        value = value.to(device=device, dtype=torch.float32)
        if value.dim() == tail + 1:
            value = value.unsqueeze(0)
        if value.dim() != tail + 2:
            raise InputError(f"batch[{key!r}]", f"expected [B, F, ...] with {tail} trailing dims, got {tuple(value.shape)}")
        out.append(value)
    images, intrinsics, poses = out
    if images.shape[:2] != intrinsics.shape[:2] or images.shape[:2] != poses.shape[:2]:
        raise InputError("batch", f"images {tuple(images.shape)}, intrinsics {tuple(intrinsics.shape)} and "
                         f"cam_to_world {tuple(poses.shape)} disagree on [B, F]")
    if images.shape[1] < 2:
        raise InputError("batch['images']", "self-supervision needs at least 2 frames per sequence")
    return images, intrinsics, poses


def patch_pixels(n_patches: int, patch: int, height: int, width: int, device) -> torch.Tensor:
    """Random p x p patches: pixel coordinates [n_patches, p * p, 2] (u, v), row-major in each patch."""
    if height < patch or width < patch:
        raise InputError("batch['images']", f"images {height}x{width} are smaller than the {patch}x{patch} patches")
    y0 = torch.randint(0, height - patch + 1, (n_patches, 1))
    x0 = torch.randint(0, width - patch + 1, (n_patches, 1))
    dy, dx = torch.meshgrid(torch.arange(patch), torch.arange(patch), indexing="ij")
    u, v = x0 + dx.reshape(1, -1), y0 + dy.reshape(1, -1)
    return torch.stack([u, v], dim=-1).float().to(device)


DensityFn = Callable[[torch.Tensor], tuple[list[DensityOutput], torch.Tensor]]


class _BTSTask:
    """Rendering and the self-supervised loss; subclasses say which densities are rendered."""

    def __init__(self, net: BTSNet, batches: Iterator[dict], device, cfg: dict | None,
                 evaluate: Callable[[int], dict] | None = None):
        self.net = net
        self.batches = batches
        self.device = torch.device(device)
        self.cfg = task_config(cfg)
        self._evaluate = evaluate
        if not self.cfg["train_encoder"]:
            for param in net.backbone.parameters():
                param.requires_grad_(False)

    # the protocol ----------------------------------------------------------------------------------

    def param_groups(self, lr: float) -> list[dict]:
        """The encoder-decoder at ``lr``, the density heads at ``lr * head_lr_scale``.

        Adam moves a weight by about ``lr`` per step at most: at 1e-4 over a few hundred steps the
        heads' weights (initialised at ~0.1-1) hardly move, so the encoder alone fits the loss with
        a density that depends on the pixel and not on the depth along the ray (a per-pixel fog),
        and no grid cell reaches the occupancy threshold. A larger head rate lets the heads learn
        the depth code at a CPU budget; 1 is the official single rate."""
        scale = float(self.cfg["head_lr_scale"])
        if not scale > 0:
            raise InputError("bts.loss.head_lr_scale", f"must be > 0, got {scale}")
        body, heads = [], []
        for name, param in self.net.named_parameters():
            if param.requires_grad:
                (body if name.startswith("backbone.") else heads).append(param)
        groups = [{"params": body, "lr": lr}, {"params": heads, "lr": lr * scale}]
        return [g for g in groups if g["params"]]

    def training_step(self, step: int):
        self.net.train()
        if not self.cfg["train_encoder"]:
            self.net.backbone.eval()  # batch statistics would move the features it keeps
        loss, metrics, n = self.batch_loss(next(self.batches))
        return loss, metrics, n

    def after_step(self, step: int) -> None:
        pass

    def evaluate(self, step: int) -> dict:
        return self._evaluate(step) if self._evaluate else {}

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "net_config": dict(self.net.config)}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])

    # the loss --------------------------------------------------------------------------------------

    def item_density_fn(self, images, intrinsics, poses) -> DensityFn:
        raise NotImplementedError

    def batch_loss(self, batch: dict):
        """Loss over a batch of sequences: (loss, metrics, samples evaluated)."""
        images, intrinsics, poses = sequence_batch(batch, self.device)
        totals: dict[str, float] = {}
        loss, n_samples = images.new_zeros(()), 0
        for b in range(images.shape[0]):
            density_fn = self.item_density_fn(images[b:b + 1], intrinsics[b:b + 1], poses[b:b + 1])
            perm = torch.randperm(images.shape[1]).tolist()
            half = len(perm) // 2
            for rays_from, colours_from in ((perm[:half], perm[half:]), (perm[half:], perm[:half])):
                item_loss, terms, n = self.group_loss(images[b], intrinsics[b], poses[b], rays_from, colours_from,
                                                      density_fn)
                loss = loss + item_loss
                n_samples += n
                for key, value in terms.items():
                    totals[key] = totals.get(key, 0.0) + value
        n_groups = 2 * images.shape[0]
        metrics = {f"train/{k}": v / n_groups for k, v in totals.items()}
        return loss / n_groups, metrics, n_samples

    def group_loss(self, images, intrinsics, poses, rays_from: list[int], colours_from: list[int],
                   density_fn: DensityFn):
        cfg = self.cfg
        p, s = cfg["patch_size"], cfg["n_samples"]
        h, w = images.shape[-2:]
        per_frame = cfg["patches_per_frame"]
        uv = torch.cat([patch_pixels(per_frame, p, h, w, self.device) for _ in rays_from])  # [P, p*p, 2]
        frames = torch.tensor(rays_from, device=self.device).repeat_interleave(per_frame)
        origins, dirs = pixel_rays(intrinsics[frames], poses[frames], uv)  # [P, p*p, 3]
        origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
        n_rays = origins.shape[0]
        z = inverse_depth_samples(cfg["near"], cfg["far"], s, (n_rays,), jitter=cfg["jitter"] and self.net.training,
                                  device=self.device)
        points = origins.unsqueeze(1) + z.unsqueeze(-1) * dirs.unsqueeze(1)  # [R, S, 3]
        outputs, extra = density_fn(points.reshape(-1, 3))
        colours, colour_valid = sample_colours(images[colours_from], intrinsics[colours_from], poses[colours_from],
                                               points.reshape(-1, 3))
        colours = colours.unflatten(1, (n_rays, s))
        colour_valid = colour_valid.unflatten(1, (n_rays, s))
        # targets: the ray frames' own pixels (integer pixel centres)
        ui, vi = uv[..., 0].long(), uv[..., 1].long()
        target = images[frames.unsqueeze(1), :, vi, ui]  # [P, p*p, 3]
        target = target.reshape(-1, p, p, 3).permute(0, 3, 1, 2)
        loss, terms = extra, {}
        for out in outputs:
            density = out.density.reshape(n_rays, s)
            weights = ray_weights(density, z, dirs.norm(dim=-1))
            rgb, invalid = render_colours(weights, colours, colour_valid, out.valid.reshape(n_rays, s))
            n_render = len(colours_from)
            rendered = rgb.reshape(n_render, -1, p, p, 3).permute(0, 1, 4, 2, 3)
            recon, kept = reconstruction_loss(rendered, target, invalid.reshape(n_render, -1, p, p),
                                              cfg["max_invalid"], cfg["ssim_weight"])
            depth = expected_depth(weights, z).reshape(-1, p, p)
            smooth = edge_aware_smoothness(depth, target)
            loss = loss + recon + cfg["smoothness_weight"] * smooth
            terms[f"{out.head}/photometric"] = float(recon.detach())
            terms[f"{out.head}/smoothness"] = float(smooth.detach())
            terms[f"{out.head}/kept_rays"] = kept
        if torch.is_tensor(extra) and extra.requires_grad:
            terms["kd"] = float(extra.detach())
        return loss, terms, n_rays * s * max(len(outputs), 1)


class SelfSupervisedBTSTask(_BTSTask):
    """BTS (head "single") or MVBTS (head "multi") trained by image reconstruction alone."""

    def __init__(self, net: BTSNet, batches: Iterator[dict], device, cfg: dict | None, head: str,
                 evaluate: Callable[[int], dict] | None = None):
        if head not in HEADS:
            raise InputError("head", f"must be one of {HEADS}, got {head!r}")
        super().__init__(net, batches, device, cfg, evaluate)
        self.head = head

    def item_density_fn(self, images, intrinsics, poses) -> DensityFn:
        views = 1 if self.head == "single" else self.cfg["encoder_views"]
        feats = self.net.encode(images[:, :views])
        k, c2w = intrinsics[:, :views], poses[:, :views]

        def fn(points):
            out = self.net.density(feats, k, c2w, points.unsqueeze(0), head=self.head)
            return [_flat(out)], points.new_zeros(())
        return fn


class DistilledBTSTask(_BTSTask):
    """The single-view head (student) learns from the multi-view head (teacher) in 3D.

    ``teacher is student`` (the official set-up: one network, one shared encoder,
    starting from the MVBTS checkpoint): the whole network trains; the photometric
    loss renders through ``render_head`` (default "multi", so that the teacher keeps
    learning from images while the student follows it; "both" adds the student's own
    photometric loss). A separate teacher network is frozen (eval mode, no gradient)
    and the photometric loss renders the student (default "single"), or nothing ("none":
    the KD term alone, a purely 3D distillation).
    The KD term compares densities at every ray sample of the step, inside the input
    view's frustum, and at ``kd_points`` more points drawn in that frustum (pixel uniform,
    depth uniform in [near, far]: the ray samples, dense near the cameras, leave the space
    behind near surfaces to extrapolation); the teacher's are detached."""

    def __init__(self, student: BTSNet, teacher: BTSNet, batches: Iterator[dict], device, cfg: dict | None,
                 evaluate: Callable[[int], dict] | None = None):
        super().__init__(student, batches, device, cfg, evaluate)
        self.teacher = teacher
        self.shared = teacher is student
        views = self.cfg["kd_teacher_views"]
        if views is not None and int(views) < 1:
            raise InputError("bts.loss.kd_teacher_views", f"must be >= 1 (or null), got {views}")
        default = "multi" if self.shared else "single"
        self.render_head = self.cfg["render_head"] or default
        allowed = ("single", "multi", "both") if self.shared else ("single", "none")
        if self.render_head not in allowed:
            raise InputError("render_head", f"must be one of {allowed} here, got {self.render_head!r}")
        if not self.shared:
            teacher.eval()
            for param in teacher.parameters():
                param.requires_grad_(False)

    def training_step(self, step: int):
        if not self.shared:
            self.teacher.eval()  # the loop may have put everything in train mode
        return super().training_step(step)

    def item_density_fn(self, images, intrinsics, poses) -> DensityFn:
        views = self.cfg["encoder_views"]
        if self.cfg["kd_teacher_views"] is not None:
            views = int(self.cfg["kd_teacher_views"])
        k, c2w = intrinsics[:, :views], poses[:, :views]
        if self.shared:
            feats = self.net.encode(images[:, :views])
            teacher_feats = feats
        else:
            feats = self.net.encode(images[:, :1])
            with torch.no_grad():
                teacher_feats = self.teacher.encode(images[:, :views])

        def fn(points):
            n = points.shape[0]
            extra = frustum_points(k[0, 0], c2w[0, 0], images.shape[-2:], int(self.cfg["kd_points"]),
                                   self.cfg["near"], self.cfg["far"])
            pts = torch.cat([points, extra]).unsqueeze(0)
            student = _flat(self.net.density(feats, k, c2w, pts, head="single"))
            if self.shared and self.render_head in ("multi", "both"):
                teacher = _flat(self.teacher.density(teacher_feats, k, c2w, pts, head="multi"))
            else:
                with torch.no_grad():
                    teacher = _flat(self.teacher.density(teacher_feats, k, c2w, pts, head="multi"))
            kd = kd_density_loss(student.density, teacher.density, student.valid, self.cfg["kd_weight"],
                                 self.cfg["kd_clip"], self.cfg["kd_clip_form"])
            student, teacher = _first(student, n), _first(teacher, n)  # the ray samples are rendered
            rendered = {"single": [student], "multi": [teacher], "both": [student, teacher], "none": []}[self.render_head]
            return rendered, kd
        return fn


def _flat(out: DensityOutput) -> DensityOutput:
    return DensityOutput(out.density[0], out.valid[0], out.head)


def _first(out: DensityOutput, n: int) -> DensityOutput:
    return DensityOutput(out.density[:n], out.valid[:n], out.head)


def frustum_points(K: torch.Tensor, cam_to_world: torch.Tensor, size: tuple[int, int], n: int, near: float,
                   far: float) -> torch.Tensor:
    """``n`` world points [n, 3] in a camera's frustum: pixels uniform over the image, camera
    depth uniform in [near, far]."""
    h, w = size
    uv = torch.rand(n, 2, device=K.device) * K.new_tensor([w, h]) - 0.5
    z = near + torch.rand(n, 1, device=K.device) * (far - near)
    origins, dirs = pixel_rays(K, cam_to_world, uv)
    return origins + z * dirs


# -- evaluation helpers ----------------------------------------------------------------------------

class _evaluating:
    """Eval mode (BatchNorm running statistics, no view dropout) and no gradients, for a block;
    the network's previous mode comes back afterwards."""

    def __init__(self, net: torch.nn.Module):
        self.net, self.was_training = net, net.training
        self.no_grad = torch.no_grad()

    def __enter__(self):
        self.net.eval()
        self.no_grad.__enter__()

    def __exit__(self, *exc):
        self.no_grad.__exit__(*exc)
        self.net.train(self.was_training)


def _one_sequence(net: BTSNet, images, intrinsics, cam_to_world, head: str, views: int | None):
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    images, intrinsics, cam_to_world = (torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x,
                                                         dtype=torch.float32) for x in (images, intrinsics, cam_to_world))
    views = 1 if head == "single" else (views or images.shape[0])
    dev = next(net.parameters()).device
    return images[None, :views].to(dev), intrinsics[None, :views].to(dev), cam_to_world[None, :views].to(dev)


def density_in_input_frame(net: BTSNet, images, intrinsics, cam_to_world, points_cam, *, head: str,
                           views: int | None = None, chunk: int = 65536) -> DensityOutput:
    """Densities at points [N, 3] given in the input camera's frame (e.g. the occupancy grid),
    in eval mode. images [V, 3, H, W], intrinsics [V, 3, 3], cam_to_world [V, 4, 4] of one
    sequence; ``views``: how many frames the multi head encodes (all by default)."""
    with _evaluating(net):
        images, k, c2w = _one_sequence(net, images, intrinsics, cam_to_world, head, views)
        pts = torch.as_tensor(np.asarray(points_cam) if not torch.is_tensor(points_cam) else points_cam,
                              dtype=torch.float32).reshape(-1, 3).to(images.device)
        world = pts @ c2w[0, 0, :3, :3].T + c2w[0, 0, :3, 3]
        feats = net.encode(images)
        parts = [net.density(feats, k, c2w, world[i:i + chunk][None], head=head) for i in range(0, len(world), chunk)]
        return DensityOutput(torch.cat([o.density[0] for o in parts]), torch.cat([o.valid[0] for o in parts]), head)


def predict_occupied(net: BTSNet, images, intrinsics, cam_to_world, points_cam, *, head: str,
                     threshold: float = 0.5, views: int | None = None) -> tuple[np.ndarray, str]:
    """Predicted occupancy (density > threshold) of points in the input camera's frame, and
    the head that produced it (to tag every reported number with)."""
    out = density_in_input_frame(net, images, intrinsics, cam_to_world, points_cam, head=head, views=views)
    return (out.density > threshold).cpu().numpy(), out.head


def render_input_depth(net: BTSNet, images, intrinsics, cam_to_world, *, head: str, n_samples: int = 64,
                       near: float = 3.0, far: float = 80.0, views: int | None = None,
                       chunk: int = 4096) -> torch.Tensor:
    """Expected depth [H, W] of the input view's rays (frame 0), samples linear in inverse depth."""
    with _evaluating(net):
        images, k, c2w = _one_sequence(net, images, intrinsics, cam_to_world, head, views)
        dev = images.device
        h, w = images.shape[-2:]
        feats = net.encode(images)
        vs, us = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
        uv = torch.stack([us, vs], dim=-1).reshape(-1, 2).float()
        origins, dirs = pixel_rays(k[0, 0], c2w[0, 0], uv)
        z = inverse_depth_samples(near, far, n_samples, (1,), device=dev)[0]
        depths = []
        for i in range(0, len(uv), chunk):
            o, d = origins[i:i + chunk], dirs[i:i + chunk]
            pts = o[:, None] + z[None, :, None] * d[:, None]
            out = net.density(feats, k, c2w, pts.reshape(1, -1, 3), head=head)
            zz = z.expand(len(o), -1)
            depths.append(expected_depth(ray_weights(out.density.reshape(len(o), -1), zz, d.norm(dim=-1)), zz))
        return torch.cat(depths).reshape(h, w)


__all__ = [
    "TASK_DEFAULTS",
    "DistilledBTSTask",
    "SelfSupervisedBTSTask",
    "density_in_input_frame",
    "render_input_depth",
    "sequence_batch",
    "task_config",
]
