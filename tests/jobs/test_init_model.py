"""jobs.init_model and jobs.pipeline: the base model from the run's examples, loadable by transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jobs import init_model
from reasoner.rundir import RunDir
from tests.jobs.conftest import REPO, run_config

pytestmark = pytest.mark.integration


def test_base_model_from_the_runs_examples(fresh_run) -> None:
    from reasoner.models import check_model_dir, load_model, load_processor

    config = run_config(fresh_run, "model.preset=tiny")
    init_model.main(config)
    run = RunDir(config.run_dir)
    path = check_model_dir(run.path("models/base"))
    manifest = run.manifest("models/base")
    assert manifest["preset"] == "tiny" and manifest["image_size"] == 48
    assert manifest["config"]["examples_config_hash"] == run.manifest("examples")["config_hash"]
    model, processor = load_model(path), load_processor(path)
    assert model.config.vision_config.image_size == 48
    # The tokenizer was trained on the run's own text: the suite's words are single tokens.
    tokenizer = processor.tokenizer
    assert len(tokenizer.tokenize(" bar")) == 1 and len(tokenizer.tokenize(" perimeter")) == 1
    # A rerun with the same config does nothing; another preset on the same run is refused.
    stamp = os.stat(run.path("models/base", "_manifest.json")).st_mtime_ns
    init_model.main(config)
    assert os.stat(run.path("models/base", "_manifest.json")).st_mtime_ns == stamp
    from reasoner.rundir import ConfigMismatchError

    with pytest.raises(ConfigMismatchError):
        init_model.main(run_config(fresh_run, "model.preset=small"))


@pytest.mark.slow
def test_pipeline_command(ray_local, tmp_path) -> None:
    """The README's main command, on a small suite and the tiny model, through `python -m`."""
    run_dir = tmp_path / "pipeline"
    cmd = [sys.executable, "-m", "jobs.pipeline", "--config", "jobs/configs/default.yaml", f"run_dir={run_dir}",
           "examples.synthetic.num_items=40", "model.preset=tiny",
           f"ray.address={ray_local.get_runtime_context().gcs_address}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = RunDir(str(run_dir))
    for artifact in ("examples", "models/base", "sft_data"):
        assert run.manifest(artifact) is not None, artifact
    assert "pipeline finished" in done.stderr
    # Every manifest names the code and packages that made it.
    manifest = json.loads((run_dir / "sft_data" / "_manifest.json").read_text())
    assert {"ray", "torch", "transformers", "pyarrow"} <= set(manifest["packages"])
