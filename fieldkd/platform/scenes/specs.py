"""Named procedural scenes: ``SCENES[name]()`` returns a list of coloured primitives.

World is z-up; every scene fits inside the box [-BOUND, BOUND]^3 and sits
roughly around the origin, so cameras orbiting at radius 4 frame it (``spindles``
is compact enough for radius 3; ``dome`` is meant for radius 5.5 and above). Adding a
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


def spindles_scene() -> SceneSpec:
    """A compact cluster of thin, elongated shapes with fine stripes (for orbits down to radius 3)."""
    return [
        Primitive(
            partial(sdf.capsule, a=(0.0, 0.0, -0.62), b=(0.0, 0.0, 0.62), radius=0.07),
            partial(sdf.stripes, color_a=(0.85, 0.25, 0.1), color_b=(0.97, 0.93, 0.8),
                    period=0.07, axis=(0.0, 0.0, 1.0)),
            center=(0.18, -0.22, 0.0), rotation=sdf.rotation(ry=8.0), specular=0.2,
        ),
        Primitive(
            partial(sdf.cylinder, radius=0.06, half_height=0.55),
            partial(sdf.stripes, color_a=(0.1, 0.2, 0.6), color_b=(0.9, 0.9, 0.95),
                    period=0.06, axis=(0.0, 0.0, 1.0)),
            center=(-0.3, 0.12, 0.02), rotation=sdf.rotation(rx=50.0, rz=15.0),
        ),
        Primitive(
            partial(sdf.torus, major=0.3, minor=0.045),
            partial(sdf.stripes, color_a=(0.1, 0.55, 0.25), color_b=(0.95, 0.85, 0.3),
                    period=0.05, axis=(1.0, 0.3, 0.0)),
            center=(0.22, 0.3, 0.3), rotation=sdf.rotation(ry=70.0, rz=-20.0),
        ),
        Primitive(
            partial(sdf.rounded_box, half=(0.55, 0.06, 0.06), radius=0.03),
            partial(sdf.stripes, color_a=(0.6, 0.15, 0.6), color_b=(0.95, 0.95, 0.95),
                    period=0.08, axis=(1.0, 0.0, 0.0)),
            center=(-0.02, -0.08, -0.45), rotation=sdf.rotation(ry=-20.0, rz=35.0),
        ),
        Primitive(
            partial(sdf.capsule, a=(-0.42, -0.35, -0.25), b=(0.35, 0.4, 0.42), radius=0.045),
            partial(sdf.checker, color_a=(0.95, 0.7, 0.1), color_b=(0.2, 0.15, 0.1), size=0.06),
            center=(0.0, 0.05, 0.0), specular=0.3,
        ),
    ]


def dome_scene() -> SceneSpec:
    """A large smooth dome on a rounded slab, both in a coarse checker, with small dotted and
    striped details on top (for orbits out to radius 5.5, seen from above)."""
    return [
        Primitive(
            partial(sdf.rounded_box, half=(0.95, 0.95, 0.18), radius=0.12),
            partial(sdf.checker, color_a=(0.3, 0.45, 0.7), color_b=(0.92, 0.9, 0.82), size=0.4),
            center=(0.0, 0.0, -0.9),
        ),
        Primitive(
            partial(sdf.sphere, radius=0.7),
            partial(sdf.checker, color_a=(0.85, 0.4, 0.15), color_b=(0.98, 0.85, 0.55), size=0.35),
            center=(-0.1, 0.05, -0.3), specular=0.25,
        ),
        Primitive(
            partial(sdf.sphere, radius=0.11),
            partial(sdf.dots, color_a=(0.95, 0.95, 0.95), color_b=(0.8, 0.1, 0.2), size=0.06),
            center=(0.6, -0.55, -0.6),
        ),
        Primitive(
            partial(sdf.sphere, radius=0.09),
            partial(sdf.dots, color_a=(0.15, 0.5, 0.3), color_b=(0.95, 0.9, 0.3), size=0.05),
            center=(-0.6, 0.6, -0.62),
        ),
        Primitive(
            partial(sdf.torus, major=0.13, minor=0.03),
            partial(sdf.stripes, color_a=(0.1, 0.1, 0.15), color_b=(0.9, 0.9, 0.9),
                    period=0.04, axis=(1.0, 0.0, 0.0)),
            center=(0.62, 0.55, -0.68), specular=0.3,
        ),
        Primitive(
            partial(sdf.capsule, a=(0.0, 0.0, 0.0), b=(0.0, 0.0, 0.3), radius=0.04),
            partial(sdf.stripes, color_a=(0.2, 0.3, 0.8), color_b=(0.95, 0.95, 0.95),
                    period=0.05, axis=(0.0, 0.0, 1.0)),
            center=(-0.1, 0.05, 0.38),
        ),
        Primitive(
            partial(sdf.box, half=(0.09, 0.09, 0.09)),
            partial(sdf.dots, color_a=(0.25, 0.2, 0.2), color_b=(0.95, 0.95, 0.9), size=0.045),
            center=(-0.65, -0.5, -0.63), rotation=sdf.rotation(rz=30.0),
        ),
    ]


SCENES: dict[str, Callable[[], SceneSpec]] = {
    "default": default_scene,
    "heldout": heldout_scene,
    "sphere": sphere_scene,
    "spindles": spindles_scene,
    "dome": dome_scene,
}

# The orbit a scene is framed for, as options of the generator (write_scene, render_scene); the
# scenes not named here are framed for its defaults (radius 4, elevations 10 to 60 degrees).
ORBITS: dict[str, dict] = {
    "spindles": {"camera_radius": 3.0, "elevation_range": (-10.0, 20.0)},
    "dome": {"camera_radius": 5.5, "elevation_range": (40.0, 80.0)},
}
