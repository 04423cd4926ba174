"""Data modules: what a training reads (rays of a scene, multi-view samples, frame sequences)."""
