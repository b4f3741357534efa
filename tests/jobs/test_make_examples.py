"""jobs.make_examples on a local Ray cluster: parts, manifest, resume, refusal of another config."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from jobs import make_examples
from reasoner.config import load_run_config
from reasoner.rundir import ConfigMismatchError, RunDir

pytestmark = pytest.mark.integration
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(run_dir, *overrides: str):
    return load_run_config(os.path.join(REPO, "jobs", "configs", "default.yaml"),
                           [f"run_dir={run_dir}", "examples.synthetic.num_items=60", "examples.items_per_part=20",
                            *overrides])


def test_parts_manifest_and_resume(ray_local, tmp_path) -> None:
    config = _config(tmp_path / "run")
    make_examples.main(config)
    run = RunDir(config.run_dir)
    # 60 items: train 48 (parts of 20, 20, 8), val 6, test 6.
    assert run.parts("examples") == ["test-00000.parquet", "train-00000.parquet", "train-00001.parquet",
                                     "train-00002.parquet", "val-00000.parquet"]
    manifest = run.manifest("examples")
    assert manifest["counts"] == {"in": 60, "out": 60, "rejected": 0}
    assert manifest["splits"] == {"train": 48, "val": 6, "test": 6}
    assert manifest["config"]["synthetic"]["num_items"] == 60
    table = run.read_table("examples", schema_name="examples")
    assert table.num_rows == 60 and len(set(table.column("id").to_pylist())) == 60

    # An interrupted run (a part and the manifest missing) resumes: only the missing part is made.
    kept, lost = run.path("examples", "train-00000.parquet"), run.path("examples", "train-00001.parquet")
    before, lost_rows = os.stat(kept).st_mtime_ns, pq.read_table(lost)
    os.remove(lost)
    os.remove(run.path("examples", "_manifest.json"))
    make_examples.main(config)
    assert os.stat(kept).st_mtime_ns == before
    again = run.read_table("examples")
    assert again.num_rows == 60
    assert sorted(again.column("id").to_pylist()) == sorted(table.column("id").to_pylist())
    assert pq.read_table(lost).equals(lost_rows)  # deterministic: the same rows, byte for byte

    # A complete artifact is not touched again.
    manifest_time = os.stat(run.path("examples", "_manifest.json")).st_mtime_ns
    make_examples.main(config)
    assert os.stat(run.path("examples", "_manifest.json")).st_mtime_ns == manifest_time


def test_another_config_is_refused_then_rebuilt_with_overwrite(ray_local, tmp_path) -> None:
    make_examples.main(_config(tmp_path / "run"))
    changed = _config(tmp_path / "run", "examples.synthetic.seed=1")
    with pytest.raises(ConfigMismatchError, match="made with another config"):
        make_examples.main(changed)
    make_examples.main(_config(tmp_path / "run", "examples.synthetic.seed=1", "overwrite=true"))
    assert RunDir(str(tmp_path / "run")).manifest("examples")["config"]["synthetic"]["seed"] == 1


def test_command_line_joins_the_cluster(ray_local, tmp_path) -> None:
    run_dir = tmp_path / "cli"
    cmd = [sys.executable, "-m", "jobs.make_examples", f"run_dir={run_dir}", "examples.synthetic.num_items=20",
           f"ray.address={ray_local.get_runtime_context().gcs_address}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert RunDir(str(run_dir)).manifest("examples")["counts"]["out"] == 20
    # A bad value is a clear one-line error and exit code 2, before any work.
    bad = subprocess.run([*cmd[:3], f"run_dir={run_dir}", "examples.synthetic.image_size=8"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "examples.synthetic." in bad.stderr and "image_size" in bad.stderr
    # Another config on the same run directory: exit 1 naming the artifact and the remedy.
    other = subprocess.run([*cmd, "examples.synthetic.seed=5"], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert other.returncode == 1
    assert "made with another config" in other.stderr and "overwrite=true" in other.stderr
    assert "Traceback" not in other.stderr


def test_real_datasets_with_rejected_records(ray_local, tmp_path) -> None:
    from tests.reasoner.data.readers.releases import write_chartqa, write_scienceqa

    write_chartqa(tmp_path / "chartqa")
    write_scienceqa(tmp_path / "scienceqa")
    config = _config(tmp_path / "run", "examples.source=datasets", "examples.items_per_part=2",
                     f"examples.datasets=[{{name: chartqa, path: '{tmp_path / 'chartqa'}', splits: [test]}},"
                     f" {{name: scienceqa, path: '{tmp_path / 'scienceqa'}', splits: [train, test]}}]")
    make_examples.main(config)
    run = RunDir(config.run_dir)
    table = run.read_table("examples", schema_name="examples")
    rejected = run.read_table("rejected/make_examples", require_complete=False).to_pylist()
    manifest = run.manifest("examples")
    # Nothing is lost: every record of the releases is an example or a rejected row with a reason.
    assert manifest["counts"] == {"in": table.num_rows + len(rejected), "out": table.num_rows,
                                  "rejected": len(rejected)}
    assert {"chartqa", "scienceqa"} == set(table.column("source").to_pylist())
    chart_rejects = {r["reason"].split(":")[0] for r in rejected if r["id"] and r["id"].startswith("chartqa")}
    assert chart_rejects == {"no answer", "missing image"}
    assert all(r["reason"] and r["stage"] == "make_examples" for r in rejected)
    # A finished split is not read again, and its rows are not duplicated.
    os.remove(run.path("examples", "_manifest.json"))
    make_examples.main(config)
    assert run.read_table("examples").num_rows == table.num_rows
    assert run.rejected_count("make_examples") == len(rejected)
