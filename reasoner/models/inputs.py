"""Model inputs shared by every engine: image loading, prompt formatting, request encoding.

Sampling, evaluation, the log-prob scorer (both backends) and the served generator and verifier
turn (image, prompt[, response]) into tokens here, one way, so that what a generator was
conditioned on is exactly what the verifier scores:

- the prompt is the model's chat template over one user turn holding the image then the prompt
  text (``reasoner.prompts.chat_messages``), with the generation prompt, tokenised with
  ``add_special_tokens=False`` as vLLM's chat endpoint does (the template carries BOS);
- a response is tokenised on its own (``add_special_tokens=False``) and appended, so the boundary
  between prompt and response tokens is exact; then EOS for a complete response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from reasoner.prompts import chat_messages

if TYPE_CHECKING:
    from reasoner.models.scorer import ScoreRequest


def load_image(image: bytes | Image.Image) -> Image.Image:
    """An RGB PIL image from encoded bytes (decoded safely) or a PIL image."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    from reasoner.data.images import decode_image

    return decode_image(bytes(image))


def tokenizer_of(processor: Any):
    """The tokenizer of a processor (or the tokenizer itself)."""
    return getattr(processor, "tokenizer", processor)


def format_prompt(processor: Any, prompt: str) -> str:
    """``prompt`` as the model's chat template renders one user turn (image, text) and the generation prompt."""
    messages = chat_messages(prompt)
    template_owner = processor if getattr(processor, "chat_template", None) else tokenizer_of(processor)
    if not getattr(template_owner, "chat_template", None):
        raise ValueError("the model has no chat template: add one to its tokenizer or processor config")
    return template_owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def prompt_token_ids(processor: Any, prompt: str) -> list[int]:
    """The chat-templated prompt's token ids (one unexpanded image token)."""
    return list(tokenizer_of(processor)(format_prompt(processor, prompt), add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class EncodedRequest:
    """A request tokenised for scoring: the prompt (unexpanded image token) and response token ids."""

    image: Image.Image
    prompt_text: str
    prompt_ids: list[int]
    response_ids: list[int]


def encode_request(processor: Any, request: ScoreRequest) -> EncodedRequest:
    """Tokenise a request as every backend does (see the module docstring)."""
    tokenizer = tokenizer_of(processor)
    prompt_text = format_prompt(processor, request.prompt)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(request.response, add_special_tokens=False)["input_ids"] if request.response else []
    if request.eos:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token: score with eos=False")
        response_ids = [*response_ids, tokenizer.eos_token_id]
    return EncodedRequest(load_image(request.image), prompt_text, list(prompt_ids), list(response_ids))


def token_texts(processor: Any, token_ids: Sequence[int]) -> list[str]:
    """Each token's text on its own (a byte of a multi-byte character shows as U+FFFD)."""
    tokenizer = tokenizer_of(processor)
    return [tokenizer.decode([i], skip_special_tokens=False) for i in token_ids]


def generation_input(processor: Any, prompt: str, image: Any) -> dict[str, Any]:
    """The ``vllm.LLM.generate`` input of one prompt: its chat-templated token ids (the scorer's
    tokenisation, ``format_prompt``) and the image (a PIL image)."""
    return {"prompt_token_ids": prompt_token_ids(processor, prompt), "multi_modal_data": {"image": image}}
