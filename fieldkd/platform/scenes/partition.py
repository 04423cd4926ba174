"""Split a scene's training views into K groups of similar views, one per expert (DaC).

- ``azimuth`` (object scenes): K directions spread evenly around the up axis
  through the scene centre, at (2k+1)·180°/K (45°, 135°, 225°, 315° for K=4);
  a view belongs to the direction with the largest dot product with its
  horizontal offset from the centre.
- ``louvain`` (scenes without a centre): Louvain communities of a
  view-similarity graph whose edge weight is the Jaccard index of the scene
  points two views see. The points are either back-projected from the
  training depth maps and tested for occlusion against the other views' depth
  (``covisibility``) or drawn uniformly in the scene box (``frustum``
  overlap). Louvain picks its own number of communities: the resolution is
  raised until there are at least K, then the smallest community is merged
  into the one it is most similar to (mean edge weight) until K remain.
- ``overlap``: each group also takes the ``round(overlap · size)`` views
  outside it that are most similar to it, so neighbouring experts share views.

Test views (or any new camera) are assigned with :meth:`ViewPartition.assign`.
The split is recorded as a view → expert table and a figure of the camera
positions coloured by expert.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .cameras import Cameras, camera_up, in_image, project, surrounds
from .scene import SceneSplit

METHODS = ("auto", "azimuth", "louvain")
GRAPHS = ("auto", "covisibility", "frustum")


@dataclass
class ViewPartition:
    method: str  # azimuth | louvain
    owner: np.ndarray  # (N,) int: the expert each view belongs to
    affinity: np.ndarray  # (N, K): how strongly each view belongs to each group (larger: closer)
    groups: list[list[int]]  # the views each expert trains on: its own and, with overlap, its neighbours'
    centres: np.ndarray  # (N, 3) camera positions
    forwards: np.ndarray  # (N, 3) viewing directions
    frame: np.ndarray  # (3, 3) rows: horizontal axes e1, e2 and the up axis
    centre: np.ndarray  # (3,) the scene centre
    directions: np.ndarray | None = None  # (K, 2) azimuth directions in the (e1, e2) plane
    graph: str | None = None  # louvain: covisibility | frustum

    @property
    def k(self) -> int:
        return len(self.groups)

    def assign(self, cameras: Cameras) -> np.ndarray:
        """The expert of each of ``cameras`` (e.g. the test views): by azimuth, or the
        owner of the most similar training view (near, and looking the same way)."""
        centres, forwards = _centres_forwards(cameras)
        if self.directions is not None:
            return np.argmax(_horizontal(centres, self.centre, self.frame) @ self.directions.T, axis=1)
        scale = float(np.linalg.norm(self.centres - self.centres.mean(0), axis=1).mean()) or 1.0
        distance = np.linalg.norm(centres[:, None] - self.centres[None], axis=-1) / scale
        turn = 1.0 - forwards @ self.forwards.T
        return self.owner[np.argmin(distance + turn, axis=1)]

    def table(self, frame_paths: list[str]) -> str:
        """TSV: view index, frame, its own expert, every expert that trains on it."""
        groups = [set(group) for group in self.groups]
        rows = ["view\tframe\texpert\tgroups"]
        rows += [f"{i}\t{frame_paths[i]}\t{int(owner)}\t{','.join(str(k) for k, g in enumerate(groups) if i in g)}"
                 for i, owner in enumerate(self.owner)]
        return "\n".join(rows) + "\n"


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _centres_forwards(cameras: Cameras) -> tuple[np.ndarray, np.ndarray]:
    c2w = cameras.c2w.detach().cpu().double().numpy()
    return c2w[:, :3, 3], _unit(-c2w[:, :3, 2])  # OpenGL cameras look down -z


def horizontal_frame(up: np.ndarray) -> np.ndarray:
    """Rows e1, e2, up: a right-handed frame whose e1 is the world x axis (or y) made
    orthogonal to ``up``, so that with up = z the azimuths are the usual (x, y) angles."""
    up = _unit(np.asarray(up, dtype=np.float64))
    seed = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = _unit(seed - (seed @ up) * up)
    return np.stack([e1, np.cross(up, e1), up])


def _horizontal(points: np.ndarray, centre: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """(N, 2) unit horizontal offsets of points from the centre."""
    return _unit((points - centre) @ frame[:2].T)


def azimuth_directions(k: int) -> np.ndarray:
    """(K, 2) unit directions at (2k+1)·180°/K: 45°, 135°, 225°, 315° for K=4."""
    angles = (2 * np.arange(k) + 1) * np.pi / k
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def with_overlap(owner: np.ndarray, affinity: np.ndarray, overlap: float) -> list[list[int]]:
    """Each group's own views plus the ``round(overlap · size)`` most similar views outside it."""
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    groups = []
    for k in range(affinity.shape[1]):
        own = np.flatnonzero(owner == k)
        others = np.flatnonzero(owner != k)
        extra = others[np.argsort(-affinity[others, k], kind="stable")][:int(round(overlap * len(own)))]
        groups.append(sorted(int(i) for i in np.concatenate([own, extra])))
    return groups


def similarity_graph(visibility: np.ndarray) -> np.ndarray:
    """(C, C) Jaccard index of the point sets each view sees, from a (C, N) visibility matrix."""
    seen = visibility.astype(np.float64)
    both = seen @ seen.T
    counts = seen.sum(1)
    either = counts[:, None] + counts[None, :] - both
    similarity = np.where(either > 0, both / np.maximum(either, 1e-12), 0.0)
    np.fill_diagonal(similarity, 0.0)
    return similarity


def depth_points(split: SceneSplit, n: int, generator: torch.Generator) -> torch.Tensor:
    """Up to n scene points back-projected from random pixels with depth (surface points)."""
    views, h, w = split.depths.shape
    flat = torch.randint(0, views * h * w, (4 * n,), generator=generator)
    depth = split.depths.reshape(-1)[flat]
    flat, depth = flat[depth > 0][:n], depth[depth > 0][:n]
    cam, rest = flat // (h * w), flat % (h * w)
    rays = split.cameras.rays_at(cam, (rest % w).float(), (rest // w).float())  # rays_at adds the half pixel
    return rays.origins + rays.directions * (depth / rays.z_scale)[:, None]


def view_visibility(split: SceneSplit, points: torch.Tensor, occlusion: bool, tolerance: float = 0.03) -> np.ndarray:
    """(C, N) which view sees which point: inside its image and in front of it and,
    with ``occlusion``, no nearer than the view's own depth map says (within
    ``tolerance`` of the depth)."""
    cameras = split.cameras
    px, py, z = project(points, cameras)
    seen = in_image(px, py, z, cameras)
    if occlusion:
        col = px.clamp(0, cameras.width - 1).long()
        row = py.clamp(0, cameras.height - 1).long()
        surface = split.depths[torch.arange(len(cameras))[:, None], row, col]
        seen &= (surface <= 0) | (z <= surface * (1 + tolerance))
    return seen.cpu().numpy()


def louvain_groups(similarity: np.ndarray, k: int, seed: int) -> list[set[int]]:
    """K communities of the weighted view graph (see the module docstring)."""
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(range(len(similarity)))
    rows, cols = np.nonzero(np.triu(similarity, 1))
    graph.add_weighted_edges_from((int(i), int(j), float(similarity[i, j])) for i, j in zip(rows, cols))
    resolution = 1.0
    communities = nx.community.louvain_communities(graph, weight="weight", resolution=resolution, seed=seed)
    while len(communities) < k and resolution < 1e4:
        resolution *= 2.0
        communities = nx.community.louvain_communities(graph, weight="weight", resolution=resolution, seed=seed)
    communities = [set(c) for c in communities]
    while len(communities) > k:
        communities.sort(key=lambda c: (len(c), min(c)))
        smallest = communities.pop(0)
        # Mean, not total, similarity: a total would feed every small group to the largest one.
        links = [similarity[np.ix_(sorted(smallest), sorted(c))].mean() for c in communities]
        communities[int(np.argmax(links))] |= smallest
    return sorted(communities, key=min)


def split_views(split: SceneSplit, aabb: torch.Tensor, k: int, *, method: str = "auto", graph: str = "auto",
                overlap: float = 0.0, points: int = 4096, seed: int = 0) -> ViewPartition:
    """Partition the views of ``split`` into ``k`` groups (see the module docstring).

    ``method=auto`` splits by azimuth when the cameras surround the scene centre,
    else by Louvain; ``graph=auto`` uses covisibility where the split has depth maps.
    """
    if method not in METHODS:
        raise ValueError(f"unknown partition method {method!r}; one of {', '.join(METHODS)}")
    if graph not in GRAPHS:
        raise ValueError(f"unknown view graph {graph!r}; one of {', '.join(GRAPHS)}")
    n = len(split)
    if not 1 <= k <= n:
        raise ValueError(f"cannot split {n} views among {k} experts")
    centre_t = aabb.float().mean(0)
    if method == "auto":
        method = "azimuth" if surrounds(split.cameras, centre_t) else "louvain"
    centres, forwards = _centres_forwards(split.cameras)
    centre = centre_t.double().numpy()
    frame = horizontal_frame(camera_up(split.cameras).double().numpy())
    if method == "azimuth":
        directions = azimuth_directions(k)
        affinity = _horizontal(centres, centre, frame) @ directions.T
        owner = np.argmax(affinity, axis=1)
        return ViewPartition(method, owner, affinity, with_overlap(owner, affinity, overlap), centres, forwards,
                             frame, centre, directions=directions)

    if graph == "auto":
        graph = "covisibility" if split.depths is not None else "frustum"
    if graph == "covisibility" and split.depths is None:
        raise ValueError("covisibility needs depth maps in the training split; use the frustum graph")
    generator = torch.Generator().manual_seed(seed)
    if graph == "covisibility":
        sample = depth_points(split, points, generator)
    else:
        low, high = aabb.float()
        sample = low + torch.rand(points, 3, generator=generator) * (high - low)
    similarity = similarity_graph(view_visibility(split, sample, occlusion=graph == "covisibility"))
    communities = louvain_groups(similarity, k, seed)
    owner = np.zeros(n, dtype=np.int64)
    for label, members in enumerate(communities):
        owner[sorted(members)] = label
    affinity = np.stack([similarity[:, owner == j].mean(1) for j in range(len(communities))], axis=1)
    return ViewPartition("louvain", owner, affinity, with_overlap(owner, affinity, overlap), centres, forwards,
                         frame, centre, graph=graph)


def partition_figure(partition: ViewPartition, assigned: dict[str, tuple[np.ndarray, np.ndarray]] | None = None):
    """Camera positions seen from above (in the horizontal frame), coloured by expert;
    views shared through overlap are ringed in the colour of each other group.
    ``assigned``: other cameras to draw as crosses, {label: (centres (M, 3), experts (M,))}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10")
    top = (partition.centres - partition.centre) @ partition.frame[:2].T
    figure, axis = plt.subplots(figsize=(5.5, 5.5))
    for k, group in enumerate(partition.groups):
        own = partition.owner == k
        axis.scatter(top[own, 0], top[own, 1], s=36, color=colours(k % 10), label=f"expert {k} ({own.sum()} views)")
        shared = [i for i in group if partition.owner[i] != k]
        axis.scatter(top[shared, 0], top[shared, 1], s=110, facecolors="none", edgecolors=colours(k % 10))
    for label, (centres, experts) in (assigned or {}).items():
        flat = (np.asarray(centres) - partition.centre) @ partition.frame[:2].T
        axis.scatter(flat[:, 0], flat[:, 1], marker="x", s=30, c=[colours(int(e) % 10) for e in experts],
                     label=label)
    if partition.directions is not None:
        reach = float(np.abs(top).max()) or 1.0
        for k, direction in enumerate(partition.directions):
            axis.plot([0, reach * direction[0]], [0, reach * direction[1]], "--", color=colours(k % 10), lw=1)
    axis.scatter([0], [0], marker="+", color="black", s=80)
    axis.set_aspect("equal")
    axis.set_xlabel("e1 (horizontal)")
    axis.set_ylabel("e2 (horizontal)")
    how = partition.method + (f", {partition.graph} graph" if partition.graph else "")
    axis.set_title(f"{partition.k} experts by {how}")
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    return figure
