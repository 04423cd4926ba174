"""Data modules: what a training draws its batches from: a scene's rays (rays.py), multi-view
samples (multiview.py), frame sequences (sequences.py). Each serves a rank of a world its training
batches, the evaluation items, and a Ray Data dataset read lazily for Ray Train workers."""
