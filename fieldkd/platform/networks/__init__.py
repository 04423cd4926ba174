"""Feed-forward networks trained over datasets of scenes (rather than one field per scene),
such as the cascade multi-view stereo network in ``mvs``."""
