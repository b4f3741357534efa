"""jobs.init_model: the base model from the run's examples, loadable by transformers."""

from __future__ import annotations

import os

import pytest

from jobs import init_model
from reasoner.rundir import RunDir
from tests.jobs.conftest import run_config

pytestmark = pytest.mark.integration


def test_base_model_from_the_runs_examples(fresh_run) -> None:
    from reasoner.models import check_model_dir, load_model, load_processor

    config = run_config(fresh_run, "model.preset=tiny")
    init_model.main(config)
    run = RunDir(config.run_dir)
    path = check_model_dir(run.path("models/base"))
    manifest = run.manifest("models/base")
    side = config.examples.synthetic.image_size  # the suite's images, by default
    assert manifest["preset"] == "tiny" and manifest["image_size"] == side
    assert manifest["config"]["examples_config_hash"] == run.manifest("examples")["config_hash"]
    model, processor = load_model(path), load_processor(path)
    assert model.config.vision_config.image_size == side
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
