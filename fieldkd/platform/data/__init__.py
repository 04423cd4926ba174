"""Data modules: what a training draws its batches from (multi-view samples: multiview.py)."""
