"""Input encodings: positions (frequency, hash grid, K-Planes, VM, dense grid)
and view directions (spherical harmonics, frequency)."""

from .frequency import FrequencyEncoding, frequency_dim, frequency_encode
from .grid import DenseGrid
from .hash_encoders import make_hash_grid
from .hashgrid import HashGridConfig, TorchHashGrid
from .kplanes import KPlanesEncoding
from .sh import sh_basis, sh_dim
from .vm import VMComponents, VMEncoding

__all__ = [
    "DenseGrid", "FrequencyEncoding", "HashGridConfig", "KPlanesEncoding", "TorchHashGrid",
    "VMComponents", "VMEncoding", "frequency_dim", "frequency_encode", "make_hash_grid",
    "sh_basis", "sh_dim",
]
