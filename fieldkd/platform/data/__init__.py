"""Data modules: what a training draws its batches from (a scene's rays, multi-view samples:
multiview.py, frame sequences: sequences.py)."""
