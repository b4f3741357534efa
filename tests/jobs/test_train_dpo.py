"""jobs.train_dpo: the reference pass into dpo_ref, then TRL's DPOTrainer through Ray Train
(2 CPU workers), full fine-tuning under ZeRO-2 and LoRA under ZeRO-3, with no reference model."""

from __future__ import annotations

import json

import pytest

from jobs import train_dpo
from reasoner.rundir import RunDir
from tests.jobs.conftest import install_model, run_config
from tests.jobs.training_support import (check_greedy_evaluation, copy_run, make_training_run, stage_overrides,
                                         write_pairs)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dpo_run(ray_local, tmp_path_factory, tiny_model_dir):
    root = make_training_run(tmp_path_factory.mktemp("dpo") / "run", tiny_model_dir)
    run = RunDir(root)
    install_model(run, tiny_model_dir, "models/sft")
    write_pairs(run)
    return root


def _metrics(run: RunDir) -> list[dict]:
    return [json.loads(line) for line in open(run.path("models/dpo", "metrics.jsonl"))]


def test_dpo_full_precomputed_reference(dpo_run, tmp_path, tiny_model_dir) -> None:
    from safetensors.torch import load_file

    from reasoner.models import TransformersScorer
    from reasoner.training.reference import score_pairs

    root = copy_run(dpo_run, tmp_path / "full")
    plain = stage_overrides("dpo", "dpo.zero_stage=2", "dpo.beta=0.1", "dpo.sft_weight=0")  # no RPO term
    train_dpo.main(run_config(root, *plain))
    run = RunDir(root)
    # The reference pass: one row per pair, equal to the shared scorer's totals under the SFT model.
    pairs = run.read_table("pairs").to_pylist()
    reference = {(r["id"], r["pair_index"]): r for r in run.read_table("dpo_ref", schema_name="dpo_ref").to_pylist()}
    assert len(reference) == len(pairs)
    expected = score_pairs(TransformersScorer.from_pretrained(tiny_model_dir), pairs[:2])
    for row in expected:
        got = reference[row["id"], row["pair_index"]]
        assert got["chosen_ref_logp"] == pytest.approx(row["chosen_ref_logp"], abs=1e-4)
    # Metrics per step: loss, reward margin, chosen-over-rejected accuracy, steps/s. At step 1 the
    # policy is the reference, so the loss is log 2 and the margin 0: the reference is right.
    records = _metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in ("loss", "rewards/margins", "rewards/accuracies", "steps_per_second"):
        assert all(key in r for r in records), key
    assert records[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert abs(records[0]["rewards/margins"]) < 1e-3
    assert records[-1]["rewards/margins"] > 0
    before, after = load_file(f"{tiny_model_dir}/model.safetensors"), load_file(run.path("models/dpo", "model.safetensors"))
    assert any(not (after[k] == before[k]).all() for k in before if k in after)
    manifest = run.manifest("models/dpo")
    assert manifest["steps"] == 4 and manifest["final_reward_margin"] == records[-1]["rewards/margins"]
    # A rerun of the finished stage does nothing.
    train_dpo.main(run_config(root, *plain))
    assert run.manifest("models/dpo")["finished"] == manifest["finished"]


def test_dpo_lora_zero3_exports_an_adapter_over_the_run_base(dpo_run, tmp_path) -> None:
    from reasoner.training.export import is_adapter_dir, load_trained, resolve_adapter_base

    root = copy_run(dpo_run, tmp_path / "lora")
    train_dpo.main(run_config(root, *stage_overrides("dpo", "dpo.zero_stage=3", "dpo.lora.enabled=true",
                                                     "dpo.learning_rate=0.01", "dpo.eval.questions=4",
                                                     "dpo.eval.max_tokens=6", "dpo.sft_weight=0")))
    run = RunDir(root)
    out = run.path("models/dpo")
    assert is_adapter_dir(out)
    assert resolve_adapter_base(run, out, str(tmp_path / "cache")) == run.path("models/sft")
    records = _metrics(run)
    assert records[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert records[-1]["loss"] < records[0]["loss"]
    model = load_trained(run, "models/dpo", str(tmp_path / "cache"))
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    _adapter_scores_agree_in_vllm(run, model)
    check_greedy_evaluation(run, "models/dpo", questions=4, max_tokens=6)  # the adapter, merged for vLLM


def _adapter_scores_agree_in_vllm(run: RunDir, merged) -> None:
    """vLLM serves the adapter over its base (found through the run) as peft does."""
    import os

    from vllm.lora.request import LoRARequest

    from reasoner.models import (ScoreRequest, TransformersScorer, VLLMScorer, load_processor, make_vllm_engine,
                                 shutdown_vllm_engine)
    from tests.conftest import VLLM_CPU_ENV

    pair = run.read_table("pairs").to_pylist()[0]
    request = [ScoreRequest(pair["image"], pair["prompt"], pair["chosen"])]
    base = run.path("models/sft")
    expected = TransformersScorer(merged, load_processor(base)).score(request)[0]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in VLLM_CPU_ENV.items():
            patch.setenv(key, os.environ.get(key, value))
        llm = make_vllm_engine(base, max_model_len=512, enable_lora=True, max_lora_rank=8)
        try:
            got = VLLMScorer(llm, lora_request=LoRARequest("dpo", 1, run.path("models/dpo"))).score(request)[0]
            plain = VLLMScorer(llm).score(request)[0]
        finally:
            shutdown_vllm_engine(llm)
    assert got.total == pytest.approx(expected.total, abs=1e-3)
    assert got.total != pytest.approx(plain.total, abs=1e-3)  # the adapter changed the model


@pytest.mark.slow
def test_dpo_with_the_mdpo_term_scores_corrupted_images_and_logs_it(dpo_run, tmp_path) -> None:
    root = copy_run(dpo_run, tmp_path / "mdpo")
    train_dpo.main(run_config(root, *stage_overrides("dpo", "dpo.mdpo_weight=1.0", "dpo.max_steps=2",
                                                     "dpo.sft_weight=1.0")))
    run = RunDir(root)
    reference = run.read_table("dpo_ref", schema_name="dpo_ref").to_pylist()
    assert all(r["chosen_corrupt_ref_logp"] < 0 for r in reference)
    assert run.manifest("dpo_ref")["config"]["mdpo_mask_fraction"] == 0.5
    records = _metrics(run)
    assert records[0]["mdpo/loss"] == pytest.approx(0.6931, abs=1e-3)  # the policy starts as the reference
    # Both preference terms are log 2; the RPO term adds the chosen tokens' NLL, more than a nat
    # per token for the untrained tiny model (that it counts once: tests/reasoner/training/test_dpo_loss.py).
    assert records[0]["loss"] > 2 * 0.6931 + 1.0
    assert "mdpo/margins" in records[-1] and "rewards/margins" in records[-1]
