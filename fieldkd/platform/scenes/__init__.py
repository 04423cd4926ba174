"""Scenes: reading datasets, and generating procedural ones with ground truth.

Public API
----------
``load_scene(fmt, path, background=(1, 1, 1), downscale=1, aabb=None, near=None, far=None, limits=None,
**options) -> Scene``
    Read a dataset; ``fmt`` is one of ``FORMATS`` ("blender", "nerfstudio", "monosdf", "neus").
    Bad input raises :class:`fieldkd.platform.errors.InputError`. ``limits``
    (:class:`ReadLimits`): files stay in the dataset folder, pixel and byte caps;
    ``options``: missing_frames, center_crop, depth_scale (:class:`options.ReadOptions`).
``write_scene(spec_name, out_dir, fmt="blender", mesh_resolution=128, progress=True, **options) -> Path``
    Render a procedural SDF scene with depth, normals and a ground-truth
    ``mesh.ply``: object scenes ("default", "heldout", "sphere"; options width=80,
    height=80, n_train=60, n_val=10, n_test=20, camera_angle_x=0.6911, seed=0) or
    rooms seen along a camera path ("indoor", "indoor_b"; options width=64,
    height=48, n_frames=100, test_every=8, camera_angle_x=70 degrees). Variants:
    ``lens="opencv"|"fisheye"`` and ``per_frame_intrinsics=True`` (objects, nerfstudio
    format), ``center_crop=`` (monosdf format, MonoSDF's crops).
``default_scene_dir(name="default", fmt="blender") -> Path``
    The procedural scene, generated once into the cache directory.
``Scene``, ``SceneSplit``, ``Cameras``, ``Rays``
    In-memory data: images on the background, OpenGL camera-to-world poses, a lens
    model per split (:mod:`lens`; rays are cast through it).
"""

from importlib import import_module

# Imported on first use (PEP 562): a reader that Ray Data's workers run (DTU's) then loads without the
# generator, and with it torch, which costs a fresh process over a second.
_HOMES = {"default_scene_dir": "cache", "Cameras": "cameras", "Rays": "cameras", "write_scene": "generator",
          "ReadLimits": "limits", "FORMATS": "registry", "READERS": "registry", "WRITERS": "registry",
          "load_scene": "registry", "Scene": "scene", "SceneSplit": "scene"}

__all__ = [
    "load_scene", "write_scene", "default_scene_dir", "Scene", "SceneSplit", "Cameras", "Rays",
    "FORMATS", "READERS", "WRITERS", "ReadLimits",
]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOMES[name]}", __name__), name)
