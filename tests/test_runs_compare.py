"""``fieldkd runs compare``: runs and their children side by side, as markdown and as curves."""

import json

from PIL import Image

from fieldkd.platform.cli import main
from fieldkd.platform.tracking import Run


def record(name, lr, psnrs, parent=None, test_psnr=None):
    run = Run.start("compare", name, parent=parent)
    run.log_params({"trainer.lr": str(lr), "field.name": "hash"})
    for step, value in enumerate(psnrs, start=1):
        run.log_metrics({"val/psnr": value}, step * 10)
    if test_psnr is not None:
        run.log_metrics({"test/psnr": test_psnr}, 10 * len(psnrs))
    run.finish()
    return run


def test_compare_writes_a_table_and_curves_of_runs_and_their_children(mlflow_uri, tmp_path, capsys):
    first = record("baseline a", 0.01, [12.0, 15.0, 17.5], test_psnr=17.25)
    second = record("pvd b", 0.003, [], test_psnr=19.5)
    stage = record("student", 0.003, [11.0, 18.0], parent=second.run_id, test_psnr=19.5)

    code = main(["runs", "compare", first.run_id, second.run_id, f"out={tmp_path}"])
    captured = capsys.readouterr()
    assert code == 0
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["runs"] == [first.run_id, second.run_id, stage.run_id]  # the child comes with its parent

    table = (tmp_path / "compare.md").read_text()
    lines = table.strip().splitlines()
    assert lines[0].startswith("| run | name | status | test/psnr | val/psnr |")
    assert "trainer.lr" in lines[0] and "field.name" not in lines[0]  # only params that differ
    assert f"| {first.run_id[:8]} | baseline a | FINISHED | 17.25 | 17.5 | 0.01 |" in table
    assert f"| {stage.run_id[:8]} | └ student | FINISHED | 19.5 | 18 | 0.003 |" in table
    assert table in captured.err  # printed too, on stderr: stdout is the summary line

    figure = Image.open(tmp_path / "compare.png")
    assert figure.size[0] > 800 and figure.size[1] > 300


def test_an_unknown_run_is_one_line_and_exit_code_2(mlflow_uri, tmp_path, capsys):
    assert main(["runs", "compare", "0123456789abcdef", f"out={tmp_path}"]) == 2
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fieldkd")]
    assert ours == [f"fieldkd: error: 0123456789abcdef: no such run in {mlflow_uri}"]
