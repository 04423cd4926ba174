"""A plain PyTorch NeRF loop, the baseline fieldkd's engine is measured against.

Hash-grid field (the same model fieldkd trains), 1024 rays x 48 stratified
samples per step between near 2 and far 6, every sample sent to the field (no
empty-space skipping, no box clipping), Adam at a constant learning rate.
The grid runs on torch operations, without fieldkd's compiled CPU kernel:
what a plain PyTorch loop has.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fieldkd.platform.evaluate.image import mse_to_psnr, psnr, ssim
from fieldkd.platform.fields import build_field
from fieldkd.platform.render.composite import composite
from fieldkd.platform.scenes.scene import Scene

NEAR, FAR, SAMPLES, BATCH = 2.0, 6.0, 48, 1024


def render(field, origins, dirs, background, jitter: bool):
    edges = torch.linspace(NEAR, FAR, SAMPLES + 1)
    starts, ends = edges[:-1].expand(len(origins), -1), edges[1:].expand(len(origins), -1)
    u = torch.rand_like(starts) if jitter else torch.full_like(starts, 0.5)
    t = starts + u * (ends - starts)
    points = origins[:, None] + dirs[:, None] * t[..., None]
    out = field(points.reshape(-1, 3), dirs[:, None].expand(-1, SAMPLES, -1).reshape(-1, 3))
    return composite(out.density.reshape(-1, SAMPLES), starts, ends,
                     out.rgb.reshape(-1, SAMPLES, 3), background)["rgb"]


def train_reference(scene: Scene, seconds: float, lr: float = 1e-2, seed: int = 0,
                    eval_views: int | None = None) -> dict:
    torch.manual_seed(seed)
    train = scene.split("train")
    field = build_field("hash", scene.aabb, hash_kernel="torch")
    optimizer = torch.optim.Adam(field.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-15)
    n, h, w, _ = train.images.shape
    colors = train.images.reshape(-1, 3)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        flat = torch.randint(0, n * h * w, (BATCH,))
        cam, rest = flat // (h * w), flat % (h * w)
        rays = train.cameras.rays_at(cam, (rest % w).float(), (rest // w).float())
        rgb = render(field, rays.origins, rays.directions, scene.background, jitter=True)
        loss = torch.mean((rgb - colors[flat]) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    train_seconds = time.perf_counter() - started

    test = scene.split("test")
    views = range(min(len(test), eval_views or len(test)))
    psnrs, ssims = [], []
    with torch.no_grad():
        for i in views:
            rays = test.cameras.image_rays(i)
            rgb = torch.cat([render(field, r.origins, r.directions, scene.background, jitter=False)
                             for r in (rays[s:s + 4096] for s in range(0, len(rays), 4096))])
            pred = rgb.reshape(test.cameras.height, test.cameras.width, 3).clamp(0, 1).numpy()
            psnrs.append(psnr(pred, test.images[i].numpy()))
            ssims.append(ssim(pred, test.images[i].numpy()))
    return {"steps": steps, "train_seconds": train_seconds,
            "samples_per_second": steps * BATCH * SAMPLES / train_seconds,
            "test/psnr": float(np.mean(psnrs)), "test/ssim": float(np.mean(ssims)),
            "last_train_psnr": mse_to_psnr(loss.item())}
