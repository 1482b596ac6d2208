"""Committed run records: packed metrics read like the originals, and pack to the same bytes every time."""
import gzip
import json
import shutil
import subprocess
import sys

from helpers import ROOT

from adabatch.run.records import METRICS_FILE, PACKED_METRICS_FILE, SUMMARY_FILE, pack_metrics, read_metrics

RECORDS = [{"kind": "eval", "step": 0, "test_acc": 0.1}, {"kind": "train", "step": 1, "train_loss": 2.5}]


def write_run(run_dir, finished=True):
    run_dir.mkdir(parents=True)
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    if finished:
        (run_dir / SUMMARY_FILE).write_text("{}")


def test_packed_metrics_read_as_the_original_and_pack_reproducibly(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    write_run(first)
    shutil.copytree(first, second)
    pack_metrics(first)
    packed = pack_metrics(second)
    assert not (first / METRICS_FILE).exists() and packed.name == PACKED_METRICS_FILE
    assert (first / PACKED_METRICS_FILE).read_bytes() == packed.read_bytes()
    assert list(read_metrics(first)) == RECORDS and list(read_metrics(first, "train")) == RECORDS[1:]
    assert gzip.decompress(packed.read_bytes()).decode().count("\n") == 2


def test_pack_runs_packs_finished_runs_only(tmp_path):
    write_run(tmp_path / "runs" / "done")
    write_run(tmp_path / "runs" / "going", finished=False)
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "pack_runs.py"), str(tmp_path / "runs")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "done" / PACKED_METRICS_FILE).exists()
    assert (tmp_path / "runs" / "going" / METRICS_FILE).exists()
    assert not (tmp_path / "runs" / "going" / PACKED_METRICS_FILE).exists()
