"""reasoner.sampling.Sampler on the session's vLLM engine (the stage's own tests are in tests/jobs)."""

from __future__ import annotations

import pytest

from reasoner.data.synthetic import SuiteConfig, generate_suite
from reasoner.sampling import SampleConfig, Sampler

pytestmark = pytest.mark.integration


def test_one_call_larger_than_a_step_of_prefill(tiny_model_dir, tiny_vllm_engine):
    """vLLM 0.32 on CPU crashed ("CPU Generator does not use offset") when chunked prefill split
    a seeded request; every sampled request is seeded, so a part of the default size (64 questions
    x 32 samples) always crossed the 4096 prompt tokens of a step. The engine defaults turn chunked
    prefill off on CPU; this call holds several steps' worth of prompt tokens."""
    examples = [e for e in generate_suite(SuiteConfig(num_items=120, seed=0)) if e["split"] == "train"][:40]
    config = SampleConfig(num_samples=8, max_tokens=4)
    sampler = Sampler(str(tiny_model_dir), config, engine_factory=lambda model_dir, **kwargs: tiny_vllm_engine)
    rows = sampler.sample(examples)
    assert sorted((r["id"], r["sample_index"]) for r in rows) == sorted(
        (e["id"], k) for e in examples for k in range(8))
    prompt_tokens = len(examples) * 8 * len(tiny_vllm_engine.get_tokenizer()(rows[0]["prompt"])["input_ids"])
    assert prompt_tokens > tiny_vllm_engine.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    assert tiny_vllm_engine.llm_engine.vllm_config.scheduler_config.enable_chunked_prefill is False
