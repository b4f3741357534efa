"""jobs.report on a tiny fake run: the report stage's manifest, its skip when complete, and the
command line's one-line reason when there is no evaluation (no Ray, no engine)."""

from __future__ import annotations

import glob
import os

import pytest

from jobs import report
from jobs._common import run_job
from tests.jobs.conftest import run_config
from tests.support.report_run import make_report_run


def test_the_report_stage_records_the_evaluation_and_is_skipped_when_complete(tmp_path) -> None:
    run = make_report_run(tmp_path / "run")
    config = run_config(tmp_path / "run")
    report.main(config)
    manifest = run.manifest("report")
    assert manifest["stage"] == "report" and manifest["config"] == {"eval_config_hash": "hash-evaluate"}
    assert manifest["counts"] == {"in": 16, "out": 7, "rejected": 0} and "report" in manifest["timings_s"]  # 5 PNGs, md, html
    assert "report.html" in manifest["files"]
    written = os.path.getmtime(run.path("report", "report.md"))
    report.main(config)  # complete with this evaluation: nothing to do
    assert os.path.getmtime(run.path("report", "report.md")) == written


def test_the_command_without_an_evaluation_stops_with_the_reason(tmp_path) -> None:
    with pytest.raises(SystemExit) as stopped:
        run_job(report.STAGE, report.main, report.__doc__, sections=("ray",), uses_ray=False,
                argv=[f"run_dir={tmp_path / 'run'}"])
    assert stopped.value.code == 1
    (log,) = glob.glob(str(tmp_path / "run" / "logs" / "report-*.log"))
    with open(log, encoding="utf-8") as fh:
        assert "run the evaluate stage first" in fh.read()
