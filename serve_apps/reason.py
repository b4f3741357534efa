"""Stage (D) on Ray Serve: a generator, the DPO verifier and an OpenAI-compatible reasoning API.

    serve run serve_apps.reason:build_app run_dir=runs/default
    serve run serve_apps.reason:build_app model=/path/to/model        # a bare model, no verifier
    serve run serve_apps.reason:build_app run_dir=runs/r1 config=jobs/configs/h100.yaml serve.n=16

Three deployments, named as serve configs address them: ``Generator`` (vLLM's async engine over
the generator model, ``reasoner.serving.generator``), ``Verifier`` (the DPO model's implicit
reward against its reference, both scored in one batched call per model,
``reasoner.serving.verifier``; a bare model or a non-DPO verifier scores by mean likelihood), both
in ``serve_apps/engines.py``, and ``ReasonAPI`` (this FastAPI ingress). Routes, as DESIGN.md gives them:

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

Under load and attack (``serve.limits``, ``reasoner.serving.config.LimitsConfig``): a key over its
rate is answered 429 with ``Retry-After``; a body, image, ``n``, ``max_tokens``, beam width,
expansions, step budget, question or candidate over its cap 400 (413 for the body) naming the field
and the cap; a request over ``request_timeout_s`` 504; a full queue 503 with ``Retry-After`` (Serve's
``max_queued_requests`` on every deployment). A request whose client disconnects or whose time runs
out is cancelled down to the engine (vLLM aborts it). ``serve.generator_max_replicas`` /
``verifier_max_replicas`` turn on Serve autoscaling. Metrics: ``reasoner.serving.metrics``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from starlette.exceptions import HTTPException as StarletteHTTPException

from reasoner.serving.generator import InputRejected
from serve_apps.engines import Generator, ModelSource, Verifier
from serve_apps.limits import (
    ERROR_RESPONSES,
    BodyLimit,
    BodyTooLarge,
    RateLimiter,
    check_caps,
    openapi_with_caps,
)
from serve_apps.protocol import (
    APIError,
    ChatCompletionRequest,
    ReasoningOptions,
    ReasonRequest,
    VerifyRequest,
    parse_messages,
    prompt_for,
    validation_error,
)

logger = logging.getLogger("ray.serve.reasoner")
OPEN_PATHS = ("/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect")


app = FastAPI(title="reasoner", version="0.1.0",
              description="Chain-of-thought answers from a vision-language model, reranked by a DPO verifier.")


# Refusals counted in reasoner_api_rejected_requests, by the error's code.
_REFUSAL_REASONS = {"cap_exceeded": "cap", "request_timeout": "timeout", "queue_full": "backpressure",
                    "rate_limit_exceeded": "rate_limit", "invalid_api_key": "auth"}


ROUTES = ("/v1/chat/completions", "/v1/reason", "/v1/verify", "/v1/models", "/healthz")


def _app_path(scope) -> str:
    """The path within the app (Serve's route prefix is the ASGI ``root_path``, part of ``path``)."""
    return scope.get("path", "").removeprefix(scope.get("root_path", "").rstrip("/")) or "/"


def _refused(request_app, path: str, reason: str) -> None:
    metrics = getattr(request_app.state, "metrics", None)
    if metrics is not None:  # any other path is "other": a metric tag must not take a client's values
        metrics.refused(path if path in ROUTES else "other", reason)


def _error_response(request: Request, exc: APIError) -> JSONResponse:
    if exc.code in _REFUSAL_REASONS:
        _refused(request.app, _app_path(request.scope), _REFUSAL_REASONS[exc.code])
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=exc.headers)


@app.exception_handler(APIError)
async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return _error_response(request, exc)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's and Starlette's own refusals (a body that is not UTF-8, an unknown path, a wrong
    method) in OpenAI's error JSON like every other."""
    error = APIError(str(exc.detail), status=exc.status_code,
                     type="invalid_request_error" if exc.status_code < 500 else "server_error")
    return JSONResponse(error.to_json(), status_code=exc.status_code, headers=getattr(exc, "headers", None))


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    error = validation_error(exc)
    return JSONResponse(error.to_json(), status_code=error.status)


def _api_keys() -> frozenset[str]:
    """The keys ``REASONER_API_KEYS`` lists (comma-separated), read from this process's environment."""
    return frozenset(k.strip() for k in os.environ.get("REASONER_API_KEYS", "").split(",") if k.strip())


def _queue_full(exc: BackPressureError | DeploymentUnavailableError) -> APIError:
    retry = getattr(exc, "retry_after_s", None)
    retry = str(max(1, math.ceil(retry))) if retry else "1"
    return APIError("the server is at capacity (its queues are full: serve.limits.max_queued_requests); retry in "
                    f"{retry} s", status=503, type="server_error", code="queue_full", headers={"Retry-After": retry})


@app.middleware("http")
async def _auth_and_log(request: Request, call_next):
    """Bearer keys (when ``REASONER_API_KEYS`` is set) and their request rate, a 500 in OpenAI's form
    for an engine fault, and one log line per request with its strategy and time."""
    start = time.perf_counter()
    keys = _api_keys()
    if keys and _app_path(request.scope) not in OPEN_PATHS:
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.startswith("Bearer ") else ""
        if key not in keys:
            return _error_response(request, APIError(
                "a valid API key is required: send 'Authorization: Bearer <key>'", status=401,
                type="authentication_error", code="invalid_api_key"))
        limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
        wait_s = limiter.acquire(key) if limiter is not None else 0.0
        if wait_s > 0:
            return _error_response(request, limiter.refusal(wait_s))
    try:
        response = await call_next(request)
    except BodyTooLarge:
        raise  # BodyLimit, outside this middleware, answers 413
    except (BackPressureError, DeploymentUnavailableError) as e:
        response = _error_response(request, _queue_full(e))
    except Exception:  # noqa: BLE001 - an engine fault: answer 500 and keep serving
        logger.exception("%s %s failed", request.method, request.url.path)
        error = APIError("internal error while serving the request", status=500, type="server_error")
        response = JSONResponse(error.to_json(), status_code=500)
    logger.info("%s %s %d strategy=%s %.0f ms", request.method, request.url.path, response.status_code,
                getattr(request.state, "strategy", "-"), 1000 * (time.perf_counter() - start))
    return response


# Outermost (added last): a body over serve.limits.max_body_bytes never reaches a route.
app.add_middleware(BodyLimit, on_refusal=lambda scope: _refused(app, _app_path(scope), "body_size"))


@serve.deployment(name="ReasonAPI")
@serve.ingress(app)
class ReasonAPI:
    """The HTTP face: parses and checks requests, runs strategies over the two deployments."""

    def __init__(self, generator, verifier, serve_config, model_name: str) -> None:
        from reasoner.serving.config import ServeConfig
        from reasoner.serving.metrics import IngressMetrics

        self.generator, self.verifier = generator, verifier
        self.config: ServeConfig = serve_config
        self.limits = serve_config.limits
        self.model_name = model_name
        self.created = int(time.time())
        self.metrics = IngressMetrics()
        # The middleware reads the caps, the key buckets and the metrics from the app's state.
        app.state.limits = self.limits
        app.state.rate_limiter = RateLimiter(self.limits.requests_per_minute, self.limits.burst)
        app.state.metrics = self.metrics
        # The OpenAPI document states this server's caps (its maxima are serve.limits'). Made on the
        # first request for it, after FastAPI has added the route prefix to its servers.
        app.openapi_schema = None

        def openapi() -> dict:
            if app.openapi_schema is None:
                openapi_with_caps(FastAPI.openapi(app), self.limits)
            return app.openapi_schema

        app.openapi = openapi

    # ------------------------------------------------------------------------------ helpers

    async def _within_limits(self, awaitable):
        """Await ``awaitable`` within ``serve.limits.request_timeout_s`` (504 after it, its engine
        calls cancelled); a full queue is a 503, an input an engine refuses a 400."""
        timeout = self.limits.request_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await awaitable
        except TimeoutError as e:
            raise APIError(f"the request took longer than this server's limit of {timeout:g} s "
                           "(serve.limits.request_timeout_s); its generation was cancelled: ask for fewer "
                           "candidates or tokens", status=504, type="server_error", code="request_timeout") from e
        except (BackPressureError, DeploymentUnavailableError) as e:
            raise _queue_full(e) from e
        except InputRejected as e:
            raise APIError(f"the engine refused the request: {e}", param=e.param) from e

    @staticmethod
    async def _call(response, awaitable=None):
        """Await a deployment handle's ``response`` (or ``awaitable``, a step of it); if this request
        is cancelled (its client went away, its time ran out), cancel the call too, so the engine
        aborts it."""
        try:
            return await (response if awaitable is None else awaitable)
        except asyncio.CancelledError:
            response.cancel()
            raise

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise APIError(f"the model {model!r} does not exist; this server serves {self.model_name!r}",
                           status=404, param="model", code="model_not_found")

    def _settings(self, options: ReasoningOptions, temperature, top_p, max_tokens, seed):
        from reasoner.serving.strategies import ReasonSettings

        c = self.config
        greedy = options.strategy in ("direct", "cot")
        temperature = temperature if temperature is not None else (0.0 if greedy else c.temperature)
        samples = (options.expansions or c.expansions) if options.strategy == "beam" else (options.n or c.n)
        if not greedy and temperature == 0 and samples > 1:  # vLLM samples one sequence greedily
            raise APIError(f"temperature 0 samples greedily, one candidate: strategy {options.strategy!r} draws "
                           f"{samples}; give a temperature above 0", param="temperature")
        return ReasonSettings(
            strategy=options.strategy, n=options.n or c.n, temperature=temperature,
            top_p=1.0 if top_p is None else top_p, max_tokens=max_tokens or c.max_tokens, seed=seed,
            beam_width=options.beam_width or c.beam_width, expansions=options.expansions or c.expansions,
            max_steps=options.max_steps or c.max_steps, beta=options.beta,
            return_token_rewards=options.return_token_rewards)

    async def _parse(self, messages):
        """The request's image and question, within the caps. The image is decoded in a worker thread:
        a large one must not stall the other requests this replica's event loop serves."""
        limits = self.limits
        return await asyncio.to_thread(parse_messages, messages, max_pixels=limits.max_image_pixels,
                                       max_bytes=limits.max_body_bytes, max_text_chars=limits.max_text_chars)

    async def _query(self, messages, strategy: str):
        """The request's image and question, and the model prompt for ``strategy`` (a 400 naming
        ``messages`` when no question is left once an instruction is removed)."""
        query = await self._parse(messages)
        try:
            return query, prompt_for(query.question, strategy)
        except ValueError as e:
            raise APIError(str(e), param="messages") from e

    async def _reason(self, request: Request, messages, options: ReasoningOptions, temperature, top_p, max_tokens,
                      seed) -> dict:
        from reasoner.serving.strategies import reason

        request.state.strategy = options.strategy
        query, prompt = await self._query(messages, options.strategy)
        settings = self._settings(options, temperature, top_p, max_tokens, seed)

        async def generate(prompt_text, sampling, prefixes):
            return await self._call(self.generator.generate.remote(query.image, prompt_text, sampling,
                                                                   list(prefixes)))

        async def verify(prompt_text, texts, complete, beta):
            return await self._call(self.verifier.score.remote(query.image, prompt_text, list(texts),
                                                               list(complete), beta))

        answer = await self._within_limits(reason(prompt, settings, generate, verify))
        self.metrics.answered(answer)
        return answer

    # ------------------------------------------------------------------------------ routes

    @app.get("/healthz")
    async def healthz(self) -> dict:
        """Liveness: the ingress answers (the engines' replicas have Serve's own health checks)."""
        return {"status": "ok", "model": self.model_name}

    @app.get("/v1/models", responses={k: ERROR_RESPONSES[k] for k in (401, 429)})
    async def models(self) -> dict:
        """The one served model, as OpenAI lists models."""
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": self.created,
                                            "owned_by": "reasoner"}]}

    @app.post("/v1/reason", responses=ERROR_RESPONSES)
    async def reason_route(self, body: ReasonRequest, request: Request) -> dict:
        """A strategy's answer: the chosen rationale and answer, every candidate with its reward,
        the votes (voting strategies) and the scored beam tree (``beam``)."""
        self._check_model(body.model)
        check_caps(body, self.limits)
        return await self._reason(request, body.messages, body, body.temperature, body.top_p, body.max_tokens,
                                  body.seed)

    @app.post("/v1/verify", responses=ERROR_RESPONSES)
    async def verify_route(self, body: VerifyRequest, request: Request) -> dict:
        """The verifier alone: each candidate's reward (and token rewards), in the order given. The
        candidates are scored as rationales after the CoT prompt of the question."""
        from reasoner.answers import extract_answer
        from reasoner.serving.strategies import candidate_json

        self._check_model(body.model)
        check_caps(body, self.limits)
        request.state.strategy = "verify"
        query, prompt = await self._query(body.messages, "cot")
        kind, verdicts = await self._within_limits(self._call(self.verifier.score.remote(
            query.image, prompt, list(body.candidates), [True] * len(body.candidates), body.beta)))
        return {"verifier": kind, "candidates": [
            candidate_json(text, extract_answer(text), v, body.return_token_rewards)
            for text, v in zip(body.candidates, verdicts)]}

    @app.post("/v1/chat/completions", responses={
        200: {"description": "a chat completion, or with stream: true its server-sent events",
              "content": {"application/json": {}, "text/event-stream": {"schema": {
                  "type": "object", "description": "each event: data is a chat.completion.chunk's JSON, or [DONE]",
                  "properties": {"data": {"type": "string"}}}}}},
        **ERROR_RESPONSES})
    async def chat(self, body: ChatCompletionRequest, request: Request):
        """OpenAI's chat completions; with ``reasoning``, a strategy's chosen rationale."""
        from reasoner.serving.generator import SamplingOptions

        self._check_model(body.model)
        check_caps(body, self.limits)
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
        if body.temperature == 0 and body.n > 1:
            raise APIError(f"temperature 0 samples greedily, one completion: ask for n=1 (got {body.n}) or give a "
                           "temperature above 0", param="n")
        query = await self._parse(body.messages)
        options = SamplingOptions(
            n=body.n, temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p, max_tokens=body.max_tokens or self.config.max_tokens,
            stop=tuple(body.stop or ()), seed=body.seed,
            logprobs=(body.top_logprobs or 0) if body.logprobs else None)
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            # The first item is awaited here, so that a full queue, a refused input or a timeout
            # before any token is an HTTP status, not an event in a 200 stream.
            deadline = asyncio.get_running_loop().time() + self.limits.request_timeout_s
            items = self.generator.options(stream=True).stream.remote(query.image, query.question, options)
            try:
                first = await self._within_limits(self._call(items, items.__anext__()))
            except APIError:
                items.cancel()
                raise
            return StreamingResponse(self._stream(completion_id, options, include_usage, items, first, deadline),
                                     media_type="text/event-stream")
        generated = await self._within_limits(self._call(self.generator.generate.remote(
            query.image, query.question, options, [""])))
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

    async def _stream(self, completion_id: str, options, include_usage: bool, items, first: dict, deadline: float):
        """Server-sent events as OpenAI streams them: a role chunk per choice, deltas, [DONE].
        ``items`` is the Generator's stream, ``first`` its first item; the stream ends at ``deadline``
        (an error event), and a client that goes away cancels it."""
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
        async def rest():
            yield first
            async for item in items:
                yield item

        done = False
        try:
            async with asyncio.timeout_at(deadline):
                async for item in rest():
                    if "usage" in item:
                        if include_usage:
                            yield chunk([], item["usage"])
                        continue
                    yield chunk([{"index": item["index"], "delta": {"content": item["text"]},
                                  "finish_reason": item["finish_reason"],
                                  "logprobs": None if item["logprobs"] is None else {"content": item["logprobs"]}}])
            done = True
        except TimeoutError:  # the status line is sent: end the stream with the error
            error = APIError(f"the stream took longer than this server's limit of {self.limits.request_timeout_s:g} "
                             "s (serve.limits.request_timeout_s)", status=504, type="server_error",
                             code="request_timeout")
            yield f"data: {json.dumps(error.to_json())}\n\n"
        except Exception:  # noqa: BLE001 - the status line is sent: report the fault in the stream
            logger.exception("stream %s failed", completion_id)
            error = APIError("internal error while streaming", status=500, type="server_error")
            yield f"data: {json.dumps(error.to_json())}\n\n"
        finally:
            if not done:  # a timeout, a fault or a client gone: stop generating
                items.cancel()
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
    limits = section.limits
    # A full queue: 503 with Retry-After (Serve's own answer at the proxy, ours at the ingress).
    backpressure = {"status_code": 503, "retry_after_s": limits.retry_after_s}
    generator_app = Generator.options(
        ray_actor_options=actor, backpressure_config=backpressure,
        **section.replica_options("generator")).bind(generator, engine, config.cache_dir)
    verifier_app = Verifier.options(
        ray_actor_options=actor, backpressure_config=backpressure,
        **section.replica_options("verifier")).bind(policy, reference, beta, section.verifier_backend,
                                                    verifier_engine, config.cache_dir)
    # Its own log line per request (with the strategy) replaces Serve's access log.
    return ReasonAPI.options(
        ray_actor_options={"num_cpus": 0}, logging_config={"enable_access_log": False},
        max_ongoing_requests=limits.ingress_max_ongoing_requests,
        max_queued_requests=limits.ingress_max_queued_requests, backpressure_config=backpressure,
    ).bind(generator_app, verifier_app, section, section.model_name)


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
