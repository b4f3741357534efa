"""vLLM: the engine factory and the vLLM backend of the log-prob scorer.

Callers own engine lifetime (a Ray actor or Serve deployment builds one with
``make_vllm_engine`` and hands it to ``VLLMScorer``; ``shutdown_vllm_engine`` stops it).
vLLM is imported inside the functions: importing this module is cheap.

On CPU, the process that builds an engine must be importable by ``multiprocessing``'s spawn
(vLLM starts its engine core in a spawned process): a script needs the
``if __name__ == "__main__":`` guard. The CPU build reads ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV
cache), ``VLLM_CPU_OMP_THREADS_BIND`` and ``VLLM_CPU_NUM_OF_RESERVED_CPU`` from the environment:
set them in the job's ``runtime_env`` or the test's environment, not here.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasoner.models.checkpoint import check_model_dir, load_processor
from reasoner.models.inputs import encode_request, token_texts
from reasoner.models.scorer import ScoreRequest, TokenLogProbs

if TYPE_CHECKING:
    from vllm import LLM
    from vllm.lora.request import LoRARequest

logger = logging.getLogger(__name__)

DEFAULT_MAX_MODEL_LEN = 4096


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def engine_defaults(model_dir: str | Path) -> dict[str, Any]:
    """``vllm.LLM`` arguments for a model directory: one image a prompt; on CPU eager mode, fp32
    and no chunked prefill.

    ``max_model_len`` is the model's own limit, capped at ``DEFAULT_MAX_MODEL_LEN``.

    Chunked prefill is off on CPU because vLLM 0.32's CPU build kills the engine ("CPU Generator
    does not use offset", in ``_bookkeeping_sync``) when a step splits the prefill of a request
    that has its own ``seed``, and sampling seeds every request: with the CPU default of 4096
    tokens a step, any ``generate`` call holding more prompt tokens than that crashed.
    """
    model_dir = check_model_dir(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    limit = config.get("text_config", config).get("max_position_embeddings") or DEFAULT_MAX_MODEL_LEN
    on_cpu = _on_cpu()
    return dict(
        model=str(model_dir),
        # torch.compile costs 30-40 s of start-up on CPU for nothing at these sizes.
        enforce_eager=on_cpu,
        # The embedded default's models are small and fp32 matches the transformers scorer.
        dtype="float32" if on_cpu else "auto",
        max_model_len=min(int(limit), DEFAULT_MAX_MODEL_LEN),
        limit_mm_per_prompt={"image": 1},
        seed=0,
        **({"enable_chunked_prefill": False} if on_cpu else {}),
    )


def make_vllm_engine(model_dir: str | Path, **overrides: Any) -> LLM:
    """A ``vllm.LLM`` for ``model_dir`` with ``engine_defaults``, updated by ``overrides``.

    E.g. ``make_vllm_engine(path, enable_lora=True, max_lora_rank=8)`` for LoRA adapters, or
    ``dtype="bfloat16"``. Stop it with ``shutdown_vllm_engine``.
    """
    from vllm import LLM

    kwargs = engine_arguments(model_dir, **overrides)
    logger.info("starting vLLM engine: %s", kwargs)
    return LLM(**kwargs)


def engine_arguments(model_dir: str | Path, **overrides: Any) -> dict[str, Any]:
    """The engine arguments of ``make_vllm_engine`` and ``make_async_vllm_engine``: ``engine_defaults``
    updated by ``overrides``."""
    kwargs = {**engine_defaults(model_dir), **overrides}
    if kwargs.get("enable_chunked_prefill") is False and "max_num_batched_tokens" not in kwargs:
        # Without chunking a step must hold a whole prompt: vLLM refuses a budget below max_model_len.
        kwargs["max_num_batched_tokens"] = max(int(kwargs.get("max_model_len") or 0), DEFAULT_MAX_MODEL_LEN)
    return kwargs


def make_async_vllm_engine(model_dir: str | Path, **overrides: Any):
    """vLLM's ``AsyncLLM`` (the engine behind its OpenAI server) with the arguments of
    ``make_vllm_engine``: many concurrent requests, streamed outputs. Stop it with ``.shutdown()``."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    kwargs = engine_arguments(model_dir, **overrides)
    logger.info("starting vLLM async engine: %s", kwargs)
    return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))


def shutdown_vllm_engine(llm: LLM) -> None:
    """Stop ``llm``'s engine core process and free what it holds (the caller drops its references).

    vLLM 0.32's ``LLM`` has no ``shutdown``: this stops the engine core client, whose
    finaliser otherwise runs at interpreter exit, where it sometimes aborts the process
    ("terminate called without an active exception", code 134).
    """
    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
    gc.collect()


class VLLMScorer:
    """The vLLM backend: ``SamplingParams(max_tokens=1, prompt_logprobs=0)`` over prompt + response.

    vLLM returns, at each prompt position, the log-prob of the token actually there; the
    response's are the last ``len(response tokens)`` positions. Prompts go in as token ids
    (``encode_request``, the same tokenisation as ``TransformersScorer``) with the image;
    vLLM expands the image placeholder itself. ``processor`` defaults to the one saved with the
    engine's model; ``lora_request`` (a ``vllm.lora.request.LoRARequest``, engine built with
    ``enable_lora=True``) scores under an adapter, here or per call of ``score``.

    LoRA and ``prompt_logprobs`` in vLLM 0.32: an engine with ``enable_lora=True`` computes the
    prompt log-probs of a step with the LoRA mapping of its sampled tokens, one row a request,
    which only broadcasts when the step holds one request (vllm-project/vllm#16668; on CPU
    several requests crash the engine core with an einsum shape error, with or without an
    adapter). So on such an engine requests are scored one at a time, which is exact (as peft,
    measured). Adapters on ``lm_head`` are not applied to prompt log-probs at all
    (vllm-project/vllm#51594): target the attention and MLP projections only.
    """

    def __init__(self, llm: LLM, processor: Any = None, *, lora_request: LoRARequest | None = None) -> None:
        self.llm = llm
        self.processor = processor if processor is not None else load_processor(llm.model_config.model)
        self.lora_request = lora_request
        self.lora_enabled = getattr(llm.llm_engine.vllm_config, "lora_config", None) is not None

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, **engine_overrides: Any) -> VLLMScorer:
        """A scorer over a new engine for ``model_dir`` (``make_vllm_engine``)."""
        return cls(make_vllm_engine(model_dir, **engine_overrides), load_processor(model_dir))

    def score(
        self, requests: Sequence[ScoreRequest], *, lora_request: LoRARequest | None = None
    ) -> list[TokenLogProbs]:
        from vllm import SamplingParams

        encoded = [encode_request(self.processor, r) for r in requests]
        if not encoded:
            return []
        prompts = [
            {"prompt_token_ids": e.prompt_ids + e.response_ids, "multi_modal_data": {"image": e.image}}
            for e in encoded
        ]
        # detokenize=False: the tokens' texts come from token_texts; vLLM decoding every prompt
        # position's token cost up to half of a batched call (benchmarks/verifier.py).
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0, detokenize=False)
        lora_request = lora_request or self.lora_request
        if lora_request is not None and not self.lora_enabled:
            raise ValueError(
                "a LoRA adapter needs an engine built with enable_lora=True: make_vllm_engine(..., enable_lora=True)"
            )
        if self.lora_enabled:  # one request a step: see the class docstring
            outputs = [self.llm.generate([p], params, use_tqdm=False, lora_request=lora_request)[0] for p in prompts]
        else:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for e, out in zip(encoded, outputs):
            n = len(e.response_ids)
            if n == 0:
                results.append(TokenLogProbs([], [], []))
                continue
            ids = list(out.prompt_token_ids[-n:])
            if ids != e.response_ids:
                raise RuntimeError(f"vLLM's prompt ends with {ids}, not the response tokens {e.response_ids}")
            logprobs = [entry[token].logprob for entry, token in zip(out.prompt_logprobs[-n:], ids)]
            results.append(TokenLogProbs(token_texts(self.processor, ids), ids, logprobs))
        return results
