"""The generator of stage (D): vLLM's async engine over one model, driven with token ids.

Why vLLM's ``AsyncLLM`` itself and not ``ray.serve.llm``'s ``LLMServer``: the verifier must score
exactly the tokens the generator was conditioned on, so prompts go in as token ids from
``reasoner.models.inputs`` (the one tokenisation of sampling, evaluation and the scorer), and a
beam of stage-level search goes in as the prompt plus the beam's text; ``LLMServer`` takes
OpenAI requests and renders them with its own chat stage, which with Ray 2.60 targets vLLM 0.29
and fails on 0.32's moved modules (see ENVIRONMENT.md of the project). ``AsyncLLM`` is the engine
behind both vLLM's OpenAI server and ``LLMServer``: concurrent requests are batched by the engine,
and outputs stream.

:class:`Generation` is plain Python over an injected engine factory; the Serve deployment in
``serve_apps/reason.py`` is a thin wrapper.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

logger = logging.getLogger(__name__)

_request_ids = itertools.count()


class InputRejected(ValueError):
    """The engine refused a request's input (a prompt longer than the model's context, sampling
    settings it does not take): the client's to fix, answered 400, not an engine fault. ``param``
    names the request field at fault where it is known.

    Raised in place of vLLM's own errors (``from None``), so that a process receiving it from a
    replica need not import vLLM to unpickle it.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param)
        self.message, self.param = message, param

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class SamplingOptions:
    """What a request may set of vLLM's ``SamplingParams`` (OpenAI's names)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None  # top log-probs per token (0: only the chosen token's); None: none

    def to_vllm(self, *, delta: bool = False):
        """vLLM's ``SamplingParams``; settings it refuses raise :class:`InputRejected`."""
        try:
            return self._to_vllm(delta)
        except ValueError as e:  # e.g. n > 1 with temperature 0 (greedy)
            raise InputRejected(str(e)) from None

    def _to_vllm(self, delta: bool):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            n=self.n, temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
            stop=list(self.stop) or None, include_stop_str_in_output=bool(self.stop), seed=self.seed,
            logprobs=self.logprobs,
            output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
        )


def _logprob_entries(processor: Any, completion: Any, top: int) -> list[dict] | None:
    """OpenAI's ``logprobs.content`` of a completion: each token, its log-prob and the top ``top``."""
    if completion.logprobs is None:
        return None
    from reasoner.models.inputs import token_texts

    entries = []
    for token_id, candidates in zip(completion.token_ids, completion.logprobs):
        chosen = candidates[token_id]
        text = chosen.decoded_token if chosen.decoded_token is not None else token_texts(processor, [token_id])[0]
        ranked = sorted(candidates.items(), key=lambda kv: -kv[1].logprob)[:top]
        entries.append({
            "token": text, "logprob": _finite(chosen.logprob), "bytes": list(text.encode()),
            "top_logprobs": [{"token": lp.decoded_token or "", "logprob": _finite(lp.logprob),
                              "bytes": list((lp.decoded_token or "").encode())} for _, lp in ranked],
        })
    return entries


def _finite(value: float) -> float:
    """JSON has no infinities: a log-prob of -inf is sent as the lowest float."""
    return value if math.isfinite(value) else -3.4e38


def _finished(completion: Any) -> bool:
    """True when generation ended on its own (EOS or the token budget), not at a stop string."""
    return not isinstance(completion.stop_reason, str)


class Generation:
    """One async vLLM engine generating for (image, prompt[, prefix]) requests.

    ``engine_factory(model_dir, **engine)`` builds the engine (default
    ``reasoner.models.vllm_backend.make_async_vllm_engine``).

    Cancellation: when the task awaiting :meth:`generate` or iterating :meth:`stream` is cancelled
    (Serve cancels a replica's request when its HTTP client disconnects, or when the ingress gives
    up on it), vLLM's ``AsyncLLM.generate`` aborts the engine request on the ``CancelledError`` it
    receives, so no tokens are generated for a client that is gone. ``running`` counts engine
    requests in flight, ``cancelled`` those aborted that way.
    """

    def __init__(self, model_dir: str, engine: dict[str, Any] | None = None,
                 engine_factory: Callable[..., Any] | None = None) -> None:
        from reasoner.models import load_processor
        from reasoner.models.vllm_backend import make_async_vllm_engine

        self.model_dir = model_dir
        self.processor = load_processor(model_dir)
        self.engine = (engine_factory or make_async_vllm_engine)(model_dir, **(engine or {}))
        self.running = 0
        self.cancelled = 0

    async def _outputs(self, engine_input: dict, params, request_id: str):
        """The engine's outputs for one input, counted in ``running`` (and ``cancelled``), with
        vLLM's refusal of the input raised as :class:`InputRejected`."""
        self.running += 1
        try:
            async for output in self.engine.generate(engine_input, params, request_id=request_id):
                yield output
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
        except ValueError as e:  # vLLM's input validation (e.g. longer than max_model_len)
            raise InputRejected(str(e), "messages") from None
        finally:
            self.running -= 1

    def _inputs(self, image: Image.Image, prompt: str, prefixes: Sequence[str] = ("",)) -> list[dict[str, Any]]:
        """Engine inputs of the prompt continued by each prefix (the prompt templated once)."""
        from reasoner.models.inputs import prompt_token_ids, tokenizer_of

        ids = prompt_token_ids(self.processor, prompt)
        tokenizer = tokenizer_of(self.processor)
        return [{"prompt_token_ids": ids + (tokenizer(p, add_special_tokens=False)["input_ids"] if p else []),
                 "multi_modal_data": {"image": image}} for p in prefixes]

    async def _final(self, engine_input: dict, params) -> Any:
        final = None
        async for output in self._outputs(engine_input, params, f"gen-{next(_request_ids)}"):
            final = output
        return final

    async def generate(self, image: Image.Image, prompt: str, options: SamplingOptions,
                       prefixes: Sequence[str] = ("",)) -> dict[str, Any]:
        """``options.n`` completions of each prefix (concurrently): ``{"prompt_tokens": int,
        "outputs": [[{"text", "finished", "finish_reason", "num_tokens", "logprobs"}, ...] per prefix]}``.
        ``text`` holds a stop string it stopped at."""
        params = options.to_vllm()
        inputs = self._inputs(image, prompt, prefixes)
        finals = await asyncio.gather(*(self._final(i, params) for i in inputs))
        top = options.logprobs or 0
        outputs = [[{"text": c.text, "finished": _finished(c), "finish_reason": c.finish_reason,
                     "num_tokens": len(c.token_ids),
                     "logprobs": _logprob_entries(self.processor, c, top) if options.logprobs is not None else None}
                    for c in sorted(final.outputs, key=lambda c: c.index)] for final in finals]
        return {"prompt_tokens": len(inputs[0]["prompt_token_ids"]), "outputs": outputs}

    async def stream(self, image: Image.Image, prompt: str, options: SamplingOptions) -> AsyncIterator[dict]:
        """Deltas as they come: ``{"index", "text", "finish_reason", "num_tokens", "logprobs"}`` per
        completion and step; a last item ``{"usage": {...}}``."""
        params = options.to_vllm(delta=True)
        (engine_input,) = self._inputs(image, prompt)
        completion_tokens = 0
        top = options.logprobs or 0
        async for output in self._outputs(engine_input, params, f"stream-{next(_request_ids)}"):
            for c in output.outputs:
                completion_tokens += len(c.token_ids)
                yield {"index": c.index, "text": c.text, "finish_reason": c.finish_reason,
                       "logprobs": _logprob_entries(self.processor, c, top) if options.logprobs is not None else None}
        prompt_tokens = len(engine_input["prompt_token_ids"])
        yield {"usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}}

    def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.shutdown()
