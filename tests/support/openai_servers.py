"""OpenAI-compatible test servers on 127.0.0.1: a ground-truth teacher and a fault-injecting proxy.

``GroundTruthChatServer`` answers ``POST /v1/chat/completions`` like a teacher that knows the
synthetic suite: it finds the example by its question text in the user message and replies with
the example's ground-truth rationale (or, for configured questions, a wrong answer or a reply
without the ``### Answer:`` marker), as ``chat.completion`` JSON with ``usage``. It insists on the
wire format the teacher must send (an ``image_url`` part holding a ``data:`` URL) and records the
requests it saw and its largest number of requests in flight.

``FaultProxy`` sits in front of any such server and injects faults in a deterministic order:
429 with ``Retry-After`` / ``retry-after-ms``, any status code, a stall longer than the client's
timeout, a dropped connection; or, with ``rate``, a seeded random share of the requests fail with
faults drawn from ``pool`` (a flaky endpoint). It records every request it saw (arrival and
response times, the fault applied), so tests can count retries and measure the gap after a 429.

Both run an aiohttp application in a thread of their own with its own event loop, on a port the
OS picks, and are context managers::

    with GroundTruthChatServer({"What is 2 + 2?": "2 + 2 = 4.\\n### Answer: 4"}) as server, \\
            FaultProxy(server.url, [Fault.rate_limit(retry_after=1)]) as proxy:
        ...  # point the client at f"{proxy.url}/v1"
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web

logger = logging.getLogger(__name__)

MARKER = "### Answer:"


def request_text(body: dict) -> str:
    """All text of a chat request's messages (string contents and ``text`` parts), joined by lines."""
    texts = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(texts)


def _image_urls(body: dict) -> list[str]:
    urls = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    urls.append((part.get("image_url") or {}).get("url", ""))
    return urls


def _find_key(text: str, keys: Iterable[str]) -> str | None:
    """The longest of ``keys`` that occurs in ``text``, or None."""
    hits = [k for k in keys if k and k in text]
    return max(hits, key=len) if hits else None


def openai_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """An error response in OpenAI's JSON shape."""
    kind = {400: "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "server_error")
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(body, status=status, headers=dict(headers or {}))


class _ThreadedApp:
    """An aiohttp application served on 127.0.0.1 (a free port) from a thread and loop of its own."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port: int | None = None

    def _make_app(self) -> web.Application:  # pragma: no cover - overridden
        raise NotImplementedError

    async def _on_startup(self) -> None:
        """Hook run in the server's loop before it accepts connections."""

    async def _on_cleanup(self) -> None:
        """Hook run in the server's loop after it stopped."""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash, no ``/v1``)."""
        if self.port is None:
            raise RuntimeError(f"{type(self).__name__} is not started; call start() or use it as a context manager")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "_ThreadedApp":
        """Start serving; returns once the port accepts connections."""
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._serve())
            except BaseException as e:  # surfaced by start()
                errors.append(e)
            ready.set()
            if not errors:
                self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(timeout=30) or errors:
            raise RuntimeError(f"{type(self).__name__} did not start") from (errors[0] if errors else None)
        logger.info("%s serving on %s", type(self).__name__, self.url)
        return self

    async def _serve(self) -> None:
        await self._on_startup()
        self._runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock, shutdown_timeout=0.5).start()

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        if self._loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            await self._on_cleanup()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()
            self._loop = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class GroundTruthChatServer(_ThreadedApp):
    """A teacher that answers each question with its ground-truth rationale.

    Args:
        rationales: question text -> rationale (one step a line, ending in ``### Answer: ...``).
            A request is matched to the longest question that occurs in its text; keep questions
            unique (the suite repeats question texts over different images).
        wrong: questions answered with ``wrong_answer`` after the marker instead.
        no_marker: questions answered with the steps and "So the answer is X." without a marker.
        wrong_answer: the answer given for ``wrong`` questions.
        delay_s: time each request takes (in flight), so concurrency can be observed.
    """

    def __init__(self, rationales: Mapping[str, str], *, wrong: Iterable[str] = (),
                 no_marker: Iterable[str] = (), wrong_answer: str = "999999", delay_s: float = 0.0) -> None:
        super().__init__()
        self.rationales = dict(rationales)
        self.wrong, self.no_marker = set(wrong), set(no_marker)
        self.wrong_answer, self.delay_s = wrong_answer, delay_s
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def reply_for(self, question: str) -> str:
        """The reply text this server gives to ``question``."""
        rationale = self.rationales[question]
        steps, _, answer = rationale.rpartition(MARKER)
        if question in self.wrong:
            return f"{steps}{MARKER} {self.wrong_answer}"
        if question in self.no_marker:
            return f"{steps}So the answer is {answer.strip()}."
        return rationale

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "ground-truth", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            return self._answer(await request.json())
        finally:
            self.in_flight -= 1

    def _answer(self, body: dict) -> web.Response:
        self.requests.append(body)
        urls = _image_urls(body)
        if not urls or not all(u.startswith("data:image/") for u in urls):
            return openai_error(400, f"expected image_url parts holding data: URLs, got {[u[:30] for u in urls]}")
        text = request_text(body)
        question = _find_key(text, self.rationales)
        if question is None:
            return openai_error(400, f"unknown question in {text[:200]!r}")
        reply = self.reply_for(question)
        prompt_tokens = len(text.split()) + 16 * len(urls)
        completion_tokens = max(1, len(reply.split()))
        return web.json_response({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "ground-truth"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


@dataclass(frozen=True)
class Fault:
    """One injected fault: ``kind`` is "status" (answer ``status`` with ``headers``), "stall" (wait
    ``seconds``, then 504) or "drop" (close the connection without a response)."""

    kind: str
    status: int = 500
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0

    @classmethod
    def rate_limit(cls, retry_after: float | None = 1, retry_after_ms: int | None = None) -> "Fault":
        """429 with ``Retry-After`` (seconds) and/or ``retry-after-ms`` (either may be None)."""
        headers = []
        if retry_after is not None:
            headers.append(("Retry-After", f"{retry_after:g}"))
        if retry_after_ms is not None:
            headers.append(("retry-after-ms", str(retry_after_ms)))
        return cls("status", 429, tuple(headers))

    @classmethod
    def error(cls, status: int = 500) -> "Fault":
        """A plain error status (500, 503, 400, ...)."""
        return cls("status", status)

    @classmethod
    def stall(cls, seconds: float) -> "Fault":
        """Hold the request ``seconds`` (longer than the client's timeout), then answer 504."""
        return cls("stall", 504, seconds=seconds)

    @classmethod
    def drop(cls) -> "Fault":
        """Close the connection without answering."""
        return cls("drop")


@dataclass
class ProxyEvent:
    """One request the proxy saw."""

    index: int
    arrived: float  # time.monotonic()
    key: str | None  # the ``match`` key the request's text contained, if any
    fault: Fault | None
    status: int | None = None  # what the client got (None: dropped)
    responded: float | None = None


class FaultProxy(_ThreadedApp):
    """A reverse proxy that injects faults in a deterministic order, then forwards to ``upstream``.

    Args:
        upstream: base URL of the real server (``http://127.0.0.1:<port>``).
        faults: faults for the requests that match no ``match`` key, in arrival order (None:
            forward that request); once used up, every request is forwarded.
        match: text -> faults for the requests whose messages contain that text (e.g. a question),
            applied to that text's 1st, 2nd, ... request; the longest matching key wins.
        rate, pool, seed: each request that the above leave unfaulted fails with probability
            ``rate``, with a fault drawn from ``pool`` (``random.Random(seed)``, in arrival order:
            deterministic when requests arrive one at a time).

    ``events`` lists every request seen, ``count`` is how many.
    """

    def __init__(self, upstream: str, faults: Sequence[Fault | None] = (), *,
                 match: Mapping[str, Sequence[Fault | None]] | None = None, rate: float = 0.0,
                 pool: Sequence[Fault] = (), seed: int = 0) -> None:
        super().__init__()
        if rate and not pool:
            raise ValueError("FaultProxy: a fault rate needs a pool of faults to draw from")
        self.upstream = upstream.rstrip("/")
        self._sequence, self._position = list(faults), 0
        self._match = {k: list(v) for k, v in (match or {}).items()}
        self._rate, self._pool, self._random = rate, list(pool), random.Random(seed)
        self._used: dict[str, int] = defaultdict(int)
        self.events: list[ProxyEvent] = []
        self._session: aiohttp.ClientSession | None = None

    @property
    def count(self) -> int:
        """How many requests the proxy saw."""
        return len(self.events)

    def events_for(self, key: str) -> list[ProxyEvent]:
        """The requests whose text contained the ``match`` key ``key``, in arrival order."""
        return [e for e in self.events if e.key == key]

    async def _on_startup(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))

    async def _on_cleanup(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def _next_fault(self, key: str | None) -> Fault | None:
        fault = self._scripted_fault(key)
        if fault is None and self._rate and self._random.random() < self._rate:
            fault = self._random.choice(self._pool)
        return fault

    def _scripted_fault(self, key: str | None) -> Fault | None:
        if key is not None:
            faults, used = self._match[key], self._used[key]
            self._used[key] += 1
            return faults[used] if used < len(faults) else None
        self._position += 1
        return self._sequence[self._position - 1] if self._position <= len(self._sequence) else None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        raw = await request.read()
        try:
            text = request_text(json.loads(raw)) if raw else ""
        except (ValueError, AttributeError):
            text = ""
        key = _find_key(text, self._match)
        fault = self._next_fault(key)
        event = ProxyEvent(len(self.events), arrived, key, fault)
        self.events.append(event)
        logger.debug("proxy request %d key=%r fault=%s", event.index, key, fault)
        response = await self._respond(request, raw, fault)
        event.status = None if response is None else response.status
        event.responded = time.monotonic()
        if response is None:  # dropped: the transport is closed, nothing is written
            raise asyncio.CancelledError
        return response

    async def _respond(self, request: web.Request, raw: bytes, fault: Fault | None) -> web.StreamResponse | None:
        if fault is None:
            return await self._forward(request, raw)
        if fault.kind == "drop":
            request.transport.abort()
            return None
        if fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
            return openai_error(504, "stalled by FaultProxy")
        return openai_error(fault.status, f"injected by FaultProxy: HTTP {fault.status}", dict(fault.headers))

    async def _forward(self, request: web.Request, raw: bytes) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        async with self._session.request(request.method, f"{self.upstream}{request.rel_url}",
                                         data=raw, headers=headers) as upstream:
            body = await upstream.read()
            content_type = upstream.headers.get("Content-Type", "application/json")
            return web.Response(body=body, status=upstream.status, headers={"Content-Type": content_type})


def question_key(example: dict) -> str:
    """The text a server or proxy matches ``example``'s requests by (its formatted question)."""
    from reasoner.prompts import format_question

    return format_question(example["question"], example["choices"])


def unique_examples(items: Iterable[dict], limit: int | None = None) -> list[dict]:
    """The items whose ``question_key`` no earlier item has, so a ``GroundTruthChatServer`` can
    tell them apart by text (the suite repeats questions over different images)."""
    seen, out = set(), []
    for item in items:
        if question_key(item) not in seen:
            seen.add(question_key(item))
            out.append(item)
    return out[:limit]


def rationale_table(examples: Iterable[dict]) -> dict[str, str]:
    """``question_key`` -> ground-truth rationale, for ``GroundTruthChatServer``."""
    return {question_key(e): e["rationale"] for e in examples}
