"""Named procedural scenes: ``SCENES[name]()`` returns a list of coloured primitives.

World is z-up; every scene fits inside the box [-BOUND, BOUND]^3 and sits
roughly around the origin, so cameras orbiting at radius 4 frame it. Adding a
scene means adding one function and one registry line.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from . import sdf
from .sdf import Primitive, SceneSpec

BOUND = 1.2  # half-size of the box every scene must fit in


def default_scene() -> SceneSpec:
    """Four textured primitives: rounded box, striped sphere, tilted torus, capsule."""
    return [
        Primitive(
            partial(sdf.rounded_box, half=(0.55, 0.45, 0.32), radius=0.08),
            partial(sdf.checker, color_a=(0.95, 0.55, 0.1), color_b=(0.95, 0.92, 0.85), size=0.18),
            center=(-0.4, -0.35, -0.6), rotation=sdf.rotation(rz=20.0),
        ),
        Primitive(
            partial(sdf.sphere, radius=0.52),
            partial(sdf.stripes, color_a=(0.15, 0.3, 0.85), color_b=(0.98, 0.85, 0.2),
                    period=0.16, axis=(0.3, 0.2, 1.0)),
            center=(0.5, 0.35, -0.4), specular=0.25,
        ),
        Primitive(
            partial(sdf.torus, major=0.42, minor=0.13),
            partial(sdf.checker, color_a=(0.85, 0.12, 0.15), color_b=(0.98, 0.95, 0.9), size=0.1),
            center=(-0.3, 0.4, 0.4), rotation=sdf.rotation(rx=60.0, rz=-30.0),
        ),
        Primitive(
            partial(sdf.capsule, a=(0.0, 0.0, -0.75), b=(0.0, 0.0, 0.75), radius=0.17),
            partial(sdf.stripes, color_a=(0.1, 0.65, 0.3), color_b=(0.9, 0.95, 0.9),
                    period=0.2, axis=(0.0, 0.0, 1.0)),
            center=(0.45, -0.5, 0.0), rotation=sdf.rotation(rx=15.0, ry=-20.0), specular=0.15,
        ),
    ]


def heldout_scene() -> SceneSpec:
    """A different composition for held-out evaluation: slab, cylinder, sphere, flat torus."""
    return [
        Primitive(
            partial(sdf.box, half=(0.85, 0.55, 0.18)),
            partial(sdf.stripes, color_a=(0.55, 0.3, 0.75), color_b=(0.95, 0.95, 0.95),
                    period=0.14, axis=(1.0, 1.0, 0.0)),
            center=(0.0, 0.0, -0.75), rotation=sdf.rotation(rz=25.0),
        ),
        Primitive(
            partial(sdf.cylinder, radius=0.28, half_height=0.5),
            partial(sdf.checker, color_a=(0.1, 0.55, 0.6), color_b=(0.95, 0.9, 0.6), size=0.12),
            center=(-0.45, 0.1, -0.07),
        ),
        Primitive(
            partial(sdf.sphere, radius=0.38),
            partial(sdf.checker, color_a=(0.9, 0.35, 0.2), color_b=(0.2, 0.2, 0.25), size=0.09),
            center=(0.45, -0.15, -0.19), specular=0.3,
        ),
        Primitive(
            partial(sdf.torus, major=0.38, minor=0.1),
            partial(sdf.solid, color=(0.9, 0.2, 0.7)),
            center=(0.2, 0.35, 0.55), rotation=sdf.rotation(rx=10.0), specular=0.3,
        ),
    ]


def sphere_scene() -> SceneSpec:
    """One checkered sphere of radius 0.8 at the origin (closed-form checks)."""
    return [
        Primitive(
            partial(sdf.sphere, radius=0.8),
            partial(sdf.checker, color_a=(0.2, 0.4, 0.9), color_b=(0.95, 0.95, 0.95), size=0.2),
        )
    ]


SCENES: dict[str, Callable[[], SceneSpec]] = {
    "default": default_scene,
    "heldout": heldout_scene,
    "sphere": sphere_scene,
}
