"""Procedural driving sequences in KITTI-360's layout (:mod:`kitti360`), with exact geometry.

A sequence is a straight street of analytic SDF shapes in metres (world z up, the street along
+x): the road (z = 0) between raised kerbs, building façades with windows, cars parked along the
kerbs, poles and trees on the pavements. A vehicle drives down the right lane; its rig carries a
rectified stereo pair (cameras 00/01, 1.5 m above the road), two side fisheyes (02/03, MEI
model) and a 64-beam LiDAR. Images are ray-traced with one ray per pixel, LiDAR sweeps with one
ray per beam and azimuth step; rays from one sensor are tested in direction bundles against only
the shapes each bundle can reach (:meth:`Geometry.intersect`). The street's parameters are saved next to the layout
(``ground_truth/<seq>/street.json``): :func:`load_street` and :func:`exact_occupancy` give the
exact occupancy that the LiDAR-derived ground truth approximates.

Each shape row (buildings, cars, poles, trees on one side) repeats along x in cells, with each
cell's parameters drawn per street; a point looks at its own cell and the two next to it (every
shape stays inside its cell), and the distance to any cell further away bounds the rest, so the
union is a true lower bound of the distance and sphere tracing stays safe.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_text
from ..errors import InputError
from ..train.progress import Counter
from . import kitti360, lens, sdf
from .cache import build_once, cache_root
from .kitti360 import Calibration, MeiCamera
from .tracer import AMBIENT, LIGHT_DIR, one_thread

KITTI_GENERATOR_VERSION = 3  # bump when the generated files change (invalidates the cache)
ROAD_HALF = 5.0  # metres from the street's centre line to the kerb
KERB = 0.15  # kerb height
LANE_Y = -2.0  # the vehicle drives in the right lane
IMU_HEIGHT = 0.95  # vehicle (pose) frame origin above the road
BASELINE = 0.6  # stereo baseline, as KITTI-360's
CAMERA_PITCH = 5.0  # degrees down, the tilt BTS's occupancy evaluator assumes for KITTI-360's camera 00
LIDAR_ELEVATION = (2.0, -24.8)  # degrees, HDL-64E's beam range
LIDAR_RANGE = (0.9, 80.0)
MAX_RANGE = 80.0  # camera rays stop here (sky)
SKY_TOP = 20.0  # above every shape: rays that rise past it are sky
MEI = {"xi": 2.2134, "k1": 0.0168, "k2": 1.6549, "p1": 4.2e-4, "p2": 4.2e-4}  # KITTI-360's image_02, roughly
MEI_FOCAL = 1336.0 / 1400.0  # gamma over image size, KITTI-360's
PERSPECTIVE_FOCAL = 552.55 / 1408.0  # fx over image width, KITTI-360's
FAR = 1e3  # distance of a cell with no shape
BUNDLE = 128  # rays per culling bundle (see Geometry.intersect)
CULL_MARGIN = 1e-3  # radians added to a bundle's cone, against rounding
CULL_GROUPS = 4  # bundles are stacked into this many calls, by how many shapes they keep


# Kinds of shapes (they pick the texture).
GROUND, BUILDING, CAR, CABIN, POLE, TRUNK, CROWN = range(7)


@dataclass(frozen=True)
class Street:
    """One street as flat lists of shapes (JSON-friendly), in world metres. Besides them the road
    plane z = 0 is solid below. ``boxes``: [x0, y0, z0, x1, y1, z1, kind, r, g, b, phase] (axis
    aligned); ``cylinders``: [cx, cy, radius, z0, z1, kind, r, g, b] (vertical, capped);
    ``spheres``: [cx, cy, cz, radius, kind, r, g, b]."""

    seed: int
    length: float
    boxes: list = field(default_factory=list)
    cylinders: list = field(default_factory=list)
    spheres: list = field(default_factory=list)


def make_street(seed: int, length: float, building_cell: float = 10.0, car_cell: float = 6.0,
                pole_cell: float = 15.0, tree_cell: float = 12.0) -> Street:
    """Buildings, parked cars, poles and trees drawn per cell along both sides of the street."""
    rng = np.random.default_rng(seed)
    boxes, cylinders, spheres = [], [], []
    far = 100.0
    for sign in (1.0, -1.0):
        def span(a, b, sign=sign):  # the y interval between distances a and b from the centre line, this side
            return (a, b) if sign > 0 else (-b, -a)

        y0, y1 = span(ROAD_HALF, ROAD_HALF + 30.0)
        boxes.append([-far, y0, -1.0, length + far, y1, KERB, GROUND, 0.0, 0.0, 0.0, 0.0])  # pavement
        for k in range(math.ceil(length / building_cell)):
            gap = rng.uniform(0.2, 1.5) if rng.random() < 0.7 else 0.0  # an alley, or touching neighbours
            setback, height = rng.uniform(7.5, 13.0), rng.uniform(6.0, 15.0)
            y0, y1 = span(setback, setback + 12.0)
            x0 = k * building_cell + gap / 2
            boxes.append([x0, y0, -1.0, (k + 1) * building_cell - gap / 2, y1, height, BUILDING,
                          *rng.uniform(0.35, 0.85, 3), rng.uniform(0.0, 2.5)])
        for k in range(math.ceil(length / car_cell)):
            present, dx, colour = rng.random() < 0.55, rng.uniform(-0.6, 0.6), rng.uniform(0.05, 0.95, 3)
            if not present:
                continue
            x = k * car_cell + car_cell / 2 + dx
            y0, y1 = span(ROAD_HALF - 2.0, ROAD_HALF - 0.25)
            boxes.append([x - 2.1, y0, 0.25, x + 2.1, y1, 1.05, CAR, *colour, 0.0])
            y0, y1 = span(ROAD_HALF - 1.9, ROAD_HALF - 0.35)
            boxes.append([x - 1.5, y0, 1.05, x + 0.9, y1, 1.5, CABIN, *(0.3 * colour), 0.0])
        for k in range(math.ceil(length / pole_cell)):
            if rng.random() < 0.6:
                cylinders.append([k * pole_cell + rng.uniform(1.0, pole_cell - 1.0), sign * (ROAD_HALF + 0.5),
                                  0.12, -0.5, 6.0, POLE, 0.55, 0.55, 0.58])
        for k in range(math.ceil(length / tree_cell)):
            if rng.random() < 0.6:
                x, y, radius = k * tree_cell + rng.uniform(2.5, tree_cell - 2.5), sign * (ROAD_HALF + 2.0), \
                    rng.uniform(1.3, 2.0)
                cylinders.append([x, y, 0.2, -0.5, 3.4, TRUNK, 0.4, 0.28, 0.18])
                spheres.append([x, y, 3.2 + radius, radius, CROWN, 0.2, 0.45, 0.15])
    as_floats = lambda rows: [[float(v) for v in row] for row in rows]
    return Street(seed, float(length), as_floats(boxes), as_floats(cylinders), as_floats(spheres))


class Geometry:
    """A street's shapes as tensors: its signed distance, and exact ray intersections."""

    def __init__(self, street: Street):
        table = lambda rows, n: torch.tensor(rows, dtype=torch.float32).reshape(-1, n)
        self.street = street
        self.boxes, self.cylinders, self.spheres = table(street.boxes, 11), table(street.cylinders, 9), \
            table(street.spheres, 8)
        # One row per shape: kind, colour, phase (the road plane first), for textures.
        zero = torch.zeros(1, 5)
        zero[0, 0] = GROUND
        self.info = torch.cat([zero, self.boxes[:, 6:11], torch.cat([self.cylinders[:, 5:9],
                              torch.zeros(len(self.cylinders), 1)], 1), torch.cat([self.spheres[:, 4:8],
                              torch.zeros(len(self.spheres), 1)], 1)])

        # Bounding spheres of the boxes, cylinders and spheres, in that order (for culling).
        bc, bh = (self.boxes[:, :3] + self.boxes[:, 3:6]) / 2, (self.boxes[:, 3:6] - self.boxes[:, :3]) / 2
        cc = torch.stack([self.cylinders[:, 0], self.cylinders[:, 1], (self.cylinders[:, 3] + self.cylinders[:, 4]) / 2], -1)
        ch = torch.stack([self.cylinders[:, 2], (self.cylinders[:, 4] - self.cylinders[:, 3]) / 2], -1)
        self.bound_centres = torch.cat([bc, cc, self.spheres[:, :3]]).double()
        self.bound_radii = (torch.cat([bh.norm(dim=-1), ch.norm(dim=-1), self.spheres[:, 3]]) * (1 + 1e-5) + 1e-4).double()

    def distance(self, p: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """(N,) signed distance (negative inside) of world points (N, 3)."""
        if p.shape[0] > chunk:
            return torch.cat([self.distance(part, chunk) for part in p.split(chunk)])
        d = p[:, 2]  # the road plane
        if len(self.boxes):
            q = torch.maximum(self.boxes[None, :, :3] - p[:, None], p[:, None] - self.boxes[None, :, 3:6])
            box = q.clamp(min=0).norm(dim=-1) + q.amax(-1).clamp(max=0)
            d = torch.minimum(d, box.amin(1))
        if len(self.cylinders):
            c = self.cylinders
            radial = (p[:, None, :2] - c[None, :, :2]).norm(dim=-1) - c[None, :, 2]
            height = torch.maximum(c[None, :, 3] - p[:, None, 2], p[:, None, 2] - c[None, :, 4])
            q = torch.stack([radial, height], -1)
            d = torch.minimum(d, (q.clamp(min=0).norm(dim=-1) + q.amax(-1).clamp(max=0)).amin(1))
        if len(self.spheres):
            s = self.spheres
            d = torch.minimum(d, ((p[:, None] - s[None, :, :3]).norm(dim=-1) - s[None, :, 3]).amin(1))
        return d

    def intersect(self, origins, dirs, t_max: float, chunk: int = 4096, cull: bool = True):
        """First hits of rays (M, 3) (unit directions) within ``t_max``: t (M,), hit (M,), shape (M,)
        (index into :attr:`info`) and the outward unit normal (M, 3).

        ``cull``: rays from one origin (a camera, a LiDAR) are ordered by direction and cut into
        bundles of :data:`BUNDLE`; each bundle tests only the shapes whose bounding sphere meets its
        cone of directions and lies within ``t_max`` (or, for a bundle that looks down, within the
        road plane's farthest hit). Bundles with similar shape counts are stacked into one call,
        padded. Every ray still meets each shape it can hit through the same arithmetic, so the
        result is the unculled one, bit for bit."""
        m = origins.shape[0]
        t = torch.full((m,), float("inf"))
        col = torch.zeros(m, dtype=torch.long)
        if cull and m > BUNDLE and bool((origins == origins[:1]).all()):
            order = direction_order(dirs)
            order = torch.cat([order, order[-1:].expand(-m % BUNDLE)])  # whole bundles (the last ray repeated)
            bundles = order.view(-1, BUNDLE)
            keep = self._visible(origins[0], dirs[bundles], t_max)
            by_count = torch.argsort(keep.sum(1), stable=True)
            for group in by_count.tensor_split(min(CULL_GROUPS, len(by_count))):
                idx = bundles[group]
                t[idx], col[idx] = self._nearest(origins[:1, None], dirs[idx], *self._stack(keep[group]))
        else:
            for idx in torch.arange(m).split(chunk):
                t[idx], col[idx] = self._nearest(origins[idx][None], dirs[idx][None], *self._stack(
                    torch.ones(1, len(self.bound_radii), dtype=torch.bool)))
        return self._surface(origins, dirs, t, col, t_max)

    def _visible(self, origin, dirs, t_max: float) -> torch.Tensor:
        """(G, boxes + cylinders + spheres) bool: the shapes that bundles of rays from ``origin``
        along ``dirs`` (G, R, 3) may hit."""
        dirs, origin = dirs.double(), origin.double()  # float64: acos near 1 is coarse in float32
        mean = torch.nn.functional.normalize(dirs.mean(1), dim=-1)  # (G, 3)
        spread = torch.acos((dirs * mean[:, None]).sum(-1).amin(1).clamp(-1.0, 1.0))  # cone half-angles
        v = self.bound_centres - origin
        dist = v.norm(dim=-1)
        r = self.bound_radii
        off_axis = torch.acos(((mean @ v.T) / dist.clamp(min=1e-12)).clamp(-1.0, 1.0))  # (G, K)
        reach = torch.asin((r / dist.clamp(min=1e-12)).clamp(max=1.0))
        # No ray goes further than the road plane below it: that bounds the reach of downward bundles.
        plane = torch.where(dirs[..., 2] < -1e-9, origin[2] / -dirs[..., 2].clamp(max=-1e-9),
                            torch.full_like(dirs[..., 2], float("inf"))).amax(1)
        bound = plane.clamp(max=t_max) * (1 + 1e-6)
        return (dist <= r) | ((off_axis - reach <= spread[:, None] + CULL_MARGIN) & (dist - r <= bound[:, None]))

    def _stack(self, keep: torch.Tensor):
        """Per kind, (G, K) indices of the kept shapes, padded, and their (G, K) validity."""
        nb, nc = len(self.boxes), len(self.cylinders)
        out = []
        for part in (keep[:, :nb], keep[:, nb:nb + nc], keep[:, nb + nc:]):
            k = int(part.sum(1).max()) if part.numel() else 0
            idx = torch.argsort((~part).to(torch.uint8), dim=1, stable=True)[:, :k]  # kept ones first
            out += [idx, part.gather(1, idx)]
        return out

    def _nearest(self, origins, dirs, box_ids, box_ok, cylinder_ids, cylinder_ok, sphere_ids, sphere_ok):
        """Nearest hit t (G, R) (inf: none) and its column in the full table (plane, boxes, cylinder
        sides, cylinder caps, spheres) of G bundles of R rays: ``origins`` (G, R, 3), or one shared
        origin (1, 1, 3), unit ``dirs`` (G, R, 3); each bundle tests its own shapes ((G, K) indices,
        padding marked by the (G, K) masks). A shared origin makes every ray-independent term one
        row per shape instead of one per ray and shape."""
        inf = float("inf")
        dx, dy, dz = (x[..., None] for x in dirs.unbind(-1))  # (G, R, 1)
        ox, oy, oz = (x[..., None] for x in origins.unbind(-1))
        safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)  # divided by, as the reference
        cols = []
        # Road plane, from above.
        t = -oz / dz.clamp(max=-1e-9)
        cols.append(t.masked_fill(~((dz < -1e-9) & (t > 0)), inf).expand(*dirs.shape[:2], 1))
        # Boxes: the slab test.
        b = self.boxes[box_ids][:, None]  # (G, 1, K, 11)
        t0 = (b[..., :3] - origins[:, :, None]) / safe[:, :, None]
        t1 = (b[..., 3:6] - origins[:, :, None]) / safe[:, :, None]
        t_in = torch.minimum(t0, t1).amax(-1)
        t_out = torch.maximum(t0, t1).amin(-1)
        cols.append(t_in.masked_fill(~((t_in <= t_out) & (t_in > 0) & box_ok[:, None]), inf))
        # Vertical cylinders: the side, then the caps.
        c = self.cylinders[cylinder_ids][:, None]  # (G, 1, K, 9)
        ex, ey = ox - c[..., 0], oy - c[..., 1]
        r2 = c[..., 2] ** 2
        a = dx * dx + dy * dy
        half_b = ex * dx + ey * dy
        disc = half_b * half_b - a * (ex * ex + ey * ey - r2)
        side = (-half_b - disc.clamp(min=0).sqrt()) / a.clamp(min=1e-12)
        z = oz + side * dz
        ok = (disc > 0) & (a > 1e-12) & (side > 0) & (z >= c[..., 3]) & (z <= c[..., 4]) & cylinder_ok[:, None]
        cols.append(side.masked_fill(~ok, inf))
        caps = []
        for level in (3, 4):
            tc = (c[..., level] - oz) / safe[..., 2:3]
            rx, ry = ex + tc * dx, ey + tc * dy
            caps.append(tc.masked_fill(~((tc > 0) & (rx * rx + ry * ry <= r2) & cylinder_ok[:, None]), inf))
        cols.append(torch.minimum(*caps))
        # Spheres.
        sp = self.spheres[sphere_ids][:, None]  # (G, 1, K, 8)
        e = origins[:, :, None] - sp[..., :3]
        half_b = (e * dirs[:, :, None]).sum(-1)
        disc = half_b * half_b - ((e * e).sum(-1) - sp[..., 3] ** 2)
        ts = -half_b - disc.clamp(min=0).sqrt()
        cols.append(ts.masked_fill(~((disc > 0) & (ts > 0) & sphere_ok[:, None]), inf))
        t, local = torch.cat(cols, -1).min(-1)
        nb, nc = len(self.boxes), len(self.cylinders)
        table = torch.cat([torch.zeros(len(box_ids), 1, dtype=torch.long), 1 + box_ids, 1 + nb + cylinder_ids,
                           1 + nb + nc + cylinder_ids, 1 + nb + 2 * nc + sphere_ids], 1)
        return t, table.gather(1, local)

    def _surface(self, origins, dirs, t, col, t_max: float):
        """(t, hit, shape, normal) of :meth:`intersect` from the nearest hits' columns."""
        m = origins.shape[0]
        dz = dirs[:, 2]
        b, c, s = self.boxes, self.cylinders, self.spheres
        hit = t < t_max
        # Columns: plane, boxes, cylinder sides, cylinder caps, spheres -> shape rows of info.
        nb, nc = len(b), len(c)
        shape = torch.where(col > nb + nc, col - nc, col)
        points = origins + torch.where(hit, t, torch.zeros_like(t))[:, None] * dirs
        normal = torch.zeros(m, 3)
        normal[:, 2] = 1.0  # the plane, and cylinder tops
        is_box = (col >= 1) & (col <= nb)
        if is_box.any():
            k = col[is_box] - 1
            # the entered face: the axis whose slab the ray enters last
            o, d = origins[is_box], dirs[is_box]
            safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
            ax = torch.minimum((b[k, :3] - o) / safe, (b[k, 3:6] - o) / safe).argmax(-1)
            n = torch.zeros(int(is_box.sum()), 3)
            n[torch.arange(len(k)), ax] = -torch.sign(dirs[is_box].gather(1, ax[:, None])[:, 0])
            normal[is_box] = n
        is_side = (col > nb) & (col <= nb + nc)
        if is_side.any():
            k = col[is_side] - nb - 1
            radial = points[is_side, :2] - c[k, :2]
            normal[is_side] = torch.cat([radial / radial.norm(dim=-1, keepdim=True), torch.zeros(len(k), 1)], 1)
        is_cap = (col > nb + nc) & (col <= nb + 2 * nc)
        if is_cap.any():
            normal[is_cap] = torch.tensor([0.0, 0.0, 1.0]) * -torch.sign(dz[is_cap])[:, None]
        is_sphere = col > nb + 2 * nc
        if is_sphere.any():
            k = col[is_sphere] - nb - 2 * nc - 1
            normal[is_sphere] = (points[is_sphere] - s[k, :3]) / s[k, 3:4]
        return torch.where(hit, t, torch.zeros_like(t)), hit, shape, normal

    def albedo(self, points, shape, normal) -> torch.Tensor:
        """(N, 3) colour of surface points of the given shapes (rows of :attr:`info`)."""
        info = self.info[shape]
        kind, colour, phase = info[:, 0].long(), info[:, 1:4], info[:, 4]
        out = colour.clone()
        ground = kind == GROUND
        if ground.any():
            out[ground] = ground_albedo(points[ground])
        building = kind == BUILDING
        if building.any():
            p, n, ph = points[building], normal[building], phase[building]
            u = torch.remainder(p[:, 0] + ph, 2.5) / 2.5
            v = torch.remainder(p[:, 2], 3.0) / 3.0
            front = n[:, 1] * p[:, 1] < -0.5  # faces the street: its normal points to the centre line
            window = front & (u > 0.25) & (u < 0.75) & (v > 0.35) & (v < 0.8) & (p[:, 2] > 1.0)
            door = front & (u > 0.3) & (u < 0.7) & (p[:, 2] < 2.1) & (torch.remainder(p[:, 0] + ph, 7.5) < 2.5)
            wall = out[building]
            wall = torch.where(window[:, None], torch.tensor([0.15, 0.2, 0.3]), wall)
            out[building] = torch.where(door[:, None], colour[building] * 0.4, wall)
        pole = kind == POLE
        if pole.any():
            out[pole] = sdf.stripes(points[pole], [0.55, 0.55, 0.58], [0.35, 0.35, 0.38], 1.0)
        crown = kind == CROWN
        if crown.any():
            out[crown] = sdf.checker(points[crown], [0.2, 0.45, 0.15], [0.3, 0.55, 0.2], 0.4)
        return out


def direction_order(dirs: torch.Tensor, cells: int = 512) -> torch.Tensor:
    """A permutation of unit directions (M, 3) that keeps nearby directions together: Z-order of
    their (azimuth, elevation) cells, so consecutive runs make narrow bundles."""
    az = torch.atan2(dirs[:, 1], dirs[:, 0])
    el = torch.asin(dirs[:, 2].clamp(-1.0, 1.0))
    i = ((az + math.pi) / (2 * math.pi) * cells).long().clamp(0, cells - 1)
    j = ((el + math.pi / 2) / math.pi * cells).long().clamp(0, cells - 1)
    key = torch.zeros_like(i)
    for bit in range(int(math.log2(cells))):
        key |= ((i >> bit) & 1) << (2 * bit) | ((j >> bit) & 1) << (2 * bit + 1)
    return torch.argsort(key, stable=True)


def ground_albedo(p):
    road = sdf.checker(p, [0.3, 0.3, 0.32], [0.26, 0.26, 0.28], 0.7)
    marking = (p[:, 1].abs() < 0.1) & (torch.remainder(p[:, 0], 6.0) < 3.0)
    road = torch.where(marking[:, None], torch.tensor([0.9, 0.9, 0.85]), road)
    pavement = sdf.checker(p, [0.62, 0.6, 0.55], [0.5, 0.48, 0.45], 1.0)
    return torch.where((p[:, 1].abs() >= ROAD_HALF)[:, None], pavement, road)


def exact_occupancy(street: Street, points_world) -> np.ndarray:
    """True where world points (..., 3) lie inside a shape of the street (or below the road)."""
    points = np.asarray(points_world, dtype=np.float32)
    with torch.no_grad():
        d = Geometry(street).distance(torch.from_numpy(points.reshape(-1, 3)))
    return (d <= 0).numpy().reshape(points.shape[:-1])


def street_path(root: Path, sequence: str) -> Path:
    return Path(root) / "ground_truth" / sequence / "street.json"


def save_street(root: Path, sequence: str, street: Street) -> Path:
    path = street_path(root, sequence)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, json.dumps(asdict(street)))


def load_street(root: Path, sequence: str) -> Street:
    """The street of a generated sequence (``ground_truth/<seq>/street.json``, plain JSON)."""
    path = street_path(root, sequence)
    if not path.is_file():
        raise InputError(path, "street description not found (only generated sequences have one)")
    try:
        return Street(**json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise InputError(path, f"unreadable street description: {e}") from None


# --- rendering ---------------------------------------------------------------------------

def sky(dirs):
    up = dirs[:, 2:3].clamp(0, 1) ** 0.5
    return torch.tensor([0.85, 0.88, 0.92]) * (1 - up) + torch.tensor([0.45, 0.62, 0.88]) * up


@torch.no_grad()
def render(geometry: Geometry, c2w: np.ndarray, local_dirs: torch.Tensor, valid: torch.Tensor | None = None):
    """Colour and z-depth of rays given as unit OpenCV-frame directions (H, W, 3) of a camera at
    ``c2w`` (OpenCV, (4, 4)): (rgb (H, W, 3), depth (H, W), 0 for sky). Lambert + ambient under
    the object scenes' light (:mod:`tracer`)."""
    h, w = local_dirs.shape[:2]
    rot = torch.as_tensor(c2w[:3, :3], dtype=torch.float32)
    dirs = local_dirs.reshape(-1, 3).float() @ rot.T
    origins = torch.as_tensor(c2w[:3, 3], dtype=torch.float32).expand_as(dirs).contiguous()
    t, hit, shape, normal = geometry.intersect(origins, dirs, MAX_RANGE)
    rgb = sky(dirs)
    if hit.any():
        points = origins[hit] + t[hit, None] * dirs[hit]
        base = geometry.albedo(points, shape[hit], normal[hit])
        light = (normal[hit] @ LIGHT_DIR).clamp(min=0)
        rgb[hit] = (base * (AMBIENT + (1 - AMBIENT) * light[:, None])).clamp(0, 1)
    depth = torch.where(hit, t * local_dirs.reshape(-1, 3)[:, 2].float(), torch.zeros_like(t))
    if valid is not None:
        rgb[~valid.reshape(-1)] = 0.0
        depth[~valid.reshape(-1)] = 0.0
    return rgb.reshape(h, w, 3), depth.reshape(h, w)


def pinhole_dirs(k: np.ndarray, width: int, height: int) -> torch.Tensor:
    """Unit OpenCV directions (H, W, 3) through the pixel centres (i, j) of intrinsics ``k``."""
    j, i = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    d = torch.stack([(i - k[0, 2]) / k[0, 0], (j - k[1, 2]) / k[1, 1], torch.ones_like(i)], -1)
    return (d / d.norm(dim=-1, keepdim=True)).float()


def mei_dirs(cam: MeiCamera) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit OpenCV directions (H, W, 3) of a fisheye's pixels and where the model is one-to-one."""
    j, i = torch.meshgrid(torch.arange(cam.height, dtype=torch.float64),
                          torch.arange(cam.width, dtype=torch.float64), indexing="ij")
    xd, yd = (i - cam.u0) / cam.gamma1, (j - cam.v0) / cam.gamma2
    params = torch.tensor(cam.distortion, dtype=torch.float64)
    dirs = lens.undistort("mei", params, xd, yd)
    # Beyond the mirror's rim the lift has no solution: the corners of the image stay black.
    back_x, back_y = lens.distort_directions("mei", params, dirs)
    valid = ((back_x - xd).abs() < 1e-6) & ((back_y - yd).abs() < 1e-6) & torch.isfinite(dirs).all(-1)
    return torch.nan_to_num(dirs).float(), valid


# --- the rig ----------------------------------------------------------------------------

def rotation(axis: str, degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def transform(rot: np.ndarray, trans) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, trans
    return out


# OpenCV camera axes in the vehicle frame (x forward, y left, z up), as columns.
FORWARD = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=np.float64)
LEFT = np.array([[-1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float64)
RIGHT = np.array([[1, 0, 0], [0, 0, -1], [0, -1, 0]], dtype=np.float64)


@dataclass(frozen=True)
class Rig:
    """Where the sensors sit on the vehicle: rectified cameras, fisheyes and LiDAR -> vehicle."""

    rect_to_pose: dict  # image_00/01 -> (4, 4), the cameras whose images are written
    fisheye_to_pose: dict  # image_02/03 -> (4, 4)
    velo_to_pose: np.ndarray
    r_rect: dict  # image_00/01 -> (3, 3), deliberately larger turns than KITTI-360's so that a
    # reader that applies them the wrong way round lands pixels far from where they were rendered


def default_rig() -> Rig:
    # Pitched down by CAMERA_PITCH, as KITTI-360's camera: the occupancy evaluator levels its slab by that angle.
    rect00 = transform(FORWARD @ rotation("x", -CAMERA_PITCH), [1.2, 0.3, 1.5 - IMU_HEIGHT])
    rect01 = rect00 @ transform(np.eye(3), [BASELINE, 0.0, 0.0])
    fish02 = transform(LEFT @ rotation("x", -12.0), [0.8, 0.9, 1.4 - IMU_HEIGHT])
    fish03 = transform(RIGHT @ rotation("x", -12.0), [0.8, -0.9, 1.4 - IMU_HEIGHT])
    velo = transform(rotation("z", 0.7), [0.8, 0.0, 1.73 - IMU_HEIGHT])
    r_rect = {"image_00": rotation("x", 2.0) @ rotation("y", -3.0) @ rotation("z", 1.0),
              "image_01": rotation("x", -1.5) @ rotation("y", 2.5) @ rotation("z", -0.5)}
    return Rig({"image_00": rect00, "image_01": rect01}, {"image_02": fish02, "image_03": fish03}, velo, r_rect)


def calibration(rig: Rig, width: int, height: int, fisheye_size: int) -> Calibration:
    """The calibration files that describe ``rig`` (unrectified cameras: rectified ones turned back)."""
    fx = PERSPECTIVE_FOCAL * width
    k = np.array([[fx, 0, (width - 1) / 2 + 0.25], [0, fx, 0.55 * (height - 1)], [0, 0, 1]])
    p_rect = {"image_00": np.hstack([k, np.zeros((3, 1))]),
              "image_01": np.hstack([k, np.array([[-fx * BASELINE], [0], [0]])])}
    cam_to_pose = {cam: rig.rect_to_pose[cam] @ transform(rig.r_rect[cam], [0, 0, 0]) for cam in kitti360.PERSPECTIVE}
    cam_to_pose.update(rig.fisheye_to_pose)
    cam_to_velo = np.linalg.inv(rig.velo_to_pose) @ cam_to_pose["image_00"]
    s = fisheye_size
    fish = {cam: MeiCamera(cam, s, s, gamma1=MEI_FOCAL * s, gamma2=MEI_FOCAL * s * 0.9996,
                           u0=0.512 * (s - 1), v0=0.504 * (s - 1), **MEI) for cam in kitti360.FISHEYES}
    return Calibration(p_rect, dict(rig.r_rect), (width, height), cam_to_pose, cam_to_velo, fish)


def vehicle_poses(n_frames: int, start_x: float, speed: float, phase: float) -> list[np.ndarray]:
    """Vehicle -> world along the right lane, weaving gently (the heading follows the path)."""
    poses = []
    for f in range(n_frames):
        x = start_x + speed * f
        y = LANE_Y + 0.4 * math.sin(2 * math.pi * f / 45.0 + phase)
        slope = 0.4 * 2 * math.pi / 45.0 * math.cos(2 * math.pi * f / 45.0 + phase) / speed
        poses.append(transform(rotation("z", math.degrees(math.atan(slope))), [x, y, IMU_HEIGHT]))
    return poses


def lidar_dirs(azimuth_steps: int, beams: int = 64) -> torch.Tensor:
    """Unit directions (beams * steps, 3) of one sweep in the velodyne frame (x forward, z up)."""
    el = torch.deg2rad(torch.linspace(*LIDAR_ELEVATION, beams, dtype=torch.float64))
    az = torch.arange(azimuth_steps, dtype=torch.float64) * (2 * math.pi / azimuth_steps)
    el, az = torch.meshgrid(el, az, indexing="ij")
    return torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], -1).reshape(-1, 3).float()


@torch.no_grad()
def lidar_sweep(geometry: Geometry, velo_to_world: np.ndarray, dirs: torch.Tensor) -> np.ndarray:
    """(N, 4) float32 returns (x, y, z in the velodyne frame, reflectance) of rays that hit in range."""
    rot = torch.as_tensor(velo_to_world[:3, :3], dtype=torch.float32)
    world_dirs = dirs @ rot.T
    origins = torch.as_tensor(velo_to_world[:3, 3], dtype=torch.float32).expand_as(dirs).contiguous()
    t, hit, shape, normal = geometry.intersect(origins, world_dirs, LIDAR_RANGE[1])
    keep = hit & (t > LIDAR_RANGE[0])
    points = origins[keep] + t[keep, None] * world_dirs[keep]
    reflectance = geometry.albedo(points, shape[keep], normal[keep]).mean(-1)
    return torch.cat([t[keep, None] * dirs[keep], reflectance[:, None]], -1).numpy().astype(np.float32)


# --- writing a dataset -----------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    width: int = 192
    height: int = 64
    fisheye_size: int = 64
    n_frames: int = 40
    train_sequences: int = 3
    test_sequences: int = 2  # two streets: one street's few frames made each score noisy (v2 had 1, stride 5)
    lidar_azimuth_steps: int = 256
    speed: float = 1.0  # metres per frame (KITTI-360: about 1 m at 10 Hz in town)
    no_pose: tuple = (5,)  # frame indices written without a pose line (KITTI-360 has such gaps)
    test_stride: int = 2  # test split: every n-th posed frame with a posed successor and test_sweeps frames ahead
    test_sweeps: int = 20  # BTS's LiDAR occupancy uses 20 sweeps from the input frame on
    fisheyes: bool = True
    seed: int = 0


def sequence_name(index: int) -> str:
    return f"2000_01_01_drive_{index:04d}_sync"


def write_sequence(root: Path, sequence: str, seed: int, options: Options, calib: Calibration, rig: Rig,
                   progress: bool = False) -> list[int]:
    """Render one sequence into ``root``; returns the frames that have a pose."""
    length = options.n_frames * options.speed + 70.0
    street = make_street(seed, length)
    geometry = Geometry(street)
    save_street(root, sequence, street)
    poses = vehicle_poses(options.n_frames, 20.0, options.speed, phase=seed * 0.7)
    persp = pinhole_dirs(calib.intrinsics("image_00"), options.width, options.height)
    fish = {cam: mei_dirs(calib.fisheyes[cam]) for cam in kitti360.FISHEYES} if options.fisheyes else {}
    beams = lidar_dirs(options.lidar_azimuth_steps)
    with one_thread(), Counter(f"kitti {sequence}", options.n_frames, enabled=progress, unit="frame") as bar:
        for frame, pose in enumerate(poses):
            for cam in kitti360.PERSPECTIVE:
                rgb, _ = render(geometry, pose @ rig.rect_to_pose[cam], persp)
                kitti360.write_image(root, sequence, cam, frame, rgb.numpy())
            for cam, (dirs, valid) in fish.items():
                rgb, _ = render(geometry, pose @ rig.fisheye_to_pose[cam], dirs, valid)
                kitti360.write_image(root, sequence, cam, frame, rgb.numpy())
            path = root / kitti360.velodyne_name(sequence, frame)
            path.parent.mkdir(parents=True, exist_ok=True)
            kitti360.write_velodyne(path, lidar_sweep(geometry, pose @ rig.velo_to_pose, beams))
            bar.update(1)
    posed = {f: p for f, p in enumerate(poses) if f not in options.no_pose}
    path = root / kitti360.poses_name(sequence)
    path.parent.mkdir(parents=True, exist_ok=True)
    kitti360.write_poses(path, posed)
    return sorted(posed)


def write_dataset(root, options: Options = Options(), progress: bool = True) -> Path:
    """A KITTI-360-style dataset of ``train_sequences`` + ``test_sequences`` streets, with split
    files ``splits/train_files.txt`` (both sides of every posed frame with a posed successor) and
    ``splits/test_files.txt`` (side l, every ``test_stride``-th posed frame with a posed successor and
    ``test_sweeps`` sweeps from it on)."""
    root = Path(root)
    rig = default_rig()
    calib = calibration(rig, options.width, options.height, options.fisheye_size)
    kitti360.write_calibration(root, calib if options.fisheyes else Calibration(
        calib.p_rect, calib.r_rect, calib.size, calib.cam_to_pose, calib.cam_to_velo, {}))
    train, test = [], []
    for index in range(options.train_sequences + options.test_sequences):
        name = sequence_name(index)
        posed = write_sequence(root, name, options.seed * 1000 + index, options, calib, rig, progress)
        if index < options.train_sequences:
            train += [(name, f, side) for f in posed if f + 1 in posed for side in ("l", "r")]
        else:
            ahead = [f for f in posed if f + 1 in posed and f + options.test_sweeps <= options.n_frames]
            test += [(name, f, "l") for f in ahead[:: options.test_stride]]
    (root / "splits").mkdir(exist_ok=True)
    kitti360.write_split(root / "splits" / "train_files.txt", train)
    kitti360.write_split(root / "splits" / "test_files.txt", test)
    return root


def default_kitti_dir(progress: bool = True) -> Path:
    """The bundled driving set (:class:`Options` defaults), generated once into the cache folder."""
    return build_once(cache_root() / f"kitti360-v{KITTI_GENERATOR_VERSION}",
                      lambda tmp: write_dataset(tmp, progress=progress))
