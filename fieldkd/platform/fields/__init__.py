"""Radiance and SDF fields: every architecture maps (point, direction) to
density, colour and (except ``grid``) a feature, behind one registry; the
neural SDF (``sdf``) also returns normals in ``extras``.

    field = build_field("hash", aabb, log2_hashmap_size=17)
    out = field(x, d)            # FieldOutput(raw_density, density, rgb, feature, extras)
    opt = torch.optim.Adam(field.param_groups(lr=1e-2))
"""

from .backend import pick_hash_backend
from .output import FEATURE_DIM, FieldOutput
from .radiance import FeatureField, RadianceField
from .registry import FIELDS, build_field, register_field
from . import models  # noqa: F401  (registers mlp, hash, kplanes, vm, grid, sdf)

__all__ = [
    "FEATURE_DIM", "FIELDS", "FeatureField", "FieldOutput", "RadianceField", "build_field",
    "pick_hash_backend", "register_field",
]
