"""Feed-forward networks trained over datasets of scans or sequences (rather than one field per
scene): the cascade multi-view stereo network in ``mvs`` and the BTS density field in ``bts``."""
