import numpy as np
import pytest
import torch

from fieldkd.platform.evaluate import extract_mesh, load_mesh, mesh_metrics, sample_surface

BOX = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
RES = 48
VOXEL = 2.0 / (RES - 1)


def sphere_sdf(radius, centre=(0.0, 0.0, 0.0)):
    c = torch.tensor(centre)
    return lambda x: (x - c).norm(dim=-1) - radius


@pytest.fixture(scope="module")
def sphere():
    return extract_mesh(sphere_sdf(0.5), BOX, resolution=RES, sdf=True)


@pytest.fixture(scope="module")
def bigger_sphere():
    return extract_mesh(sphere_sdf(0.55), BOX, resolution=RES, sdf=True)


def test_sdf_sphere_vertices_on_surface(sphere):
    verts, faces = sphere
    assert verts.dtype == np.float32 and faces.dtype == np.int64
    assert verts.shape[1] == 3 and faces.shape[1] == 3 and len(faces) > 100
    assert np.allclose(np.linalg.norm(verts, axis=1), 0.5, atol=VOXEL)


def test_faces_point_outward(sphere):
    v, f = sphere
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    normals = np.cross(b - a, c - a)
    assert np.all(np.einsum("ij,ij->i", normals, a + b + c) > 0)


def test_density_ball():
    # Smoothed ball: 100 inside, 0 outside; the level-50 set is the r=0.5 sphere.
    def density(x):
        return 100 * torch.sigmoid((0.5 - x.norm(dim=-1)) * 40)

    verts, faces = extract_mesh(density, BOX, resolution=RES, level=50.0)
    assert np.allclose(np.linalg.norm(verts, axis=1), 0.5, atol=VOXEL)


def test_skipping_empty_cells_asks_the_field_less_and_keeps_the_mesh():
    """Points outside a mask (an occupancy grid's occupied cells) count as density 0 unasked: with the
    mask around the ball the mesh is the same, for a fraction of the field's points."""
    asked = []

    def density(x):
        asked.append(len(x))
        return 100 * torch.sigmoid((0.5 - x.norm(dim=-1)) * 40)

    full = extract_mesh(density, BOX, resolution=RES, level=50.0)
    everywhere = sum(asked)
    asked.clear()
    skipped = extract_mesh(density, BOX, resolution=RES, level=50.0, keep=lambda x: x.abs().max(dim=-1).values < 0.7)
    assert everywhere == RES**3 and sum(asked) < 0.4 * everywhere
    np.testing.assert_array_equal(skipped[0], full[0])
    np.testing.assert_array_equal(skipped[1], full[1])
    with pytest.raises(ValueError, match="SDF"):
        extract_mesh(sphere_sdf(0.5), BOX, resolution=RES, sdf=True, keep=lambda x: x[:, 0] > 0)


def test_off_centre_sphere_in_uneven_box_numpy_field():
    box = np.array([[-0.5, -0.8, -0.4], [0.9, 0.6, 1.0]])
    centre = np.array([0.2, -0.1, 0.3])

    def field(x):  # returns numpy, shape (N, 1)
        return (np.linalg.norm(x.numpy() - centre, axis=1) - 0.3)[:, None]

    verts, _ = extract_mesh(field, box, resolution=40, sdf=True, chunk=1000)
    assert np.allclose(np.linalg.norm(verts - centre, axis=1), 0.3, atol=1.5 / 39)


def test_chunk_size_does_not_change_result(sphere):
    verts, faces = extract_mesh(sphere_sdf(0.5), BOX, resolution=RES, sdf=True, chunk=777)
    assert np.array_equal(verts, sphere[0]) and np.array_equal(faces, sphere[1])


@pytest.mark.parametrize(
    "field, kwargs",
    [(sphere_sdf(3.0), {"sdf": True}), (lambda x: torch.zeros(len(x)), {"level": 10.0})],
)
def test_empty_mesh_raises(field, kwargs):
    with pytest.raises(ValueError, match="empty surface.*never crosses level"):
        extract_mesh(field, BOX, resolution=16, **kwargs)


def test_bad_aabb_raises():
    with pytest.raises(ValueError, match="aabb"):
        extract_mesh(sphere_sdf(0.5), np.array([[1.0, 0, 0], [0, 1, 1]]), resolution=8, sdf=True)


def test_sample_surface_on_triangle():
    verts = np.array([[0.0, 0, 0], [2, 0, 0], [0, 1, 0]])
    pts = sample_surface(verts, np.array([[0, 1, 2]]), 20000, seed=3)
    assert pts.shape == (20000, 3) and np.allclose(pts[:, 2], 0)
    x, y = pts[:, 0], pts[:, 1]
    assert np.all((x >= 0) & (y >= 0) & (x / 2 + y <= 1 + 1e-12))
    assert np.allclose(pts.mean(axis=0), verts.mean(axis=0), atol=0.02)  # uniform -> centroid
    assert np.array_equal(pts, sample_surface(verts, np.array([[0, 1, 2]]), 20000, seed=3))


def test_sample_surface_is_area_weighted():
    verts = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 0, 0], [8, 0, 0], [5, 2, 0]])
    pts = sample_surface(verts, np.array([[0, 1, 2], [3, 4, 5]]), 40000, seed=0)
    share_small = np.mean(pts[:, 0] < 2)  # areas 0.5 and 3
    assert share_small == pytest.approx(0.5 / 3.5, abs=0.01)


def test_sample_surface_on_sphere(sphere):
    pts = sample_surface(*sphere, 5000, seed=1)
    assert np.allclose(np.linalg.norm(pts, axis=1), 0.5, atol=VOXEL)


def test_sample_surface_rejects_empty():
    with pytest.raises(ValueError):
        sample_surface(np.zeros((3, 3)), np.zeros((0, 3), dtype=int), 10)
    with pytest.raises(ValueError, match="zero surface area"):
        sample_surface(np.zeros((3, 3)), np.array([[0, 1, 2]]), 10)


def test_mesh_against_itself(sphere):
    m = mesh_metrics(*sphere, *sphere, n_points=20000)
    assert m["chamfer"] == pytest.approx(0.0, abs=1e-9)
    assert m["fscore"] == 1.0 and m["precision"] == 1.0 and m["recall"] == 1.0


def test_spheres_5cm_apart(sphere, bigger_sphere):
    m = mesh_metrics(*sphere, *bigger_sphere, n_points=20000, threshold=0.05)
    assert m["chamfer"] == pytest.approx(0.05, rel=0.1)
    assert m["chamfer"] == pytest.approx((m["accuracy"] + m["completeness"]) / 2)
    assert mesh_metrics(*sphere, *bigger_sphere, n_points=20000, threshold=0.01)["fscore"] < 0.05
    assert mesh_metrics(*sphere, *bigger_sphere, n_points=20000, threshold=0.1)["fscore"] == 1.0


def test_fscore_formula(sphere):
    # Half the prediction missing: precision stays ~1, recall drops to about 1/2.
    v, f = sphere
    keep = f[np.all(v[f][:, :, 0] > 0, axis=1)]
    m = mesh_metrics(v, keep, *sphere, n_points=20000, threshold=0.02)
    p, r = m["precision"], m["recall"]
    assert p > 0.99 and r == pytest.approx(0.5, abs=0.05)
    assert m["fscore"] == pytest.approx(2 * p * r / (p + r))


def test_crop_and_point_cloud(sphere, bigger_sphere):
    crop = np.array([[0.0, -1, -1], [1, 1, 1]])
    m = mesh_metrics(*sphere, *bigger_sphere, n_points=20000, crop_aabb=crop)
    assert m["chamfer"] == pytest.approx(0.05, rel=0.1)
    gt_cloud = sample_surface(*bigger_sphere, 20000, seed=5)
    m = mesh_metrics(*sphere, gt_cloud, None, n_points=20000)
    assert m["chamfer"] == pytest.approx(0.05, rel=0.1)
    with pytest.raises(ValueError, match="crop_aabb"):
        mesh_metrics(*sphere, *sphere, n_points=1000, crop_aabb=np.array([[2.0, 2, 2], [3, 3, 3]]))


def test_load_mesh_round_trip(tmp_path, sphere):
    ply = pytest.importorskip("fieldkd.platform.scenes.ply")
    path = tmp_path / "sphere.ply"
    ply.write_ply(path, *sphere)
    verts, faces = load_mesh(path)
    assert verts.dtype == np.float32 and faces.dtype == np.int64
    assert np.allclose(verts, sphere[0]) and np.array_equal(faces, sphere[1])
