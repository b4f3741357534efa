"""Tests of serve_apps.protocol: request validation, message parsing, prompts, error JSON."""

from __future__ import annotations

import base64
import random

import pytest
from PIL import Image
from pydantic import ValidationError

from reasoner.data.images import encode_png, to_data_url
from reasoner.prompts import COT_MC, COT_SHORT, DIRECT_MC, DIRECT_SHORT
from serve_apps.protocol import (
    STRATEGIES,
    APIError,
    ChatCompletionRequest,
    ReasonRequest,
    VerifyRequest,
    parse_messages,
    prompt_for,
    validation_error,
)

PNG = encode_png(Image.new("RGB", (8, 6), (200, 10, 30)))
URL = to_data_url(PNG)
# Random pixels, so the compressed stream is long enough to be cut after the header.
NOISE_PNG = encode_png(Image.frombytes("RGB", (32, 32), random.Random(0).randbytes(32 * 32 * 3)))


def image(url: str = URL) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def text(value: str = "How many bars?") -> dict:
    return {"type": "text", "text": value}


def user(*parts: dict) -> dict:
    return {"role": "user", "content": list(parts)}


def parse(*messages: dict, **limits: int):
    """parse_messages over messages validated as a chat request's."""
    request = ChatCompletionRequest.model_validate({"messages": list(messages)})
    return parse_messages(request.messages, **limits)


def refusal(*messages: dict, **limits: int) -> APIError:
    with pytest.raises(APIError) as info:
        parse(*messages, **limits)
    assert info.value.status == 400
    return info.value


def invalid(model: type, body: dict) -> APIError:
    """The APIError of a body the model refuses."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return validation_error(info.value)


# parse_messages ---------------------------------------------------------------------------

def test_parses_one_image_and_the_text():
    query = parse(user(text("  How many"), image(), text(" bars? "), text("  ")))
    assert query.question == "How many\nbars?"
    assert query.image.mode == "RGB" and query.image.size == (8, 6)
    assert query.image.getpixel((0, 0)) == (200, 10, 30)


def test_string_content_is_text():
    request = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi"}]})
    assert request.messages[0].content[0].text == "hi"
    assert refusal({"role": "user", "content": "hi"}).param == "messages[0].content"


@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:9/cat.png", "never fetched"),
    ("https://example.com/cat.png", "never fetched"),
    ("file:///etc/passwd", "never fetched"),
    ("/etc/passwd", "never fetched"),
    ("data:text/plain;base64," + base64.b64encode(b"hello").decode(), "image/"),
    (to_data_url(NOISE_PNG[: len(NOISE_PNG) // 2]), "truncated"),
    ("data:image/png;base64,@@not base64@@", "base64"),
    (to_data_url(b"garbage" * 9), "cannot identify"),
])
def test_bad_image_urls_are_refused_naming_the_part(url, says, monkeypatch):
    # Nothing may be fetched: any attempt to open a connection fails the test.
    import socket
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("protocol tried to fetch an image")
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    error = refusal(user(text(), image(url)))
    assert error.param == "messages[0].content[1].image_url.url"
    assert says in error.message


def test_oversized_images_are_refused():
    assert "pixels" in refusal(user(image(), text()), max_pixels=47).message
    error = refusal(user(image(), text()), max_bytes=16)
    assert error.param == "messages[0].content[0].image_url.url" and "max_bytes" in error.message


@pytest.mark.parametrize("messages, param, says", [
    ([user(image(), image(), text())], "messages[0].content[1]", "one image"),
    ([user(text())], "messages[0].content", "image_url"),
    ([user(image(), text("  \n "))], "messages[0].content", "non-empty text"),
    ([user(image())], "messages[0].content", "non-empty text"),
    ([{"role": "system", "content": "Be brief."}, user(image(), text())], "messages[0].role",
     "no system turn"),
    ([{"role": "developer", "content": "Be brief."}, user(image(), text())],
     "messages[0].role", "no system turn"),
    ([user(image(), text()), {"role": "assistant", "content": "3"}], "messages[1].role",
     "multi-turn"),
    ([user(image(), text()), user(text("And now?"))], "messages[1]", "multi-turn"),
])
def test_message_structure_refusals(messages, param, says):
    error = refusal(*messages)
    assert (error.param, error.status) == (param, 400)
    assert says in error.message


def test_api_error_json_is_openais():
    error = APIError("bad", param="n", status=404, code="x")
    assert error.to_json() == {"error": {"message": "bad", "type": "invalid_request_error",
                                         "param": "n", "code": "x"}}
    assert error.status == 404 and str(error) == "bad"


# request models ---------------------------------------------------------------------------

def chat(**fields) -> dict:
    return {"model": "m", "messages": [user(image(), text())], **fields}


def test_chat_request_takes_what_the_openai_client_sends():
    # As sent by openai.OpenAI().chat.completions.create(..., extra_body={"reasoning": ...}):
    # only the arguments given, extra_body merged at the top level.
    request = ChatCompletionRequest.model_validate(chat(
        reasoning={"strategy": "beam", "n": 4, "beam_width": 2, "return_token_rewards": True},
        max_completion_tokens=64, temperature=0.7, top_p=0.9, n=1, seed=3, stop="\n\n",
        logprobs=True, top_logprobs=2, user="u", stream=True,
        stream_options={"include_usage": True}, frequency_penalty=0, presence_penalty=0.0))
    assert request.reasoning is not None and request.reasoning.strategy == "beam"
    assert (request.reasoning.n, request.reasoning.beam_width) == (4, 2)
    assert request.max_tokens == 64 and request.stop == ["\n\n"] and request.n == 1
    plain = ChatCompletionRequest.model_validate(chat())
    assert (plain.n, plain.reasoning, plain.max_tokens, plain.stream) == (1, None, None, False)


@pytest.mark.parametrize("fields, param, says", [
    ({"reasoning": {"strategy": "greedy"}}, "reasoning.strategy", "best_of_n"),
    ({"reasoning": {}, "n": 4}, "n", "reasoning.n"),
    ({"reasoning": {"strategy": "cot", "beam_width": 2}}, "reasoning.beam_width", "'beam'"),
    ({"reasoning": {"n": 0}}, "reasoning.n", "greater than or equal to 1"),
    ({"reasoning": {"model": "m"}}, "reasoning.model", "unknown field"),
    ({"n": 0}, "n", "greater than or equal to 1"),
    ({"n": "4"}, "n", "integer"),
    ({"seed": 2**64}, "seed", "less than or equal to 9223372036854775807"),
    ({"temperature": 2.5}, "temperature", "2"),
    ({"temperature": float("nan")}, "temperature", "finite"),
    ({"top_p": 0}, "top_p", "greater than 0"),
    ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
    ({"max_tokens": 5, "max_completion_tokens": 6}, "max_tokens", "max_completion_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "up to 4"),
    ({"top_logprobs": 2}, "top_logprobs", "logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "20"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "stream"),
    ({"frequency_penalty": 0.5}, "frequency_penalty", "only 0"),
    ({"logit_bias": {"42": 100}}, "logit_bias", "not supported"),
    ({"tools": []}, "tools", "not supported"),
    ({"best_guess": True}, "best_guess", "unknown field"),
    ({"messages": []}, "messages", "at least 1"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "'user'"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "required"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content", "list of"),
    ({"messages": [user(text(), {"type": "video"})]}, "messages[0].content[1].type", "image_url"),
    ({"messages": [user({"type": "text"})]}, "messages[0].content[0]", "text part"),
    ({"messages": [user({"type": "image_url", "image_url": {"url": URL, "size": 3}})]},
     "messages[0].content[0].image_url.size", "unknown field"),
])
def test_chat_request_refusals_name_the_field(fields, param, says):
    error = invalid(ChatCompletionRequest, chat(**fields))
    assert (error.param, error.status, error.type) == (param, 400, "invalid_request_error")
    assert says in error.message


def test_reason_request():
    request = ReasonRequest.model_validate(chat(strategy="weighted_vote", n=8, beta=0.1,
                                                max_tokens=256, temperature=1.0))
    assert (request.strategy, request.n, request.beta, request.max_tokens) == (
        "weighted_vote", 8, 0.1, 256)
    assert ReasonRequest.model_validate(chat()).strategy == "best_of_n"
    assert invalid(ReasonRequest, chat(strategy="tree")).param == "strategy"
    assert "direct, cot, majority" in invalid(ReasonRequest, chat(strategy="tree")).message
    assert invalid(ReasonRequest, chat(beta=0)).param == "beta"
    assert invalid(ReasonRequest, chat(strategy="beam", expansions=0)).param == "expansions"
    assert invalid(ReasonRequest, chat(max_steps=4)).param == "max_steps"  # best_of_n: no steps
    assert invalid(ReasonRequest, chat(reasoning={})).param == "reasoning"


def test_verify_request():
    request = VerifyRequest.model_validate(chat(candidates=["### Answer: 3", ""]))
    assert request.candidates == ["### Answer: 3", ""] and request.return_token_rewards
    assert invalid(VerifyRequest, chat(candidates=[])).param == "candidates"
    assert invalid(VerifyRequest, chat(candidates=["a", 3])).param == "candidates[1]"
    assert invalid(VerifyRequest, chat()).message == "candidates is required"


def test_validation_error_drops_fastapis_body_prefix():
    class FastAPIStyle:  # RequestValidationError's errors() carry a leading "body"
        def errors(self):
            return [{"loc": ("body", "messages", 0, "content"), "msg": "Field required",
                     "type": "missing", "input": {}}]
    assert validation_error(FastAPIStyle()).param == "messages[0].content"


def test_validation_error_of_a_bad_body():
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate_json(b'{"messages": [')
    error = validation_error(info.value)
    assert error.param is None and "JSON" in error.message
    assert invalid(ChatCompletionRequest, {}).message == "messages is required"


# prompt_for -------------------------------------------------------------------------------

def test_prompt_short_answer():
    assert prompt_for(" What is 2 + 3? ", "direct") == f"What is 2 + 3?\n{DIRECT_SHORT}"
    for strategy in STRATEGIES[1:]:
        assert prompt_for("What is 2 + 3?", strategy) == f"What is 2 + 3?\n{COT_SHORT}"
    # One lettered line is not a list of options.
    assert prompt_for("A. Lincoln was born when?", "cot").endswith(COT_SHORT)


def test_prompt_multiple_choice():
    question = "How many circles?\nA. 3\nB. 4"
    assert prompt_for(question, "cot") == f"{question}\n{COT_MC}"
    assert prompt_for(question, "direct") == f"{question}\n{DIRECT_MC}"
    assert prompt_for("Which?\n(A) red\n(B) blue", "beam").endswith(COT_MC)
    assert prompt_for("How many circles?", "cot", choices_hint=True).endswith(COT_MC)
    assert prompt_for(question, "cot", choices_hint=False).endswith(COT_SHORT)


def test_prompt_replaces_an_existing_instruction():
    assert prompt_for(f"How many?\n{DIRECT_SHORT}", "best_of_n") == f"How many?\n{COT_SHORT}"
    assert prompt_for(f"How many?\nA. 2\nB. 3\n{COT_MC}", "direct") == (
        f"How many?\nA. 2\nB. 3\n{DIRECT_MC}")
    assert prompt_for(f"How many?\n{COT_MC}", "direct") == f"How many?\n{DIRECT_MC}"
    assert prompt_for(f"How many? {COT_SHORT.lower()}  ", "direct") == f"How many?\n{DIRECT_SHORT}"


def test_prompt_refusals():
    with pytest.raises(ValueError, match="strategy must be one of"):
        prompt_for("What?", "greedy")
    with pytest.raises(ValueError, match="empty"):
        prompt_for(COT_SHORT, "cot")
