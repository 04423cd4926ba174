"""System metrics sampled into a run addressed by id, and stopped with it."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from fieldkd.platform.tracking import Run
from fieldkd.platform.tracking.system import SystemMetrics, parse_nvidia_smi


def sampler_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fieldkd-system-metrics")]


def test_cpu_and_memory_are_sampled_and_the_thread_ends_with_the_run(mlflow_uri):
    run = Run.start("system", "sampled")
    run.start_system_metrics(interval_s=0.2)
    assert sampler_threads()
    time.sleep(1.5)
    run.finish()

    assert sampler_threads() == []
    client = MlflowClient(mlflow_uri)
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.tags["fieldkd.system_metrics"].startswith("cpu,memory,disk,network,gpu:")
    cpu = client.get_metric_history(run.run_id, "system/cpu_utilization_percentage")
    memory = client.get_metric_history(run.run_id, "system/system_memory_usage_megabytes")
    percent = client.get_metric_history(run.run_id, "system/system_memory_usage_percentage")
    assert len(cpu) >= 4 and len(memory) == len(cpu) == len(percent)
    assert sorted(m.step for m in cpu) == list(range(len(cpu)))
    assert all(0.0 <= m.value <= 100.0 for m in cpu + percent)
    assert all(m.value > 0 for m in memory)
    assert any(m.value > 0 for m in cpu)  # a real reading, not psutil's first zero
    gpu = [k for k in stored.data.metrics if k.startswith("system/gpu_")]
    if shutil.which("nvidia-smi"):
        assert "system/gpu_0_memory_usage_megabytes" in gpu
    else:
        assert gpu == [] and stored.data.tags["fieldkd.system_metrics"].startswith(
            "cpu,memory,disk,network,gpu:none")


def test_a_resumed_run_continues_the_steps_and_node_ids_keep_processes_apart(mlflow_uri):
    run = Run.start("system", "resumed")
    run.start_system_metrics(interval_s=10.0)  # stopped before the first interval:
    run.finish()                                 # one sample, taken at stop
    resumed = Run.resume(run.run_id)
    resumed.start_system_metrics(interval_s=10.0)
    again = resumed.start_system_metrics(interval_s=10.0)  # already running: the same sampler
    worker = Run(run.run_id).start_system_metrics(interval_s=10.0, node_id="rank_1")
    assert len(sampler_threads()) == 2 and again is resumed._system
    worker.stop()
    resumed.finish()

    client = MlflowClient(mlflow_uri)
    steps = [m.step for m in client.get_metric_history(run.run_id, "system/cpu_utilization_percentage")]
    assert sorted(steps) == [0, 1]
    assert [m.step for m in client.get_metric_history(
        run.run_id, "system/rank_1/system_memory_usage_megabytes")] == [0]
    assert sampler_threads() == []


def test_a_sampler_that_cannot_write_gives_up_and_ends():
    def refuse(metrics, step):
        raise RuntimeError("store is gone")

    sampler = SystemMetrics(refuse, interval_s=0.05, gpu=False, max_failures=3).start()
    deadline = time.time() + 10
    while sampler.running and time.time() < deadline:
        time.sleep(0.05)
    assert not sampler.running and sampler.failures == 3 and sampler.samples == 0


def test_nvidia_smi_output_is_read_with_mlflow_names():
    text = "0, 87, 40536, 81559, 312.45, 700.00\n1, 0, 3, 81559, [N/A], [N/A]\n"
    metrics = parse_nvidia_smi(text)
    assert metrics["gpu_0_utilization_percentage"] == 87.0
    assert metrics["gpu_0_memory_usage_megabytes"] == pytest.approx(40536 * 1.048576)
    assert metrics["gpu_0_memory_usage_percentage"] == pytest.approx(49.7)
    assert metrics["gpu_0_power_usage_watts"] == pytest.approx(312.45)
    assert metrics["gpu_0_power_usage_percentage"] == pytest.approx(312.45 / 7)
    assert "gpu_1_power_usage_watts" not in metrics and metrics["gpu_1_utilization_percentage"] == 0.0
    assert parse_nvidia_smi("") == {}


def test_the_interval_must_be_positive():
    with pytest.raises(ValueError):
        SystemMetrics(lambda m, s: None, interval_s=0, gpu=False)
