"""On one CUDA GPU: one SFT and one DPO step in bf16 under DeepSpeed ZeRO-3, through the jobs
(Ray Train, one worker, NCCL), on the tiny model. Skipped where there is no CUDA GPU
(tests/conftest.py); each takes a few minutes at most."""

from __future__ import annotations

import json
import math

import pytest

from reasoner.rundir import RunDir
from tests.jobs.conftest import install_model, run_config
from tests.jobs.training_support import copy_run, make_training_run, stage_overrides, write_pairs

pytestmark = [pytest.mark.gpu, pytest.mark.integration]

# One worker on one GPU, bf16, ZeRO-3, one optimizer step (a checkpoint at it).
GPU_STEP = ("num_workers=1", "cpus_per_worker=1", "use_gpu=true", "dtype=bfloat16", "zero_stage=3",
            "per_device_batch_size=2", "global_batch_size=2", "max_steps=1", "save_steps=1")


def _gpu(section: str, *extra: str) -> list[str]:
    return stage_overrides(section, *(f"{section}.{o}" for o in GPU_STEP), *extra)


@pytest.fixture(scope="module")
def gpu_run(ray_local, tmp_path_factory, tiny_model_dir):
    assert ray_local.cluster_resources().get("GPU", 0) >= 1, "Ray sees no GPU"
    return make_training_run(tmp_path_factory.mktemp("gpu") / "run", tiny_model_dir)


def _records(run: RunDir, artifact: str) -> list[dict]:
    return [json.loads(line) for line in open(run.path(artifact, "metrics.jsonl"))]


def test_sft_one_bf16_step_under_zero3(gpu_run, tmp_path) -> None:
    from jobs import train_sft
    from reasoner.models import load_model

    root = copy_run(gpu_run, tmp_path / "sft")
    train_sft.main(run_config(root, *_gpu("sft")))
    run = RunDir(root)
    assert run.manifest("models/sft")["steps"] == 1
    training = json.loads(open(run.path("models/sft", "training.json")).read())
    assert training["world_size"] == 1 and training["global_step"] == 1
    records = _records(run, "models/sft")
    assert [r["step"] for r in records] == [1] and math.isfinite(records[0]["loss"])
    load_model(run.path("models/sft"))  # ZeRO-3 gathered the 16-bit weights into the export


def test_dpo_one_bf16_step_under_zero3(gpu_run, tmp_path, tiny_model_dir) -> None:
    from jobs import train_dpo

    root = copy_run(gpu_run, tmp_path / "dpo")
    run = RunDir(root)
    install_model(run, tiny_model_dir, "models/sft")
    pairs = write_pairs(run, limit=4)
    # The reference pass runs on the GPU too (the transformers backend, bf16).
    train_dpo.main(run_config(root, *_gpu("dpo", "dpo.beta=0.1", "dpo.sft_weight=0",
                                          "dpo.reference_backend=transformers")))
    assert run.manifest("dpo_ref")["counts"]["out"] == len(pairs)
    assert run.manifest("models/dpo")["steps"] == 1
    records = _records(run, "models/dpo")
    # At the first step the policy is the reference: log 2, up to bf16 rounding of both passes.
    assert records[0]["loss"] == pytest.approx(math.log(2), abs=0.05)
