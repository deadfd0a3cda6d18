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
    # Valid rows (a bad row would stop the sweep before any job), all longer than method.max_length:
    # only the job, with the tokenizer, finds that the length rule leaves none to train on.
    (tmp_path / "broken.jsonl").write_text(json.dumps({"question": "q", "chosen": "mango " * 400, "rejected": "b"})
                                           + "\n")
    sweep = tmp_path / "multirun"
    proc = run_cli("rlhf.train", "-m", f"hydra.sweep.dir={sweep}", f"cache_dir={tmp_path / 'cache'}",
                   f"dataset.path={tmp_path / 'broken.jsonl'},{tmp_path / 'good.jsonl'}", "dataset.eval=[]",
                   "method.max_steps=2", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "1 job(s) of the sweep did not finish" in proc.stderr
    with open(sweep / "report.csv") as f:
        table = {r["job"]: r for r in csv.DictReader(f)}
    assert table["0"]["status"] == "failed" and "no training rows are left from" in table["0"]["error"]
    assert "broken.jsonl" in table["0"]["error"]
    assert table["1"]["status"] == "finished"
