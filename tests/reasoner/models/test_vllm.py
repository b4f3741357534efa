"""Integration tests of the vLLM backend: the tiny models load, generate with images, and score
as the transformers backend does."""

from __future__ import annotations

import pytest
from PIL import Image

from reasoner.data.images import encode_png, to_data_url
from reasoner.models import ScoreRequest, TransformersScorer, VLLMScorer, make_vllm_engine, shutdown_vllm_engine
from reasoner.models.inputs import encode_request
from reasoner.models.vllm_backend import engine_defaults
from reasoner.prompts import build_prompt, chat_messages

pytestmark = pytest.mark.integration

PARITY_TOLERANCE = 1e-4


def image(color=(200, 30, 30), size=(32, 32)) -> Image.Image:
    return Image.new("RGB", size, color)


def requests_of_different_lengths() -> list[ScoreRequest]:
    sum_prompt = build_prompt("What is the sum of the red bar and the blue bar?", None, "cot")
    return [
        ScoreRequest(encode_png(image()), sum_prompt, "The red bar is 4.\nThe blue bar is 7.\n4 + 7 = 11.\n### Answer: 11"),
        ScoreRequest(image((20, 30, 230)), build_prompt("How many squares are there?", None, "direct"), "3"),
        ScoreRequest(image((20, 230, 30), (48, 24)), build_prompt("Which bar is the tallest?", ["red", "blue"], "cot"),
                     "The tallest bar is the blue bar.\nOption B is blue.\n### Answer: B"),  # fmt: skip
        ScoreRequest(image((90, 90, 90)), sum_prompt, "The red bar is 4.\nThe xylophone", eos=False),
    ]


def max_abs_diff(a, b) -> float:
    diffs = [abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra.logprobs, rb.logprobs, strict=True)]
    return max(diffs)


@pytest.fixture(scope="module")
def tiny_next_vllm_engine(vllm_cpu_env, tiny_next_model_dir):
    llm = make_vllm_engine(tiny_next_model_dir)
    yield llm
    shutdown_vllm_engine(llm)


@pytest.fixture(params=["tiny", "tiny-next"])
def model_and_engine(request):
    if request.param == "tiny":
        return request.getfixturevalue("tiny_model_dir"), request.getfixturevalue("tiny_vllm_engine")
    return request.getfixturevalue("tiny_next_model_dir"), request.getfixturevalue("tiny_next_vllm_engine")


def test_engine_defaults(tiny_model_dir):
    defaults = engine_defaults(tiny_model_dir)
    assert defaults["enforce_eager"] is True and defaults["dtype"] == "float32"  # CPU
    assert defaults["max_model_len"] == 512  # the tiny model's max_position_embeddings
    assert defaults["limit_mm_per_prompt"] == {"image": 1}
    assert defaults["enable_chunked_prefill"] is False  # CPU: seeded requests crash a split prefill


def test_generate_with_an_image(model_and_engine):
    from vllm import SamplingParams

    model_dir, llm = model_and_engine
    scorer = VLLMScorer(llm)
    prompt = build_prompt("What is the value of the red bar?", None, "cot")
    encoded = encode_request(scorer.processor, ScoreRequest(image(), prompt, ""))
    params = SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=0)
    [out] = llm.generate([{"prompt": encoded.prompt_text, "multi_modal_data": {"image": image()}}], params, use_tqdm=False)
    assert len(out.outputs) == 2
    assert all(len(c.token_ids) > 0 for c in out.outputs)
    # One BOS (from the template: the prompt string is tokenised with add_special_tokens=True).
    assert out.prompt_token_ids.count(scorer.processor.tokenizer.bos_token_id) == 1


def test_scorer_backends_agree(model_and_engine):
    model_dir, llm = model_and_engine
    requests = requests_of_different_lengths()
    expected = TransformersScorer.from_pretrained(model_dir, batch_size=4).score(requests)
    got = VLLMScorer(llm).score(requests)
    for a, b in zip(expected, got):
        assert a.token_ids == b.token_ids and a.tokens == b.tokens
        assert b.total == pytest.approx(a.total, abs=PARITY_TOLERANCE * len(a))
    assert len({len(r) for r in got}) == len(got)  # different lengths
    diff = max_abs_diff(expected, got)
    print(f"max abs diff of per-token log-probs, transformers vs vLLM ({model_dir.name}): {diff:.2e}")
    assert diff < PARITY_TOLERANCE


def test_chat_prompt_matches_the_scorer_prompt(tiny_model_dir, tiny_vllm_engine):
    """vLLM's chat path (tokenised with add_special_tokens=False) gives the scorer's prompt: one BOS."""
    from vllm import SamplingParams

    scorer = VLLMScorer(tiny_vllm_engine)
    prompt = build_prompt("What is the value of the red bar?", None, "cot")
    messages = chat_messages(prompt)
    messages[0]["content"][0] = {"type": "image_url", "image_url": {"url": to_data_url(encode_png(image()))}}
    [out] = tiny_vllm_engine.chat([messages], SamplingParams(max_tokens=1), use_tqdm=False)
    expected = encode_request(scorer.processor, ScoreRequest(image(), prompt, "", eos=False)).prompt_ids
    image_id = scorer.processor.image_token_id
    collapsed = [t for i, t in enumerate(out.prompt_token_ids) if not (t == image_id and out.prompt_token_ids[i - 1] == image_id)]
    assert collapsed == expected


def test_empty_batch(tiny_vllm_engine):
    assert VLLMScorer(tiny_vllm_engine).score([]) == []


@pytest.mark.slow
def test_lora_adapter_scores_as_peft(vllm_cpu_env, tiny_next_model_dir, tmp_path):
    """A peft LoRA adapter scored through vLLM's LoRARequest equals peft's scores in transformers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from vllm.lora.request import LoRARequest

    from reasoner.models import load_model, load_processor

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj|down_proj)",
                        init_lora_weights=False)  # fmt: skip  (random B: the adapter changes scores)
    adapter = get_peft_model(load_model(tiny_next_model_dir), config)
    adapter.save_pretrained(tmp_path / "adapter")
    requests = requests_of_different_lengths()
    expected = TransformersScorer(adapter, load_processor(tiny_next_model_dir), batch_size=4).score(requests)
    llm = make_vllm_engine(tiny_next_model_dir, enable_lora=True, max_lora_rank=8, max_loras=1)
    try:
        scorer = VLLMScorer(llm)
        got = scorer.score(requests, lora_request=LoRARequest("adapter", 1, str(tmp_path / "adapter")))
        base = scorer.score(requests)
    finally:
        shutdown_vllm_engine(llm)
    diff = max_abs_diff(expected, got)
    print(f"max abs diff of per-token log-probs, peft vs vLLM LoRA (tiny-next): {diff:.2e}")
    assert diff < PARITY_TOLERANCE
    assert max_abs_diff(base, got) > 1e-3  # the adapter is in use


def test_lora_request_needs_a_lora_engine(tiny_vllm_engine):
    from vllm.lora.request import LoRARequest

    with pytest.raises(ValueError, match="enable_lora=True"):
        VLLMScorer(tiny_vllm_engine).score(requests_of_different_lengths()[:1], lora_request=LoRARequest("a", 1, "/x"))
