"""Shared fixtures: tiny generated scenes in the real on-disk formats."""

from __future__ import annotations

import pytest

from fieldkd.platform.scenes import write_scene

TINY = dict(width=24, height=24, n_train=8, n_val=2, n_test=2)


@pytest.fixture(scope="session")
def tiny_blender(tmp_path_factory):
    return write_scene("default", tmp_path_factory.mktemp("scenes") / "tiny_blender", "blender", **TINY)


@pytest.fixture(scope="session")
def tiny_nerfstudio(tmp_path_factory):
    return write_scene("default", tmp_path_factory.mktemp("scenes") / "tiny_ns", "nerfstudio", **TINY)


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def tiny_run_overrides(scene_dir, output_dir, steps=60):
    """A training that takes seconds: tiny scene, few samples, no extras."""
    return ["scene=blender", f"scene.path={scene_dir}", f"trainer.steps={steps}", "trainer.eval_every=0",
            "trainer.log_every=10", "trainer.checkpoint_every=10", "trainer.batch_rays=256",
            "field.log2_hashmap_size=12", "render.samples_per_ray=32", "eval.max_views=1", "eval.lpips=false",
            "eval.log_images=1", f"output_dir={output_dir}"]


@pytest.fixture
def local_ray():
    """A real local Ray with this machine's two cores (started as fieldkd starts one), shut down afterwards."""
    import ray

    from fieldkd.platform.compute.session import start_local

    ray.shutdown()
    start_local(num_cpus=2, namespace="fieldkd-tests")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def module_ray():
    """One real local Ray for every test of a module that asks for it: each start costs seconds on
    two busy cores. Stages are told their MLflow store explicitly, so tests keep their own stores."""
    import ray

    from fieldkd.platform.compute.session import start_local

    ray.shutdown()
    start_local(num_cpus=2, namespace="fieldkd-tests")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine two threads
    spinning against other processes make small steps many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
