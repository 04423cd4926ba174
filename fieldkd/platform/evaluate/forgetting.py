"""The forgetting matrix of an incremental run: the score on each chunk's views
(columns) after each training stage (rows). Below the diagonal is what a
stream remembers; the last row is where it ends up."""

from __future__ import annotations

import numpy as np


def forgetting_matrix(stage_metrics: list[dict[str, float]], chunks: int, metric: str = "test/psnr") -> np.ndarray:
    """(stages, chunks) from each stage's metrics ``chunk_k/<metric>``; NaN where a chunk has no views."""
    return np.array([[float(m.get(f"chunk_{k}/{metric}", np.nan)) for k in range(chunks)] for m in stage_metrics])


def forgetting(matrix: np.ndarray) -> np.ndarray:
    """Per chunk: the drop from its score right after it was learned (the diagonal) to the
    final score (the last row); positive means forgotten. Needs a square matrix."""
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"forgetting needs one stage per chunk, got {matrix.shape}")
    return np.diag(matrix) - matrix[-1]


def matrix_table(matrices: dict[str, np.ndarray]) -> str:
    """Tab-separated: one row per (stream, stage), one column per chunk."""
    chunks = max(m.shape[1] for m in matrices.values())
    lines = ["stream\tafter\t" + "\t".join(f"chunk_{k}" for k in range(chunks))]
    for name, matrix in matrices.items():
        for t, row in enumerate(matrix):
            after = f"chunk_{t}" if matrix.shape[0] > 1 else "all"
            lines.append(f"{name}\t{after}\t" + "\t".join("" if np.isnan(v) else f"{v:.3f}" for v in row))
    return "\n".join(lines) + "\n"


def matrix_figure(matrices: dict[str, np.ndarray], metric: str = "test PSNR (dB)"):
    """One heat map per stream, on a shared colour scale, values written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.concatenate([m[np.isfinite(m)] for m in matrices.values()])
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.2 * len(matrices) + 1.0, 3.4), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], matrices.items()):
        image = ax.imshow(matrix, vmin=lo, vmax=hi, cmap="viridis", aspect="auto")
        for (t, k), v in np.ndenumerate(matrix):
            if np.isfinite(v):
                ax.text(k, t, f"{v:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if v < (lo + hi) / 2 else "black")
        ax.set_title(name)
        ax.set_xlabel("views of chunk")
        ax.set_xticks(range(matrix.shape[1]))
        ax.set_yticks(range(matrix.shape[0]))
        ax.set_yticklabels([f"after {t}" for t in range(matrix.shape[0])] if matrix.shape[0] > 1 else ["all"])
    fig.colorbar(image, ax=axes[0].tolist(), label=metric)
    return fig
