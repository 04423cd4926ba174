"""Multi-view stereo: the cascade network, cross-view consistency and pseudo-labels."""
