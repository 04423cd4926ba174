"""Two Ray nodes on this machine: parallel trainings land on both, artifacts reach shared storage."""

from pathlib import Path

import pytest
import ray
from conftest import tiny_run_overrides
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from fieldkd.platform.cli import compose_config
from fieldkd.platform.runner import execute
from fieldkd.platform.stages import run_stages


def two_trainings(ctx):
    """A two-stage pipeline: each stage is a child run, trained concurrently."""
    requests = [ctx.request(name, run=ctx.run.child(name, ctx.tags(stage=name))) for name in ("left", "right")]
    outcomes = run_stages(ctx, requests)
    return {f"{name}/test/psnr": o.metrics["test/psnr"] for name, o in outcomes.items()}


@pytest.fixture
def two_node_cluster():
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, configure_logging=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_trainings_spread_over_both_nodes_and_share_storage(two_node_cluster, tiny_blender, tmp_path, mlflow_uri):
    shared = tmp_path / "shared"  # stands for the cluster's shared or cloud storage
    cfg = compose_config(tiny_run_overrides(tiny_blender, shared, 40) + ["compute.cpus_per_training=1"])
    seen_nodes = {}

    def method(ctx):
        metrics = two_trainings(ctx)
        client = MlflowClient(mlflow_uri)
        for child in client.search_runs([ctx.run.info.experiment_id],
                                        f"tags.mlflow.parentRunId = '{ctx.run.run_id}'"):
            seen_nodes[child.info.run_name] = child.data.tags.get("fieldkd.node")
        return metrics

    run_id, metrics = execute(cfg, method)

    assert set(metrics) == {"left/test/psnr", "right/test/psnr"}
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    assert set(seen_nodes.values()) == nodes  # one training on each node
    for stage in ("left", "right"):
        assert (shared / run_id / stage / "last.pt").is_file()
    client = MlflowClient(mlflow_uri)
    children = client.search_runs([client.get_run(run_id).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == 2
    for child in children:
        artifacts = [a.path for a in client.list_artifacts(child.info.run_id, "checkpoints")]
        assert artifacts == ["checkpoints/last.pt"]
        local = Path(client.get_run(child.info.run_id).info.artifact_uri.removeprefix("file://"))
        assert (local / "checkpoints" / "last.pt").is_file()
