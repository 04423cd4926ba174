"""Data modules: what a training draws its batches from: a scene's rays (rays.py), multi-view
samples (multiview.py), frame sequences (sequences.py). The dataset modules serve a rank of a world
its training batches, the evaluation items and a lazily read Ray Data dataset; a scene's rays are
Parquet shards that Ray Train workers stream (one process samples its in-memory split instead)."""
