"""Stage (D) on Ray Serve: a generator, the DPO verifier and an OpenAI-compatible reasoning API.

    serve run serve_apps.reason:build_app run_dir=runs/default
    serve run serve_apps.reason:build_app model=/path/to/model        # a bare model, no verifier
    serve run serve_apps.reason:build_app run_dir=runs/r1 config=jobs/configs/h100.yaml serve.n=16

Three deployments, named as serve configs address them: ``Generator`` (vLLM's async engine over
the generator model, ``reasoner.serving.generator``), ``Verifier`` (the DPO model's implicit
reward against its reference, both scored in one batched call per model,
``reasoner.serving.verifier``; a bare model or a non-DPO verifier scores by mean likelihood) and
``ReasonAPI`` (this FastAPI ingress). Routes, as DESIGN.md gives them:

- ``POST /v1/chat/completions``: OpenAI's chat API (``n``, ``temperature``, ``top_p``,
  ``max_tokens``, ``stop``, ``seed``, ``logprobs``, ``stream``); with ``reasoning`` in the body
  (``extra_body={"reasoning": {...}}`` from the ``openai`` client) the answer is a strategy's
  chosen rationale, and the whole ``/v1/reason`` answer rides along as ``reasoning``;
- ``POST /v1/reason``: ``direct | cot | majority | best_of_n | weighted_vote | beam``;
- ``POST /v1/verify``: the verifier on candidates made elsewhere; ``GET /v1/models``, ``GET /healthz``.

Arguments (``key=value``): ``run_dir`` or ``model``; ``config`` (a run config YAML, default the
embedded default's); any other dotted key is a config override (``engine.kv_cache_gib=2``,
``serve.generator=models/sft``). Engines take the run config's ``engine`` section, as every vLLM
stage does. ``REASONER_API_KEYS`` (comma-separated) turns on bearer-key checks; ``/healthz`` stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from serve_apps.protocol import (APIError, ChatCompletionRequest, ReasoningOptions, ReasonRequest, VerifyRequest,
                                 parse_messages, prompt_for, validation_error)

logger = logging.getLogger("ray.serve.reasoner")
OPEN_PATHS = ("/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect")


@dataclass(frozen=True)
class ModelSource:
    """A model to load on the replica: a run's artifact (``run_dir`` set) or a local directory."""

    path: str
    run_dir: str | None = None

    def open(self, stack: contextlib.ExitStack, cache_dir: str) -> str:
        """A local directory vLLM loads (a LoRA adapter merged into its base), held open by ``stack``."""
        if self.run_dir is None:
            return self.path
        from reasoner.rundir import RunDir
        from reasoner.training.export import engine_model_dir

        return stack.enter_context(engine_model_dir(RunDir(self.run_dir), self.path, os.path.expanduser(cache_dir)))


@serve.deployment(name="Generator")
class Generator:
    """One vLLM async engine over the generator model."""

    def __init__(self, source: ModelSource, engine: dict[str, Any], cache_dir: str) -> None:
        from reasoner.serving.generator import Generation

        self._stack = contextlib.ExitStack()
        self.generation = Generation(source.open(self._stack, cache_dir), engine)

    async def generate(self, image, prompt: str, options, prefixes: list[str]) -> dict:
        return await self.generation.generate(image, prompt, options, prefixes)

    async def stream(self, image, prompt: str, options):
        async for item in self.generation.stream(image, prompt, options):
            yield item

    def __del__(self) -> None:
        generation = getattr(self, "generation", None)
        if generation is not None:
            generation.close()
            self._stack.close()


@serve.deployment(name="Verifier")
class Verifier:
    """The policy (and reference) scorers of the verifier; see ``reasoner.serving.verifier``."""

    def __init__(self, policy: ModelSource, reference: ModelSource | None, beta: float | None, backend: str,
                 engine: dict[str, Any], cache_dir: str) -> None:
        from reasoner.models.scorer import make_scorer
        from reasoner.serving.verifier import Verifier as Scoring

        self._stack = contextlib.ExitStack()
        policy_scorer = make_scorer(policy.open(self._stack, cache_dir), backend, engine=engine)
        reference_scorer = None if reference is None else make_scorer(reference.open(self._stack, cache_dir),
                                                                      backend, engine=engine)
        self.verifier = Scoring(policy_scorer, reference_scorer, beta)

    async def score(self, image, prompt: str, texts: list[str], complete: list[bool], beta: float | None):
        # The scorers block: run them off the event loop (the Verifier serialises them itself).
        verdicts = await asyncio.to_thread(self.verifier.score, image, prompt, texts, complete, beta)
        return self.verifier.kind, verdicts


app = FastAPI(title="reasoner", version="0.1.0",
              description="Chain-of-thought answers from a vision-language model, reranked by a DPO verifier.")


@app.exception_handler(APIError)
async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return JSONResponse(exc.to_json(), status_code=exc.status)


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    error = validation_error(exc)
    return JSONResponse(error.to_json(), status_code=error.status)


def _api_keys() -> frozenset[str]:
    """The keys ``REASONER_API_KEYS`` lists (comma-separated), read from this process's environment."""
    return frozenset(k.strip() for k in os.environ.get("REASONER_API_KEYS", "").split(",") if k.strip())


@app.middleware("http")
async def _auth_and_log(request: Request, call_next):
    """Bearer keys (when ``REASONER_API_KEYS`` is set), a 500 in OpenAI's form for an engine fault,
    and one log line per request with its strategy and time."""
    start = time.perf_counter()
    keys = _api_keys()
    if keys and request.url.path not in OPEN_PATHS:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or header[7:].strip() not in keys:
            error = APIError("a valid API key is required: send 'Authorization: Bearer <key>'",
                             status=401, type="authentication_error", code="invalid_api_key")
            return JSONResponse(error.to_json(), status_code=401)
    try:
        response = await call_next(request)
    except Exception:  # noqa: BLE001 - an engine fault: answer 500 and keep serving
        logger.exception("%s %s failed", request.method, request.url.path)
        error = APIError("internal error while serving the request", status=500, type="server_error")
        response = JSONResponse(error.to_json(), status_code=500)
    logger.info("%s %s %d strategy=%s %.0f ms", request.method, request.url.path, response.status_code,
                getattr(request.state, "strategy", "-"), 1000 * (time.perf_counter() - start))
    return response


@serve.deployment(name="ReasonAPI")
@serve.ingress(app)
class ReasonAPI:
    """The HTTP face: parses and checks requests, runs strategies over the two deployments."""

    def __init__(self, generator, verifier, serve_config, model_name: str) -> None:
        from reasoner.serving.config import ServeConfig

        self.generator, self.verifier = generator, verifier
        self.config: ServeConfig = serve_config
        self.model_name = model_name
        self.created = int(time.time())

    # ------------------------------------------------------------------------------ helpers

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise APIError(f"the model {model!r} does not exist; this server serves {self.model_name!r}",
                           status=404, param="model", code="model_not_found")

    def _settings(self, options: ReasoningOptions, temperature, top_p, max_tokens, seed):
        from reasoner.serving.strategies import ReasonSettings

        c = self.config
        greedy = options.strategy in ("direct", "cot")
        return ReasonSettings(
            strategy=options.strategy, n=options.n or c.n,
            temperature=temperature if temperature is not None else (0.0 if greedy else c.temperature),
            top_p=1.0 if top_p is None else top_p, max_tokens=max_tokens or c.max_tokens, seed=seed,
            beam_width=options.beam_width or c.beam_width, expansions=options.expansions or c.expansions,
            max_steps=options.max_steps or c.max_steps, beta=options.beta,
            return_token_rewards=options.return_token_rewards)

    @staticmethod
    def _query(messages, strategy: str):
        """The request's image and question, and the model prompt for ``strategy`` (a 400 naming
        ``messages`` when no question is left once an instruction is removed)."""
        query = parse_messages(messages)
        try:
            return query, prompt_for(query.question, strategy)
        except ValueError as e:
            raise APIError(str(e), param="messages") from e

    async def _reason(self, request: Request, messages, options: ReasoningOptions, temperature, top_p, max_tokens,
                      seed) -> dict:
        from reasoner.serving.strategies import reason

        request.state.strategy = options.strategy
        query, prompt = self._query(messages, options.strategy)
        settings = self._settings(options, temperature, top_p, max_tokens, seed)

        async def generate(prompt_text, sampling, prefixes):
            return await self.generator.generate.remote(query.image, prompt_text, sampling, list(prefixes))

        async def verify(prompt_text, texts, complete, beta):
            return await self.verifier.score.remote(query.image, prompt_text, list(texts), list(complete), beta)

        return await reason(prompt, settings, generate, verify)

    # ------------------------------------------------------------------------------ routes

    @app.get("/healthz")
    async def healthz(self) -> dict:
        """Liveness: the ingress answers (the engines' replicas have Serve's own health checks)."""
        return {"status": "ok", "model": self.model_name}

    @app.get("/v1/models")
    async def models(self) -> dict:
        """The one served model, as OpenAI lists models."""
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": self.created,
                                            "owned_by": "reasoner"}]}

    @app.post("/v1/reason")
    async def reason_route(self, body: ReasonRequest, request: Request) -> dict:
        """A strategy's answer: the chosen rationale and answer, every candidate with its reward,
        the votes (voting strategies) and the scored beam tree (``beam``)."""
        self._check_model(body.model)
        return await self._reason(request, body.messages, body, body.temperature, body.top_p, body.max_tokens,
                                  body.seed)

    @app.post("/v1/verify")
    async def verify_route(self, body: VerifyRequest, request: Request) -> dict:
        """The verifier alone: each candidate's reward (and token rewards), in the order given. The
        candidates are scored as rationales after the CoT prompt of the question."""
        from reasoner.answers import extract_answer
        from reasoner.serving.strategies import candidate_json

        self._check_model(body.model)
        request.state.strategy = "verify"
        query, prompt = self._query(body.messages, "cot")
        kind, verdicts = await self.verifier.score.remote(query.image, prompt, list(body.candidates),
                                                          [True] * len(body.candidates), body.beta)
        return {"verifier": kind, "candidates": [
            candidate_json(text, extract_answer(text), v, body.return_token_rewards)
            for text, v in zip(body.candidates, verdicts)]}

    @app.post("/v1/chat/completions")
    async def chat(self, body: ChatCompletionRequest, request: Request):
        """OpenAI's chat completions; with ``reasoning``, a strategy's chosen rationale."""
        from reasoner.serving.generator import SamplingOptions

        self._check_model(body.model)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.reasoning is not None:
            if body.stream:
                raise APIError("stream is not supported with reasoning: a strategy answers once its candidates "
                               "are scored", param="stream")
            answer = await self._reason(request, body.messages, body.reasoning, body.temperature, body.top_p,
                                        body.max_tokens, body.seed)
            return {**self._completion(completion_id, [{"index": 0, "message": {"role": "assistant",
                                                                                  "content": answer["rationale"]},
                                                         "finish_reason": "stop", "logprobs": None}],
                                       answer["usage"]), "reasoning": answer}
        request.state.strategy = "chat"
        query = parse_messages(body.messages)
        options = SamplingOptions(
            n=body.n, temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p, max_tokens=body.max_tokens or self.config.max_tokens,
            stop=tuple(body.stop or ()), seed=body.seed,
            logprobs=(body.top_logprobs or 0) if body.logprobs else None)
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(self._stream(completion_id, query, options, include_usage),
                                     media_type="text/event-stream")
        generated = await self.generator.generate.remote(query.image, query.question, options, [""])
        outputs = generated["outputs"][0]
        choices = [{"index": i, "message": {"role": "assistant", "content": o["text"]},
                    "finish_reason": o["finish_reason"] or "stop",
                    "logprobs": None if o["logprobs"] is None else {"content": o["logprobs"]}}
                   for i, o in enumerate(outputs)]
        completion_tokens = sum(o["num_tokens"] for o in outputs)
        usage = {"prompt_tokens": generated["prompt_tokens"], "completion_tokens": completion_tokens,
                 "total_tokens": generated["prompt_tokens"] + completion_tokens}
        return self._completion(completion_id, choices, usage)

    def _completion(self, completion_id: str, choices: list[dict], usage: dict) -> dict:
        return {"id": completion_id, "object": "chat.completion", "created": int(time.time()),
                "model": self.model_name, "choices": choices, "usage": usage}

    async def _stream(self, completion_id: str, query, options, include_usage: bool):
        """Server-sent events as OpenAI streams them: a role chunk per choice, deltas, [DONE]."""
        created = int(time.time())

        def chunk(choices: list[dict], usage: dict | None = None) -> str:
            data = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                    "model": self.model_name, "choices": choices}
            if include_usage:
                data["usage"] = usage
            return f"data: {json.dumps(data)}\n\n"

        for index in range(options.n):
            yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None,
                          "logprobs": None}])
        try:
            async for item in self.generator.options(stream=True).stream.remote(query.image, query.question,
                                                                                 options):
                if "usage" in item:
                    if include_usage:
                        yield chunk([], item["usage"])
                    continue
                yield chunk([{"index": item["index"], "delta": {"content": item["text"]},
                              "finish_reason": item["finish_reason"],
                              "logprobs": None if item["logprobs"] is None else {"content": item["logprobs"]}}])
        except Exception:  # noqa: BLE001 - the status line is sent: report the fault in the stream
            logger.exception("stream %s failed", completion_id)
            error = APIError("internal error while streaming", status=500, type="server_error")
            yield f"data: {json.dumps(error.to_json())}\n\n"
        yield "data: [DONE]\n\n"


# ---------------------------------------------------------------------------------- building


def build_app(args: dict[str, str]) -> serve.Application:
    """The application for ``serve run serve_apps.reason:build_app key=value ...`` (see the module docstring)."""
    from jobs._common import DEFAULT_CONFIG
    from reasoner.config import load_run_config
    from reasoner.models.engine import engine_kwargs, ray_options

    args = {str(k): str(v) for k, v in (args or {}).items()}
    run_dir, model = args.pop("run_dir", None), args.pop("model", None)
    if (run_dir is None) == (model is None):
        raise ValueError("serve_apps.reason: give run_dir=<run> (a finished run: DPO verifier over its SFT "
                         "reference) or model=<dir> (a bare model, likelihood verifier), not both")
    config = load_run_config(args.pop("config", DEFAULT_CONFIG),
                             [f"{k}={v}" for k, v in args.items()] + ([f"run_dir={run_dir}"] if run_dir else []))
    section, engine = config.serve, engine_kwargs(config.engine)
    if model is not None:
        generator = policy = ModelSource(os.path.abspath(model))
        reference, beta = None, None
    else:
        generator, policy, reference, beta = _run_models(config)
    verifier_engine = dict(engine)
    if reference is not None and config.engine.on_gpu:  # two engines share the replica's GPUs
        verifier_engine["gpu_memory_utilization"] = config.engine.gpu_memory_utilization / 2
    actor = ray_options(config.engine)
    logger.info("serving %s: generator %s, verifier %s%s", run_dir or model, generator.path, policy.path,
                f" over {reference.path} (beta {beta})" if reference else " (likelihood)")
    generator_app = Generator.options(
        num_replicas=section.generator_replicas, max_ongoing_requests=section.max_ongoing_requests,
        ray_actor_options=actor).bind(generator, engine, config.cache_dir)
    verifier_app = Verifier.options(
        num_replicas=section.verifier_replicas, max_ongoing_requests=section.max_ongoing_requests,
        ray_actor_options=actor).bind(policy, reference, beta, section.verifier_backend, verifier_engine,
                                      config.cache_dir)
    # Its own log line per request (with the strategy) replaces Serve's access log.
    return ReasonAPI.options(ray_actor_options={"num_cpus": 0}, logging_config={"enable_access_log": False}).bind(
        generator_app, verifier_app, section, section.model_name)


def _run_models(config) -> tuple[ModelSource, ModelSource, ModelSource | None, float | None]:
    """The generator, verifier, reference and beta of a finished run (from its manifests)."""
    from reasoner.rundir import RunDir

    run, section = RunDir(config.run_dir), config.serve
    for artifact in {section.generator, section.verifier}:
        run.require(artifact)
    manifest = run.require(section.verifier)
    beta = manifest.get("beta")
    reference = section.reference or (manifest.get("base_model") if beta is not None else None)
    if reference is not None:
        run.require(reference)
        if beta is None:
            raise ValueError(f"serve.reference={reference!r} needs a DPO verifier: {run.path(section.verifier)} "
                             "records no beta (it was not trained by train_dpo)")
    source = lambda artifact: ModelSource(artifact, config.run_dir)  # noqa: E731
    return (source(section.generator), source(section.verifier), None if reference is None else source(reference),
            beta)
