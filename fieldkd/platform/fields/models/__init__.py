"""Field implementations; importing this package registers them all."""

from . import grid_field, hash_field, kplanes_field, mlp_field, sdf_field, vm_field  # noqa: F401
