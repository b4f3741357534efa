"""Fixtures of the job tests: a small run directory with examples (and the tiny model as a stage)."""

from __future__ import annotations

import os
import shutil

import pytest

from reasoner.config import config_hash, load_run_config
from reasoner.rundir import RunDir, StageCounts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = os.path.join(REPO, "jobs", "configs", "default.yaml")


def run_config(run_dir, *overrides: str):
    """The default config on ``run_dir`` with a small suite, plus ``overrides``."""
    return load_run_config(DEFAULT, [f"run_dir={run_dir}", "examples.synthetic.num_items=40",
                                     "examples.items_per_part=20", *overrides])


def install_model(run: RunDir, model_dir, artifact: str) -> None:
    """Put a built model into the run as a finished stage's artifact (standing in for training)."""
    shutil.copytree(model_dir, run.path(artifact), dirs_exist_ok=True)
    run.finish(artifact, stage="test", config={"source": str(model_dir)}, config_hash=config_hash(str(model_dir)),
               counts=StageCounts(1, 1))


@pytest.fixture(scope="module")
def examples_run(ray_local, tmp_path_factory):
    """A run directory whose examples (40 synthetic items) are made once per module; copy before use."""
    from jobs import make_examples

    root = tmp_path_factory.mktemp("examples-run") / "run"
    make_examples.main(run_config(root))
    return root


@pytest.fixture
def fresh_run(examples_run, tmp_path):
    """A copy of ``examples_run`` for one test."""
    target = tmp_path / "run"
    shutil.copytree(examples_run, target)
    return target
