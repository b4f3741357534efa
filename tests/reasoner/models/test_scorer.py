"""Tests of reasoner.models.scorer: request encoding and the transformers backend."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from reasoner.data.images import encode_png
from reasoner.models import LogProbScorer, ScoreRequest, TokenLogProbs, TransformersScorer, load_processor
from reasoner.models.inputs import encode_request, format_prompt
from reasoner.prompts import build_prompt, chat_messages

PROMPT = build_prompt("What is the sum of the red bar and the blue bar?", None, "cot")
RESPONSE = "The red bar is 4.\nThe blue bar is 7.\n4 + 7 = 11.\n### Answer: 11"


def image(color=(200, 30, 30), size=(32, 32)) -> Image.Image:
    return Image.new("RGB", size, color)


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(tiny_model_dir)


@pytest.fixture(scope="module")
def scorer(tiny_model_dir):
    return TransformersScorer.from_pretrained(tiny_model_dir, batch_size=3)


def test_prompt_is_the_chat_template(processor):
    assert format_prompt(processor, "Q?") == "<s><|user|><image>Q?<|assistant|>"


def test_encoding_boundary_is_the_full_conversation(processor):
    encoded = encode_request(processor, ScoreRequest(image(), PROMPT, RESPONSE))
    tokenizer = processor.tokenizer
    full = processor.apply_chat_template(chat_messages(PROMPT, RESPONSE), tokenize=False)
    assert encoded.prompt_ids + encoded.response_ids == tokenizer(full, add_special_tokens=False)["input_ids"]
    assert encoded.prompt_ids[0] == tokenizer.bos_token_id
    assert encoded.prompt_ids.count(processor.image_token_id) == 1
    assert encoded.response_ids[-1] == tokenizer.eos_token_id


def test_encoding_without_eos(processor):
    with_eos = encode_request(processor, ScoreRequest(image(), PROMPT, RESPONSE))
    without = encode_request(processor, ScoreRequest(image(), PROMPT, RESPONSE, eos=False))
    assert without.response_ids == with_eos.response_ids[:-1]
    assert encode_request(processor, ScoreRequest(image(), PROMPT, "", eos=False)).response_ids == []


def test_bad_requests():
    with pytest.raises(TypeError, match="image"):
        ScoreRequest("not an image", PROMPT, RESPONSE)
    with pytest.raises(TypeError, match="response"):
        ScoreRequest(image(), PROMPT, None)


def test_scores(scorer):
    [result] = scorer.score([ScoreRequest(image(), PROMPT, RESPONSE)])
    assert isinstance(scorer, LogProbScorer)
    assert isinstance(result, TokenLogProbs)
    assert "".join(result.tokens) == RESPONSE + "</s>"
    assert len(result.tokens) == len(result.token_ids) == len(result.logprobs) == len(result)
    assert all(lp <= 0 and math.isfinite(lp) for lp in result.logprobs)
    assert result.total == pytest.approx(sum(result.logprobs))


def test_batching_and_padding_do_not_change_scores(scorer):
    requests = [
        ScoreRequest(image(), PROMPT, RESPONSE),
        ScoreRequest(encode_png(image((20, 30, 230))), "How many?", "3"),
        ScoreRequest(image((20, 230, 30), (48, 24)), build_prompt("Which?", ["3", "5"], "direct"), "B"),
        ScoreRequest(image(), PROMPT, "The red bar is 4.\n", eos=False),  # a prefix (one step)
        ScoreRequest(image(), PROMPT, "", eos=False),
    ]
    batched = scorer.score(requests)
    single = [scorer.score([r])[0] for r in requests]
    for a, b in zip(batched, single):
        assert a.token_ids == b.token_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
    assert batched[-1].token_ids == [] and batched[-1].total == 0.0
    # A prefix scores as the start of the full response.
    assert batched[3].logprobs == pytest.approx(batched[0].logprobs[: len(batched[3])], abs=1e-5)


def test_image_bytes_and_pil_score_the_same(scorer):
    a, b = scorer.score([ScoreRequest(image(), PROMPT, RESPONSE), ScoreRequest(encode_png(image()), PROMPT, RESPONSE)])
    assert a.logprobs == pytest.approx(b.logprobs, abs=1e-6)


def test_the_image_matters(scorer):
    a, b = scorer.score([ScoreRequest(image((255, 0, 0)), PROMPT, RESPONSE), ScoreRequest(image((0, 0, 255)), PROMPT, RESPONSE)])
    assert a.total != b.total


def test_llava_next_scores(tiny_next_model_dir):
    scorer = TransformersScorer.from_pretrained(tiny_next_model_dir, batch_size=2)
    requests = [ScoreRequest(image(size=size), PROMPT, RESPONSE) for size in [(32, 32), (64, 32), (20, 50)]]
    batched = scorer.score(requests)
    single = [scorer.score([r])[0] for r in requests]
    for a, b in zip(batched, single):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def test_bad_batch_size(tiny_model_dir):
    with pytest.raises(ValueError, match="batch_size"):
        TransformersScorer.from_pretrained(tiny_model_dir, batch_size=0)


def test_token_logprobs_total_and_lengths():
    result = TokenLogProbs(["a", "b"], [5, 6], [-1.0, -0.5])
    assert result.total == -1.5 and len(result) == 2
    with pytest.raises(ValueError, match="one entry a token"):
        TokenLogProbs(["a"], [5, 6], [-1.0, -0.5])
