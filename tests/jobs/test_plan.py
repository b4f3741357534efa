"""--plan: the resources each stage asks of the declared cluster, before anything starts; every
shipped config passes, and each planted impossible one is refused naming the key and the fix."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from reasoner.config import load_run_config
from reasoner.plan import count_parameters, plan, preset_config
from tests.jobs.conftest import REPO

CONFIGS = sorted(glob.glob(os.path.join(REPO, "jobs", "configs", "*.yaml")))
H100 = os.path.join(REPO, "jobs", "configs", "h100.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_shipped_config_plans_clean(path) -> None:
    config = load_run_config(path)
    result = plan(config)
    assert result.ok, result.problems
    assert [r.stage for r in result.stages if r.stage in config.stages]  # a row for the config's stages
    for stage in ("rerank", "serve"):
        assert plan(config, [stage]).ok, (stage, plan(config, [stage]).problems)


def test_the_command_line_prints_the_plan_and_exits_by_it(tmp_path) -> None:
    """Through the job's own entrypoint: nothing starts (no Ray, no run directory is read)."""
    run_dir = tmp_path / "never-made"
    ok = subprocess.run([sys.executable, "-m", "jobs.pipeline", "--config", H100, "--plan", f"run_dir={run_dir}"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "8.35B parameters" in ok.stdout and "train_sft" in ok.stdout and "every stage fits" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "jobs.sample", "--config", H100, "--plan",
                          "engine.tensor_parallel_size=3", "engine.gpus_per_engine=3"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "engine.tensor_parallel_size=3 does not divide a node's 8 GPUs" in bad.stdout
    assert not run_dir.exists()


@pytest.mark.parametrize(("overrides", "message"), [
    (["engine.gpus_per_engine=0"], "engine.gpus_per_engine=0 on a cluster of 8-GPU nodes"),
    (["engine.gpus_per_engine=2"], "engine.gpus_per_engine=2.0 but engine.tensor_parallel_size=1"),
    (["sft.use_gpu=false"], "sft.use_gpu=false on a cluster of GPUs"),
    (["sample.num_engines=16"], "16 engines x 1.0 GPUs > the cluster's 8"),
    (["dpo.num_workers=16", "dpo.global_batch_size=64"], "dpo.num_workers=16 workers of one GPU each"),
    (["model.parameters=70"], "the model's weights need 130.4 GiB a GPU"),
    (["model.parameters=70", "engine.tensor_parallel_size=2", "engine.gpus_per_engine=2"],
     "weights and optimiser need about"),
    (["cluster.gpus_per_node=0"], "sft.use_gpu=true but the cluster declares no GPU"),
    (["cluster.cpus_per_node=16"], "sft.num_workers x cpus_per_worker = 8 x 8 > the cluster's 16 CPUs"),
])
def test_an_impossible_config_is_refused_by_name(overrides, message) -> None:
    result = plan(load_run_config(H100, overrides))
    assert not result.ok
    assert any(message in p for p in result.problems), result.problems


def test_serving_is_planned_at_its_autoscaled_most() -> None:
    fixed = plan(load_run_config(H100), ["serve"])
    assert fixed.ok, fixed.problems
    scaled = plan(load_run_config(H100, ["serve.verifier_max_replicas=4"]), ["serve"])
    assert "serve: 2 Generator and 4 Verifier replicas at most, autoscaled need 10 GPUs" in scaled.problems[0]
    assert [row.count for row in scaled.stages] == [2, 8]


def test_a_bigger_cluster_makes_room() -> None:
    """The same 70B model fits once the engines shard it and training spreads over two nodes."""
    config = load_run_config(H100, ["model.parameters=70", "engine.tensor_parallel_size=4",
                                    "engine.gpus_per_engine=4", "sample.num_engines=2", "cluster.nodes=2",
                                    "sft.num_workers=16", "sft.per_device_batch_size=2", "dpo.num_workers=16",
                                    "dpo.per_device_batch_size=2", "dpo.zero_stage=3",
                                    "serve.generator_replicas=1", "serve.verifier_replicas=1"])
    result = plan(config)
    assert result.ok, result.problems


def test_parameters_are_counted_from_sizes() -> None:
    """LLaMA3-LLaVA-NeXT-8B's sizes give its published 8.35B; the tiny preset about 0.7M."""
    llama3_llava_next = {
        "text_config": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                        "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128320},
        "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "intermediate_size": 4096,
                          "patch_size": 14, "image_size": 336}}
    assert count_parameters(llama3_llava_next) / 1e9 == pytest.approx(8.35, abs=0.05)
    assert 0.4e6 < count_parameters(preset_config("tiny")) < 1.2e6
