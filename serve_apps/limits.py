"""The ingress's guards: caps on what a request asks for, per-key request rates, the body's size.

Pure Python and ASGI (no Ray). ``check_caps`` refuses a validated request over the server's caps
(400 naming the field and the cap); ``RateLimiter`` is a token bucket per API key (429);
``BodyLimit`` is an ASGI middleware that answers 413 for a body over the cap, from its
``Content-Length`` before reading it, or while reading a body sent without one. All answer in
OpenAI's error JSON (``ERROR_RESPONSES`` documents them in the OpenAPI document, and
``openapi_with_caps`` writes the caps into it). The caps come from ``serve.limits``
(``reasoner.serving.config.LimitsConfig``), which the ingress puts on its FastAPI app's ``state`` as
``limits``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel

from serve_apps.protocol import APIError, VerifyRequest


class RateLimiter:
    """Token buckets, one per key: ``burst`` requests at once, refilled at ``per_minute / 60`` a second.

    ``per_minute`` 0 turns the limit off. Each ReasonAPI replica keeps its own buckets, so with R
    replicas a key may reach up to R times the rate (Serve spreads a key's requests over them).
    Keys are the configured API keys only (a request is authenticated first), so the table stays small.
    """

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, time of last update)
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one request from ``key``'s bucket: 0.0 when allowed, else the seconds until it would be."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def refusal(self, wait_s: float) -> APIError:
        """The 429 of a key that must wait ``wait_s`` seconds (``Retry-After``, whole seconds, at least 1)."""
        retry = max(1, math.ceil(wait_s))
        return APIError(f"rate limit reached for this API key: {self.rate * 60:g} requests a minute, bursts of "
                        f"{self.burst} (serve.limits.requests_per_minute, serve.limits.burst); retry in {retry} s",
                        status=429, type="rate_limit_error", code="rate_limit_exceeded",
                        headers={"Retry-After": str(retry)})


class BodyTooLarge(Exception):
    """Raised into the app while it reads a body over the cap; ``BodyLimit`` answers it 413 (middleware
    between them must let it through)."""


def body_too_large(size: int | None, cap: int) -> APIError:
    got = f"{size} bytes" if size is not None else "more bytes than that"
    return APIError(f"request body is {got}, more than this server's cap of {cap} bytes "
                    "(serve.limits.max_body_bytes); images travel inline: send a smaller one", status=413,
                    code="cap_exceeded")


class BodyLimit:
    """ASGI middleware: a body over ``app.state.limits.max_body_bytes`` is answered 413 (OpenAI's JSON).

    A declared ``Content-Length`` over the cap is refused before anything is read; a body without
    one (chunked) is counted as it is received and refused once it passes the cap. ``on_refusal(scope)``
    is called for each refusal (the ingress counts them).
    """

    def __init__(self, app, on_refusal: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.on_refusal = on_refusal

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = getattr(getattr(scope.get("app"), "state", None), "limits", None)
        if limits is None:
            state = getattr(self.app, "state", None)  # scope["app"] is set by the app itself, further in
            limits = getattr(state, "limits", None)
        if limits is None:
            await self.app(scope, receive, send)
            return
        cap = limits.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await self._refuse(scope, send, body_too_large(int(declared), cap))
            return
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, send, body_too_large(None, cap))

    async def _refuse(self, scope, send, error: APIError) -> None:
        if self.on_refusal is not None:
            self.on_refusal(scope)
        body = json.dumps(error.to_json()).encode()
        await send({"type": "http.response.start", "status": error.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------- caps


class Caps(Protocol):
    """The caps a request is held to (``reasoner.serving.config.LimitsConfig`` has them)."""

    max_n: int
    max_tokens: int
    max_beam_width: int
    max_expansions: int
    max_steps: int
    max_candidates: int
    max_text_chars: int


# Request field -> the cap it is held to (a name of ``Caps``, and of serve.limits).
# max_completion_tokens first: the chat request folds it into max_tokens, and is reported by the name sent.
_CAPPED = {"n": "max_n", "max_completion_tokens": "max_tokens", "max_tokens": "max_tokens",
           "beam_width": "max_beam_width", "expansions": "max_expansions", "max_steps": "max_steps"}


def _over(param: str, value: int, cap_name: str, cap: int, what: str = "") -> APIError:
    return APIError(f"{param}={value}{what} is more than this server's cap of {cap} (serve.limits.{cap_name})",
                    param=param, code="cap_exceeded")


def check_caps(body: BaseModel, caps: Caps) -> None:
    """Refuse a validated request that asks for more than the server's caps: a 400 whose ``param``
    names the field (``n``, ``reasoning.beam_width``, ``candidates[3]`` ...) and whose message
    names the cap and its config key. Checked before any engine is asked for anything.

    Raises:
        APIError: 400, ``code`` "cap_exceeded".
    """
    def fields(model: BaseModel, prefix: str) -> None:
        for name, cap_name in _CAPPED.items():
            value = getattr(model, name, None)
            if isinstance(value, int) and value > getattr(caps, cap_name):
                raise _over(prefix + name, value, cap_name, getattr(caps, cap_name))

    fields(body, "")
    reasoning = getattr(body, "reasoning", None)
    if reasoning is not None:
        fields(reasoning, "reasoning.")
    if isinstance(body, VerifyRequest):
        if len(body.candidates) > caps.max_candidates:
            raise APIError(f"candidates holds {len(body.candidates)} texts, more than this server's cap of "
                           f"{caps.max_candidates} (serve.limits.max_candidates)", param="candidates",
                           code="cap_exceeded")
        for i, text in enumerate(body.candidates):
            if len(text) > caps.max_text_chars:
                raise APIError(f"candidates[{i}] is {len(text)} characters, more than this server's cap of "
                               f"{caps.max_text_chars} (serve.limits.max_text_chars)", param=f"candidates[{i}]",
                               code="cap_exceeded")


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error JSON, the body of every 4xx and 5xx this server answers."""

    error: ErrorBody


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "string"}}}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "a bad request or one over a cap; param names the field"},
    401: {"model": ErrorResponse, "description": "no valid API key (when REASONER_API_KEYS is set)"},
    404: {"model": ErrorResponse, "description": "an unknown model"},
    413: {"model": ErrorResponse, "description": "a body larger than serve.limits.max_body_bytes"},
    429: {"model": ErrorResponse, "description": "the key's request rate is used up", "headers": _RETRY_AFTER},
    500: {"model": ErrorResponse, "description": "an engine fault"},
    503: {"model": ErrorResponse, "description": "the queues are full (backpressure)", "headers": _RETRY_AFTER},
    504: {"model": ErrorResponse, "description": "the request took longer than serve.limits.request_timeout_s"},
}
"""The error answers of every route, for FastAPI's ``responses=`` (and so the OpenAPI document)."""


# Property -> cap of its integer (or its list's length, for candidates), in every request schema that has it.
_SCHEMA_CAPS = {**_CAPPED, "candidates": "max_candidates"}


def openapi_with_caps(schema: dict[str, Any], caps: Caps) -> dict[str, Any]:
    """``schema`` (FastAPI's OpenAPI document) with the server's caps as the ``maximum`` of the
    capped integers and ``maxItems`` of ``candidates``, so the document says what the server accepts.
    Changes ``schema`` in place and returns it."""
    components = schema.get("components", {}).get("schemas", {})
    for model in components.values():
        for prop, field in model.get("properties", {}).items():
            cap_name = _SCHEMA_CAPS.get(prop)
            for branch in [field, *field.get("anyOf", [])] if cap_name else ():
                if branch.get("type") == "integer":
                    branch["maximum"] = getattr(caps, cap_name)
                elif branch.get("type") == "array":
                    branch["maxItems"] = getattr(caps, cap_name)
    return schema
