"""The sweep report: a table and a plot written from a real local sweep, and read back."""

from __future__ import annotations

import csv
import json

from PIL import Image

from conftest import run_cli


def test_sweep_report_table_and_plot_match(tmp_path):
    sweep = tmp_path / "multirun"
    run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
            "method.beta=0.1,0.5", "method.loss_type=sigmoid,hinge", "method.max_steps=8", cwd=tmp_path)
    # Written at the end of the multirun; the command writes it again on demand.
    assert (sweep / "report.png").is_file()
    (sweep / "report.png").unlink()
    out = run_cli("rlhf.report", str(sweep), cwd=tmp_path).stdout
    assert "report.png" in out
    with open(sweep / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and {r["status"] for r in table} == {"finished"}
    # In job order, each row naming its job's dir (<number>_<overrides>).
    assert [r["job"] for r in table] == ["0", "1", "2", "3"]
    assert [r["dir"] for r in table] == [
        f"{n}_method.beta={beta},method.loss_type={loss},method.max_steps=8"
        for n, (beta, loss) in enumerate([("0.1", "sigmoid"), ("0.1", "hinge"), ("0.5", "sigmoid"), ("0.5", "hinge")])]
    assert all((sweep / r["dir"] / "SUCCESS").is_file() for r in table)
    assert set(table[0]) >= {"method.beta", "method.loss_type", "eval_rewards/accuracies", "seconds"}
    image = Image.open(sweep / "report.png")
    assert image.size == (700, 450)
    plotted = json.loads(image.text["rlhf:plotted"])
    assert plotted["metric"] == "eval_rewards/accuracies" and plotted["x"] == "method.beta"
    drawn = {(line["label"], x, y) for line in plotted["lines"] for x, y in zip(line["x"], line["y"])}
    expected = {(f"method.loss_type={r['method.loss_type']}", float(r["method.beta"]),
                 float(r["eval_rewards/accuracies"])) for r in table}
    assert drawn == expected
    markdown = (sweep / "report.md").read_text()
    assert "4 jobs: 4 finished" in markdown and "| method.beta |" in markdown


def test_report_lists_a_failed_job_with_its_error(tmp_path):
    import shutil

    from rlhf.assets import asset_path

    shutil.copy(asset_path("data/topics_pairs.train.jsonl"), tmp_path / "good.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"question": "q", "chosen": "a", "rejected": "b"}\n{"question": \n')
    sweep = tmp_path / "multirun"
    proc = run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
                   f"dataset.path={tmp_path / 'broken.jsonl'},{tmp_path / 'good.jsonl'}", "dataset.eval=[]",
                   "method.max_steps=2", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "1 job(s) of the sweep did not finish" in proc.stderr
    with open(sweep / "report.csv") as f:
        table = {r["job"]: r for r in csv.DictReader(f)}
    assert table["0"]["status"] == "failed" and "broken.jsonl:2: not valid JSON" in table["0"]["error"]
    assert table["1"]["status"] == "finished"
    # A path value keeps its file name; brackets and slashes never reach the dir name.
    assert table["0"]["dir"].startswith("0_dataset.eval=_,dataset.path=broken.jsonl,method.max_steps=2-")
    assert table["1"]["dir"].startswith("1_dataset.eval=_,dataset.path=good.jsonl,method.max_steps=2-")
    assert {p.name for p in sweep.iterdir() if p.is_dir()} == {table["0"]["dir"], table["1"]["dir"]}
