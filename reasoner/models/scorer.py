"""The log-prob scorer: per-token log-probs of given responses to (image, prompt) under a model.

The DPO reference pass, the verifier and evaluation all score through this one contract::

    scorer.score([ScoreRequest(image=png_bytes, prompt="What is ...?\\nGenerate a reason ...",
                               response="The red bar is 4.\\n### Answer: 4")])
    -> [TokenLogProbs(tokens=["The", " red", ...], token_ids=[...], logprobs=[...], total=-12.3)]

Tokenisation, shared by every backend and by the engines that generate (``reasoner.models.inputs``):

- the prompt is the model's chat template over one user turn holding the image then the prompt
  text (``reasoner.prompts.chat_messages``), with the generation prompt, tokenised with
  ``add_special_tokens=False`` as vLLM's chat endpoint does (the template carries BOS);
- the response is tokenised separately (``add_special_tokens=False``) and appended, so the
  boundary between prompt and response tokens is exact; then EOS if ``ScoreRequest.eos``.

EOS is scored by default: a complete response ends the assistant turn with EOS, and DPO scores
it (TRL's chat-templated completions end with it). Set ``eos=False`` for a prefix (a partial
response, e.g. a beam of stage-level search), whose turn has not ended.

Backends: ``TransformersScorer`` here (batched, right-padded, fp32 by default) and
``reasoner.models.vllm_backend.VLLMScorer`` (``prompt_logprobs``); they agree to about 1e-6 in
fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from PIL import Image

from reasoner.models.inputs import EncodedRequest, encode_request, token_texts, tokenizer_of

if TYPE_CHECKING:
    from transformers import PreTrainedModel, ProcessorMixin

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreRequest:
    """One response to score: the image (encoded bytes or a PIL image), the prompt text, the response.

    ``eos``: append the EOS token to the response and score it (a complete response); False for
    a prefix of a response.
    """

    image: bytes | Image.Image
    prompt: str
    response: str
    eos: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.image, (bytes, bytearray, Image.Image)):
            raise TypeError(f"ScoreRequest.image must be bytes or a PIL image, got {type(self.image).__name__}")
        for name in ("prompt", "response"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"ScoreRequest.{name} must be a str, got {type(getattr(self, name)).__name__}")


@dataclass(frozen=True)
class TokenLogProbs:
    """The scored response tokens: each token's text, id and log-prob; ``total`` is their sum.

    ``total`` is computed when not given.
    """

    tokens: list[str]
    token_ids: list[int]
    logprobs: list[float]
    total: float | None = None

    def __post_init__(self) -> None:
        if not len(self.tokens) == len(self.token_ids) == len(self.logprobs):
            raise ValueError(
                f"tokens, token_ids and logprobs must have one entry a token, got lengths "
                f"{len(self.tokens)}, {len(self.token_ids)} and {len(self.logprobs)}"
            )
        if self.total is None:
            object.__setattr__(self, "total", float(sum(self.logprobs)))

    def __len__(self) -> int:
        return len(self.token_ids)


@runtime_checkable
class LogProbScorer(Protocol):
    """Anything that scores requests: one ``TokenLogProbs`` per request, in order."""

    def score(self, requests: Sequence[ScoreRequest]) -> list[TokenLogProbs]: ...


def _collapse_runs(ids: Sequence[int], token_id: int) -> list[int]:
    """``ids`` with every run of ``token_id`` cut to one (an expanded image placeholder to one)."""
    out: list[int] = []
    for i in ids:
        if not (i == token_id and out and out[-1] == token_id):
            out.append(i)
    return out


def make_scorer(model_dir: str | Path, backend: str, *, batch_size: int = 16,
                engine: dict[str, Any] | None = None) -> LogProbScorer:
    """A scorer over ``model_dir``: ``"vllm"`` (an engine with the ``engine`` arguments, the run's
    engine section) or ``"transformers"`` (fp32 on CPU, bf16 on a GPU; ``batch_size`` requests a
    forward pass). The DPO reference pass and the served verifier both build theirs here."""
    if backend == "vllm":
        from reasoner.models.vllm_backend import VLLMScorer

        return VLLMScorer.from_pretrained(model_dir, **(engine or {}))
    if backend != "transformers":
        raise ValueError(f"scorer backend {backend!r} is not one of vllm, transformers")
    import torch

    on_gpu = torch.cuda.is_available()
    return TransformersScorer.from_pretrained(model_dir, dtype="bfloat16" if on_gpu else "float32",
                                              device="cuda" if on_gpu else "cpu", batch_size=batch_size)


class TransformersScorer:
    """The transformers backend: one forward pass per batch, right-padded, in the model's dtype.

    ``model`` is any LLaVA-family ``...ForConditionalGeneration`` and ``processor`` its
    processor; ``from_pretrained`` loads both from a model directory (fp32 by default).
    """

    def __init__(self, model: PreTrainedModel, processor: ProcessorMixin, *, batch_size: int = 8) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        tokenizer = tokenizer_of(processor)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.image_token_id = model.config.image_token_id

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, *, dtype: str = "float32", device: str = "cpu",
                        batch_size: int = 8) -> TransformersScorer:  # fmt: skip
        from reasoner.models.checkpoint import load_model, load_processor

        return cls(load_model(model_dir, dtype=dtype, device=device), load_processor(model_dir), batch_size=batch_size)

    def score(self, requests: Sequence[ScoreRequest]) -> list[TokenLogProbs]:
        encoded = [encode_request(self.processor, r) for r in requests]
        results: list[TokenLogProbs] = []
        for start in range(0, len(encoded), self.batch_size):
            results += self._score_batch(encoded[start : start + self.batch_size])
        return results

    def _score_batch(self, batch: list[EncodedRequest]) -> list[TokenLogProbs]:
        import torch

        inputs = self.processor(
            images=[e.image for e in batch], text=[e.prompt_text for e in batch],
            add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt",
        )  # fmt: skip
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        rows = []
        for row, (e, length) in enumerate(zip(batch, prompt_lengths)):
            prompt = inputs["input_ids"][row, :length].tolist()
            if _collapse_runs(prompt, self.image_token_id) != _collapse_runs(e.prompt_ids, self.image_token_id):
                raise RuntimeError(
                    "the processor tokenised the prompt differently from the tokenizer: "
                    f"{prompt} vs {e.prompt_ids} (prompt {e.prompt_text!r})"
                )
            rows.append(prompt + e.response_ids)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
            attention_mask[i, : len(r)] = 1
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        device = self.model.device
        extra = {k: v.to(device, self.model.dtype) if v.is_floating_point() else v.to(device)
                 for k, v in extra.items()}  # fmt: skip
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **extra
            ).logits
        results = []
        for i, (e, length) in enumerate(zip(batch, prompt_lengths)):
            n = len(e.response_ids)
            if n == 0:
                results.append(TokenLogProbs([], [], []))
                continue
            # The token at position t is predicted by the logits at t - 1.
            step_logits = logits[i, length - 1 : length - 1 + n].float()
            targets = input_ids[i, length : length + n].to(step_logits.device)
            logprobs = torch.log_softmax(step_logits, dim=-1).gather(1, targets[:, None])[:, 0]
            tokens = token_texts(self.processor, e.response_ids)
            results.append(TokenLogProbs(tokens, e.response_ids, logprobs.tolist()))
        return results
