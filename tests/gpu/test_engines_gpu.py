"""On one CUDA GPU: vLLM sampling (stage C1's sampler) and the verifier's log-prob scorers
(transformers and vLLM backends), each against what the CPU computes. Skipped where there is no
CUDA GPU (tests/conftest.py); each takes a minute or two."""

from __future__ import annotations

import pytest

from reasoner.data.synthetic import SuiteConfig, generate_suite

pytestmark = [pytest.mark.gpu, pytest.mark.integration]

# A small share of the GPU: the tiny model needs little, and other tests may hold the rest.
GPU_SHARE = 0.3


def _examples(n: int) -> list[dict]:
    return [e for e in generate_suite(SuiteConfig(num_items=60, seed=0)) if e["split"] == "train"][:n]


def _requests():
    from reasoner.models import ScoreRequest
    from reasoner.prompts import build_prompt

    out = []
    for e in _examples(4):
        prompt = build_prompt(e["question"], e.get("choices"), "cot")
        out += [ScoreRequest(e["image"], prompt, e["rationale"] or e["answers"][0]),
                ScoreRequest(e["image"], prompt, "### Answer: 7")]
    return out


def test_vllm_samples_candidates_on_cuda(tiny_model_dir) -> None:
    pytest.importorskip("vllm")
    from vllm.platforms import current_platform

    from reasoner.sampling import SampleConfig, Sampler

    assert current_platform.is_cuda(), "the vLLM installed here is not a CUDA build (the 'gpu' extra)"
    examples = _examples(8)
    sampler = Sampler(str(tiny_model_dir), SampleConfig(num_samples=4, max_tokens=16),
                      engine={"gpu_memory_utilization": GPU_SHARE})
    try:
        rows = sampler.sample(examples)
        again = sampler.sample(examples[:2])
    finally:
        sampler.close()
    expected = sorted((e["id"], k) for e in examples for k in range(4))
    assert sorted((r["id"], r["sample_index"]) for r in rows) == expected
    assert all(1 <= r["num_tokens"] <= 16 and r["cumulative_logprob"] <= 0 for r in rows)
    first = [r["text"] for r in rows if r["id"] in {e["id"] for e in examples[:2]}]
    assert sorted(first) == sorted(r["text"] for r in again)  # seeded per question: the same samples


def test_verifier_scorers_on_cuda_agree_with_the_cpu(tiny_model_dir) -> None:
    import torch

    from reasoner.data.images import decode_image
    from reasoner.models import TransformersScorer, make_scorer
    from reasoner.serving.verifier import Verifier

    requests = _requests()
    expected = TransformersScorer.from_pretrained(tiny_model_dir).score(requests)  # fp32 on the CPU
    cuda = make_scorer(tiny_model_dir, "transformers")  # what the reference pass and the verifier build
    assert cuda.model.device.type == "cuda" and cuda.model.dtype == torch.bfloat16
    got = cuda.score(requests)
    for g, e in zip(got, expected):
        assert g.token_ids == e.token_ids
        assert g.total == pytest.approx(e.total, abs=0.05 * len(e) + 0.05)  # bf16
    fp32 = TransformersScorer.from_pretrained(tiny_model_dir, device="cuda")
    for g, e in zip(fp32.score(requests), expected):
        assert g.total == pytest.approx(e.total, abs=1e-2)

    pytest.importorskip("vllm")
    from reasoner.models import VLLMScorer, shutdown_vllm_engine

    policy = VLLMScorer.from_pretrained(tiny_model_dir, dtype="float32", gpu_memory_utilization=GPU_SHARE)
    try:
        for g, e in zip(policy.score(requests), expected):
            assert g.token_ids == e.token_ids
            assert g.total == pytest.approx(e.total, abs=1e-2)
        # The DPO verifier of a model against itself: every reward is 0.
        verifier = Verifier(policy, fp32, beta=0.1)
        image, prompt = requests[0].image, requests[0].prompt
        verdicts = verifier.score(decode_image(image), prompt, [requests[0].response, requests[1].response])
        assert all(v.reward == pytest.approx(0.0, abs=1e-2) for v in verdicts)
    finally:
        shutdown_vllm_engine(policy.llm)
