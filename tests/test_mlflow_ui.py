"""What a researcher sees in MLflow's web UI, checked in a real browser.

A real ``mlflow server`` on 127.0.0.1 (started here) records a tiny baseline and a tiny pvd run
(whose teacher is that baseline);
headless Chromium, driven over its DevTools protocol (tests/cdp.py), opens the runs table, a run's
charts and its image grid, and the test asserts what is on the page. Screenshots are kept under
pytest's temporary folder (the path is printed) for a person to look at.

Chromium comes from the system's packages (Debian: ``apt-get install chromium``); without it the
test is skipped, saying so.
"""

from __future__ import annotations

import json
import re

import pytest
from mlflow.tracking import MlflowClient

from cdp import Browser, find_chromium
from conftest import tiny_run_overrides
from fieldkd.platform.tracking.ui import experiment_url, run_url
from test_tracking_server import Server

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                                         "(Debian: apt-get install chromium)")


def tiny(scene, out, *extra):
    return tiny_run_overrides(scene, out, steps=30) + [
        "trainer.eval_every=10", "tracking.system_metrics_s=0", "trainer.progress=false",
        "render.samples_per_ray=16", "eval.max_views=2", "eval.log_images=2", *extra]


@pytest.fixture(scope="module")
def recorded(tiny_blender, tmp_path_factory):
    """The server, and the runs of a baseline and a pvd pipeline recorded through it."""
    import os

    import ray

    from fieldkd.methods import baseline, pvd
    from fieldkd.platform.cli import compose_config
    from fieldkd.platform.runner import execute

    root = tmp_path_factory.mktemp("mlflow_ui")
    server = Server(root)
    server.start()
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = server.url  # before Ray starts: its workers write there too
    try:
        ray.shutdown()
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
                 namespace="fieldkd-tests")
        out = root / "out"
        base_id, _ = execute(compose_config(tiny(tiny_blender, out)), baseline.run)
        # The baseline is the pvd's teacher: scored again, not trained again.
        pvd_id, _ = execute(compose_config(tiny(tiny_blender, out, "method=pvd", "teacher.field=hash",
                                                f"teacher.run_id={base_id}", "student.field=grid")), pvd.run)
        yield server, {"baseline": base_id, "pvd": pvd_id}, root
    finally:
        ray.shutdown()
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
        server.stop()


@pytest.fixture
def browser(tmp_path):
    found = Browser(CHROMIUM, tmp_path / "profile", width=1800, height=2400)
    yield found
    found.close()


# Charts and images render only once they are scrolled into view: each poll scrolls every scrollable
# element a little further and keeps what the page has shown so far (its text, its loaded images, the
# most charts drawn at once: the page unmounts charts scrolled out of view, so a later count can be 0).
SEEN = """(() => {
  document.querySelectorAll('*').forEach(e => { if (e.scrollHeight > e.clientHeight + 5) e.scrollTop += 500; });
  window.__charts = Math.max(window.__charts || 0,
                             document.querySelectorAll('.js-plotly-plot, svg.main-svg').length);
  window.__text = (window.__text || '') + '\\n' + document.body.innerText + '\\n' + document.body.textContent;
  window.__images = window.__images || [];
  for (const i of document.images) {
    if (i.complete && i.naturalWidth > 0 && i.src.includes('get-artifact') && !window.__images.includes(i.src))
      window.__images.push(i.src);
  }
  return true;
})()"""


def shown(browser: Browser, url: str, *texts: str, timeout_s: float = 120.0) -> str:
    """Open ``url`` and wait until the page has shown every one of ``texts``; all the text it showed."""
    browser.open(url)
    browser.wait_for("document.readyState === 'complete'", 30)
    browser.evaluate("window.__text = ''; window.__images = []; window.__charts = 0")
    wanted = " && ".join(f"window.__text.includes({json.dumps(t)})" for t in texts)
    found = browser.wait_for(f"{SEEN} && ({wanted})", timeout_s)
    seen = browser.evaluate("window.__text") or ""
    assert found, f"{url} never showed {texts}; it shows:\n{browser.text()[:3000]}"
    return seen


def drawn_charts(browser: Browser) -> int:
    """The most charts the page has drawn at once so far (scrolling on until one is there)."""
    return browser.wait_for(f"{SEEN} && window.__charts", 60) or 0


def loaded_images(browser: Browser) -> list[str]:
    """The artifact images the page has loaded so far (scrolling on until one is there)."""
    return browser.wait_for(f"{SEEN} && window.__images.length ? window.__images : null", 60) or []


def child(client: MlflowClient, parent, stage: str):
    found = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' "
                                                            f"and tags.`fieldkd.stage` = '{stage}'")
    assert len(found) == 1, stage
    return found[0]


def test_the_runs_table_shows_run_names_and_test_psnr(recorded, browser, tmp_path):
    server, runs, _ = recorded
    client = MlflowClient(server.url)
    base, pvd = client.get_run(runs["baseline"]), client.get_run(runs["pvd"])
    text = shown(browser, experiment_url(server.url, base.info.experiment_id),
                 base.info.run_name, pvd.info.run_name, "test/psnr")
    print("screenshots:", browser.screenshot(tmp_path / "runs_table.png").parent)
    assert base.info.run_name.startswith("baseline hash ") and pvd.info.run_name.startswith("pvd hash→grid ")
    assert "Token Usage" not in text and "matching run" in text  # the model-training view, not GenAI's
    assert repr(base.data.metrics["test/psnr"]) in text  # the column holds the run's own number
    assert repr(pvd.data.metrics["test/psnr"]) in text


def test_the_experiment_tag_and_saved_views_are_there(recorded):
    server, runs, _ = recorded
    client = MlflowClient(server.url)
    tags = client.get_experiment(client.get_run(runs["baseline"]).info.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert json.loads(tags["mlflow.sharedViewState.fieldkd"])["name"] == "fieldkd results"


def test_a_run_page_shows_its_charts_and_image_grid(recorded, browser, tmp_path):
    server, runs, _ = recorded
    client = MlflowClient(server.url)
    base = client.get_run(runs["baseline"])
    url = run_url(server.url, base.info.experiment_id, base.info.run_id, "model-metrics")
    # Charts come in sections by prefix ("test": psnr, ssim and the image grid "test/view_000")
    text = shown(browser, url, base.info.run_name, "(test/psnr)", "test/view_000")
    assert re.search(r"\nval\n\(\d+\)\n", text) and re.search(r"\ntrain\n\(\d+\)\n", text)
    charts = drawn_charts(browser)
    images = loaded_images(browser)
    browser.screenshot(tmp_path / "baseline_charts.png")
    assert charts > 0
    assert any("test~view_000" in src and "step%2B30" in src for src in images), images


def test_a_pvd_student_has_its_renders_and_the_parent_its_summary_at_the_last_step(recorded, browser, tmp_path):
    server, runs, _ = recorded
    client = MlflowClient(server.url)
    pvd = client.get_run(runs["pvd"])
    student = child(client, pvd, "student")
    url = run_url(server.url, pvd.info.experiment_id, student.info.run_id, "model-metrics")
    shown(browser, url, student.info.run_name, "(test/psnr)", "test/view_000")
    images = loaded_images(browser)
    browser.screenshot(tmp_path / "pvd_student_charts.png")
    assert any("test~view_000" in src for src in images), images
    last = max(m.step for m in client.get_metric_history(student.info.run_id, "train/loss"))
    summary = client.get_metric_history(pvd.info.run_id, "student/test/psnr")
    assert [m.step for m in summary] == [last]  # drawn where the training curves end, not at step 0


def test_curves_against_time_since_each_run_started(recorded, browser, tmp_path):
    server, runs, _ = recorded
    client = MlflowClient(server.url)
    base = client.get_run(runs["baseline"])
    text = shown(browser, experiment_url(server.url, base.info.experiment_id, charts_by_time=True),
                 "Relative Time", "val/psnr")
    browser.screenshot(tmp_path / "charts_by_time.png")
    assert "Relative Time" in text
    assert len(client.get_metric_history(base.info.run_id, "val/psnr")) >= 2  # every 10 steps, or 5 s
