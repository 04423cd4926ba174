"""IDR / NeuS format (also VolSDF's and many SDF papers'): ``image/``, ``mask/``, ``cameras_sphere.npz``.

Layout::

    image/000.png         colour (any image type); frames in sorted file-name order
    mask/000.png          optional object mask, one per image, same order (white = object)
    cameras_sphere.npz    world_mat_<i>, scale_mat_<i> for the i-th image in that order
                          (IDR's cameras.npz, with the same keys, is read when there is no
                          cameras_sphere.npz)
    mesh.ply              optional ground-truth mesh in world units

The cameras are MonoSDF's (:mod:`monosdf`): ``world_mat_i @ scale_mat_i`` is
decomposed into K and the pose in the normalised space inside the unit
sphere, which is the scene's space; pixel centres sit at integers there
(ours: + 0.5); ``Scene.extras['world_from_scene']`` keeps the scale_mat. The
mask is the object's coverage, as NeuS's "with mask" setting uses it: it
becomes the alpha channel, so images are the object on the configured
background. Every frame is a training frame and the test split is the same
frames (the protocol of these papers); the box is [-1, 1]^3 around the unit
sphere unless given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import InputError
from . import images
from .assemble import make_scene
from .cameras import Cameras, opencv_to_opengl
from .export import require_pinhole, straight_colour
from .meta import IMAGE_SUFFIXES, check_principal_point
from .monosdf import (UNIT_BOX, _camera, _load_cameras, _shared_scale_mat, compose_world_mat, intrinsics_from_k,
                      k_from_intrinsics)
from .options import ReadOptions
from .paths import dataset_root, inside
from .scene import Scene, SceneSplit
from .similarity import pose_to_world, similarity_parts

CAMERA_FILES = ("cameras_sphere.npz", "cameras.npz")


def _listing(root: Path, folder: str) -> list[Path]:
    """The images in ``root/folder``, each kept inside the dataset (a symlink may not lead out)."""
    found = sorted(p for p in (root / folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [inside(root, p.relative_to(root), root / folder, "image") for p in found]


def read(path, background=(1.0, 1.0, 1.0), downscale: int = 1, aabb=None, near=None, far=None,
         options: ReadOptions = ReadOptions()) -> Scene:
    root = dataset_root(path)
    cam_path = next((root / n for n in CAMERA_FILES if (root / n).is_file()), root / CAMERA_FILES[0])
    if not cam_path.is_file():
        raise InputError(cam_path, "cameras file not found (NeuS / IDR scenes need cameras_sphere.npz "
                                   "or cameras.npz)")
    if not (root / "image").is_dir():
        raise InputError(root / "image", "image folder not found (NeuS / IDR scenes keep frames in image/)")
    frames = _listing(root, "image")
    if not frames:
        raise InputError(root / "image", "no frame images found")
    masks = _listing(root, "mask") if (root / "mask").is_dir() else []
    if masks and len(masks) != len(frames):
        raise InputError(root / "mask", f"{len(masks)} masks for {len(frames)} images (need one per image)")
    data = _load_cameras(cam_path)
    cams = {i: _camera(data, cam_path, i, f.name) for i, f in enumerate(frames)}
    world_from_scene = _shared_scale_mat(cams, cam_path)
    bg = np.asarray(background, dtype=np.float32)
    rgbs, alphas, ks, poses, first = [], [], [], [], None
    for i, image in enumerate(frames):
        rgba = images.read_rgba(image)
        size = (rgba.shape[1], rgba.shape[0])
        if first is not None and size != first:
            raise InputError(image, f"image is {size[0]}x{size[1]} but earlier frames are {first[0]}x{first[1]}")
        if first is None and min(size) // downscale < 1:
            raise InputError(image, f"downscale {downscale} leaves no pixels of a {size[0]}x{size[1]} image")
        first = first or size
        alpha = rgba[..., 3]
        if masks:
            mask = images.read_mask(masks[i], f"image {image.name}")
            if mask.shape[1::-1] != size:
                raise InputError(masks[i], f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                                           f"{size[0]}x{size[1]}")
            alpha = alpha * mask
        rgb = rgba[..., :3] * alpha[..., None] + bg * (1 - alpha[..., None])
        k = intrinsics_from_k(cams[i].k)
        check_principal_point(k[2], k[3], size[0], size[1], cam_path, f"world_mat_{i} ({image.name}): ")
        rgbs.append(images.area_downscale(rgb, downscale))
        alphas.append(images.area_downscale(alpha, downscale))
        ks.append(k)
        poses.append(cams[i].c2w)
    k = np.asarray(ks) / downscale
    cameras = Cameras(
        c2w=opencv_to_opengl(torch.from_numpy(np.stack(poses))).float(),
        fx=torch.from_numpy(k[:, 0]).float(), fy=torch.from_numpy(k[:, 1]).float(),
        cx=torch.from_numpy(k[:, 2]).float(), cy=torch.from_numpy(k[:, 3]).float(),
        width=first[0] // downscale, height=first[1] // downscale,
    )
    split = SceneSplit(torch.from_numpy(np.stack(rgbs)).float(), cameras, [str(f) for f in frames],
                       alphas=torch.from_numpy(np.stack(alphas)).float())
    return make_scene(root, {"train": split, "test": split}, background, {}, cam_path,
                      aabb=aabb if aabb is not None else UNIT_BOX, near=near, far=far,
                      extras={"format": "neus", "world_from_scene": torch.from_numpy(world_from_scene)})


def write(scene: Scene, out_dir, depth: bool = True, normals: bool = True) -> Path:
    """Write the frames of every split in split order (image/, mask/ when some pixel is not fully
    covered, cameras_sphere.npz). NeuS has no splits, depth or normals: those are not written."""
    out = Path(out_dir)
    (out / "image").mkdir(parents=True, exist_ok=True)
    m = scene.extras.get("world_from_scene")
    world_from_scene = np.eye(4) if m is None else torch.as_tensor(m).double().numpy()
    similarity_parts(world_from_scene)
    with_mask = any(s.alphas is not None and bool((s.alphas < 1).any()) for s in scene.splits.values())
    if with_mask:
        (out / "mask").mkdir(exist_ok=True)
    matrices, n = {}, 0
    for split in scene.splits.values():
        require_pinhole(split, "neus")
        straight = straight_colour(split, scene.background)
        c = split.cameras
        c2w_cv = opencv_to_opengl(c.c2w.double()).numpy()
        for index in range(len(split)):
            k = k_from_intrinsics(*(float(t[index]) for t in (c.fx, c.fy, c.cx, c.cy)))
            matrices[f"world_mat_{n}"] = compose_world_mat(k, pose_to_world(c2w_cv[index], world_from_scene))
            matrices[f"scale_mat_{n}"] = world_from_scene
            images.write_rgb(out / "image" / f"{n:03d}.png", straight[index])
            if with_mask:
                alpha = split.alphas[index].numpy() if split.alphas is not None else np.ones((c.height, c.width))
                images.write_rgb(out / "mask" / f"{n:03d}.png", np.repeat(alpha[..., None], 3, -1))
            n += 1
    with atomic_path(out / CAMERA_FILES[0]) as tmp:
        np.savez(tmp, **matrices)
    return out
