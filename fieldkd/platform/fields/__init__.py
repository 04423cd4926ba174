"""Radiance fields: every architecture maps (point, direction) to density,
colour and (except ``grid``) a shared 16-d feature, behind one registry.

    field = build_field("hash", aabb, log2_hashmap_size=17)
    out = field(x, d)            # FieldOutput(raw_density, density, rgb, feature)
    opt = torch.optim.Adam(field.param_groups(lr=1e-2))
"""

from .backend import pick_hash_backend
from .output import FEATURE_DIM, FieldOutput
from .radiance import FeatureField, RadianceField
from .registry import FIELDS, build_field, register_field
from . import models  # noqa: F401  (registers mlp, hash, kplanes, vm, grid)

__all__ = [
    "FEATURE_DIM", "FIELDS", "FeatureField", "FieldOutput", "RadianceField", "build_field",
    "pick_hash_backend", "register_field",
]
