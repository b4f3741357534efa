"""Teachers: who writes the rationales of stage (A), distillation (Zhang et al. 2024, section 3.1).

A teacher turns an example (a row of the examples artifact) into a chain-of-thought reply:

- ``OpenAITeacher``: any OpenAI-compatible chat endpoint through the ``openai`` async client:
  GPT-4o in production, a vLLM server, or our own endpoint. The image goes as a ``data:`` URL.
- ``GroundTruthTeacher``: the example's own ground-truth ``rationale`` (the synthetic suite has
  one), the offline teacher of the embedded default.

The prompt (``distillation_messages``). The paper gives GPT-4o the image and the question and
keeps a rationale only where the answer *predicted* by GPT-4o matches the ground truth (section
3.1; the exact prompt is in its appendix A, which the text we have does not include). So by
default the teacher is not told the short answer: a rationale written towards a given answer
can argue backwards from it, and the filter would then keep rationales whose steps never led
there. ``answer_hint=True`` adds the ground-truth answer as a hint, for datasets too hard for the
teacher to answer alone (more yield, weaker guarantee); the answer filter still applies.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import urlparse

from reasoner.data.images import decode_image, encode_png, to_data_url
from reasoner.prompts import ANSWER_MARKER, format_question, option_letters

if TYPE_CHECKING:
    from reasoner.rundir import RunDir

logger = logging.getLogger(__name__)

BUDGET_EXHAUSTED = "budget exhausted"
BUDGET_DIR = "_budget"  # DurableBudget ledgers, under the run directory
# Statuses that are the endpoint's or the setup's trouble, not the example's: the openai client
# retries 408, 409, 429 and 5xx; 401, 403 and 404 need a setting fixed (key, model, URL).
PENDING_STATUSES = frozenset({401, 403, 404, 408, 409, 429})
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})
PLACEHOLDER_API_KEY = "EMPTY"  # what vLLM's server accepts when started without --api-key

SYSTEM_PROMPT = "You answer questions about images, reasoning step by step."

# Image types GPT-4o takes as they are; anything else is re-encoded as PNG.
_MIME_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
                    (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


@dataclass(frozen=True)
class TeacherReply:
    """What a teacher answered for one example.

    ``text`` is None exactly when ``error`` says why. Two kinds of failure are not the example's
    and leave it pending (ask again on a rerun) rather than rejected: ``budget_exhausted``, a call
    never sent because the ``Budget`` was spent, and ``transient``, a transport failure that
    outlasted the client's retries (429, 5xx, a timeout, a lost connection) or an endpoint that
    refused the credentials or the model (401, 403, 404: fix the setting, then rerun).
    ``retries`` counts retries the client made before this reply succeeded; ``finish_reason`` is
    the endpoint's ("length": cut off at ``max_tokens``).
    """

    text: str | None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    budget_exhausted: bool = False
    retries: int = 0
    finish_reason: str | None = None
    transient: bool = False

    @property
    def ok(self) -> bool:
        """Whether the teacher produced text."""
        return self.text is not None

    @property
    def pending(self) -> bool:
        """Whether the failure was not the example's (budget or transport): ask again later."""
        return self.budget_exhausted or self.transient


def _exhausted() -> TeacherReply:
    return TeacherReply(text=None, error=BUDGET_EXHAUSTED, budget_exhausted=True)


@runtime_checkable
class Teacher(Protocol):
    """Writes a chain-of-thought reply for an example (a row of the examples artifact)."""

    async def generate(self, example: dict) -> TeacherReply:
        """One reply; never raises for a failed request (the reply's ``error`` says why)."""
        ...

    async def generate_many(self, examples: list[dict]) -> list[TeacherReply]:
        """Replies for ``examples``, in input order."""
        ...


class Budget:
    """A spending limit shared by the calls of a teacher (and of any teachers given the same one).

    A call reserves one request before it is sent and adds its ``prompt + completion`` tokens when
    it returns. Once ``max_requests`` requests were sent or ``max_tokens`` tokens were spent,
    further calls are not sent. Requests are counted exactly; tokens can overshoot by what the
    calls already in flight spend (at most ``max_concurrency`` of them). A request counts once
    however many times the client retried it. This one lives in the process's memory; a
    ``DurableBudget`` keeps its spending in the run directory, and a ``SharedBudget`` lets the
    workers of a stage spend from one. None means no limit.

    Teachers call the coroutines :meth:`reserve` and :meth:`spend`, which every budget has.
    """

    def __init__(self, max_requests: int | None = None, max_tokens: int | None = None) -> None:
        for name, value in (("max_requests", max_requests), ("max_tokens", max_tokens)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"Budget {name}={value!r} is invalid: give a non-negative int, or None for no limit")
        self.max_requests, self.max_tokens = max_requests, max_tokens
        self.requests = 0
        self.tokens = 0

    @property
    def limited(self) -> bool:
        """Whether there is any limit."""
        return self.max_requests is not None or self.max_tokens is not None

    @property
    def exhausted(self) -> bool:
        """Whether no further request may be sent."""
        return ((self.max_requests is not None and self.requests >= self.max_requests)
                or (self.max_tokens is not None and self.tokens >= self.max_tokens))

    def try_reserve(self) -> bool:
        """Reserve one request; False (and nothing reserved) if the budget is spent."""
        if self.exhausted:
            return False
        self.requests += 1
        return True

    def record(self, tokens: int) -> None:
        """Add the tokens a finished request spent."""
        self.tokens += max(0, int(tokens))

    def state(self) -> dict[str, int | None]:
        """What was spent, and the limits."""
        return {"requests": self.requests, "tokens": self.tokens, "max_requests": self.max_requests,
                "max_tokens": self.max_tokens}

    async def reserve(self) -> bool:
        """:meth:`try_reserve`, as teachers call it."""
        return self.try_reserve()

    async def spend(self, tokens: int) -> None:
        """:meth:`record`, as teachers call it."""
        self.record(tokens)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(requests={self.requests}/{self.max_requests}, "
                f"tokens={self.tokens}/{self.max_tokens})")


class DurableBudget(Budget):
    """A ``Budget`` whose spending is kept in the run directory, so restarts and reruns of a stage
    spend from the same one: a JSON ledger, ``<run>/_budget/<stage>.json``.

    The ledger is written (atomically) before a reserved request is sent and after its tokens
    are known, so a process killed at any moment has counted every request it sent (tokens: all
    but those of the replies in flight). The limits are the caller's, not the ledger's: a rerun
    with a higher ``max_requests`` may send the difference. One process owns a ledger at a time:
    with several workers, hold it in one actor and give them ``SharedBudget`` s of it.
    """

    def __init__(self, run: RunDir, stage: str, max_requests: int | None = None,
                 max_tokens: int | None = None) -> None:
        super().__init__(max_requests, max_tokens)
        self.run, self.stage = run, stage
        ledger = run.read_json(*self.ledger_parts(stage)) or {}
        self.requests, self.tokens = int(ledger.get("requests", 0)), int(ledger.get("tokens", 0))

    @staticmethod
    def ledger_parts(stage: str) -> tuple[str, str]:
        """Where the ledger of ``stage`` lives in a run directory."""
        return BUDGET_DIR, f"{stage}.json"

    def _save(self) -> None:
        self.run.write_json({"stage": self.stage, **self.state()}, *self.ledger_parts(self.stage))

    def try_reserve(self) -> bool:
        """Reserve one request and write it down; False (nothing reserved) if the budget is spent."""
        if not super().try_reserve():
            return False
        try:
            self._save()
        except BaseException:  # not written down: not sent
            self.requests -= 1
            raise
        return True

    def record(self, tokens: int) -> None:
        super().record(tokens)
        if tokens > 0:
            self._save()


class SharedBudget:
    """The budget of another process, through a Ray actor handle (any object whose
    ``try_reserve.remote()`` and ``record.remote(tokens)`` return awaitables), so every worker
    of a stage spends from the one ``DurableBudget`` the actor holds."""

    def __init__(self, actor) -> None:
        self.actor = actor

    async def reserve(self) -> bool:
        return await self.actor.try_reserve.remote()

    async def spend(self, tokens: int) -> None:
        await self.actor.record.remote(tokens)

    def __repr__(self) -> str:
        return f"SharedBudget({self.actor!r})"


def image_data_url(image: bytes) -> str:
    """A ``data:`` URL of the example's image: PNG, JPEG and GIF as they are, others as PNG."""
    data = bytes(image)
    for signature, mime in _MIME_SIGNATURES:
        if data.startswith(signature):
            return to_data_url(data, mime)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return to_data_url(data, "image/webp")
    return to_data_url(encode_png(decode_image(data)), "image/png")


def distillation_text(example: dict, answer_hint: bool = False) -> str:
    """The text of the distillation request: the question, its options, how to answer."""
    choices = example.get("choices")
    question = format_question(example["question"], choices)
    if choices is not None:
        answer_form = f"the option's letter ({', '.join(option_letters(len(choices)))})"
    else:
        answer_form = "a short answer (a number, word or phrase)"
    lines = [
        question,
        "",
        "Reason step by step, one short step per line: read what you need from the image, then work it "
        "out. Do not number the steps.",
        f'End with the line "{ANSWER_MARKER} <answer>", where <answer> is {answer_form}.',
    ]
    if answer_hint:
        lines.append(f"Hint: the correct answer is {example['answers'][0]}. Derive it from the image; "
                     "do not mention the hint.")
    return "\n".join(lines)


def distillation_messages(example: dict, answer_hint: bool = False) -> list[dict]:
    """The chat messages that ask a teacher for a rationale: a system message, then the user's
    image (a ``data:`` URL ``image_url`` part, never a remote URL) and ``distillation_text``.

    ``answer_hint`` gives the ground-truth short answer as a hint (off by default; see the module
    docstring). Raises ValueError for an example without a usable question or image.
    """
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_data_url(example["image"])}},
            {"type": "text", "text": distillation_text(example, answer_hint)},
        ]},
    ]


class _GenerateMany:
    async def generate_many(self, examples: list[dict]) -> list[TeacherReply]:
        """Replies for ``examples``, in input order (run concurrently)."""
        return list(await asyncio.gather(*(self.generate(e) for e in examples)))


class GroundTruthTeacher(_GenerateMany):
    """The example's own ground-truth ``rationale`` as the reply (the synthetic suite's teacher)."""

    async def generate(self, example: dict) -> TeacherReply:
        """The example's ``rationale``; an error reply if it has none."""
        rationale = example.get("rationale")
        if not isinstance(rationale, str) or not rationale.strip():
            return TeacherReply(text=None, error="the example has no ground-truth rationale")
        return TeacherReply(text=rationale, finish_reason="stop")


def _is_local(base_url: str | None) -> bool:
    return base_url is not None and urlparse(base_url).hostname in LOCAL_HOSTS


def _describe(error: Exception) -> str:
    """A one-line account of a failed request."""
    status = getattr(error, "status_code", None)
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return f"{type(error).__name__}" + (f" (HTTP {status})" if status else "") + f": {message}"


def _transient(error: Exception) -> bool:
    """Whether a failed request should be asked again later rather than the example rejected:
    a lost connection or timeout, a status the client retries (408, 409, 429, 5xx), or one that
    a fixed setting cures (401, 403, 404). A 400 or 422 is about the request itself: final."""
    from openai import APIConnectionError, APIStatusError

    if isinstance(error, APIConnectionError):  # APITimeoutError is one
        return True
    if isinstance(error, APIStatusError):
        return error.status_code in PENDING_STATUSES or error.status_code >= 500
    return False


class OpenAITeacher(_GenerateMany):
    """A teacher behind an OpenAI-compatible chat endpoint (GPT-4o, a vLLM server, our own API).

    Retries are the ``openai`` client's own (``max_retries``), which do what a teacher needs
    (``openai/_base_client.py``, ``_should_retry`` and ``_calculate_retry_timeout``): they retry
    429 (rate limit), 5xx, timeouts and connection errors, and no other 4xx but 408 and 409 (and
    what the server marks with ``x-should-retry``); they wait what ``retry-after-ms`` or
    ``Retry-After`` asks (up to 120 s; a longer wait is not retried but raised), else back off
    exponentially, 0.5 s doubling to at most 8 s, less a random jitter of up to 25%. Writing our
    own would duplicate this, so the client is configured rather than wrapped. ``timeout_s`` is
    per attempt. (vLLM 0.32 also answers a retryable 500 when its multimodal cache drifts, seen
    after it refused a request with the same image; the retry resends the image and succeeds.)

    Args:
        model: the model name the endpoint serves ("gpt-4o"; vLLM: its ``--served-model-name``).
        base_url: the endpoint's ``.../v1``; None: ``OPENAI_BASE_URL``, else OpenAI's.
        api_key: None: ``OPENAI_API_KEY``. Required unless ``base_url`` is a local server
            (127.0.0.1, localhost), which gets a placeholder key.
        temperature, max_tokens: sampling of the rationale (greedy by default).
        timeout_s, max_retries: per-attempt timeout and retries of the ``openai`` client.
        max_concurrency: requests in flight at once (an ``asyncio.Semaphore``).
        budget: a ``Budget`` (or ``DurableBudget``, ``SharedBudget``); None: unlimited.
        answer_hint: give the teacher the ground-truth answer (see the module docstring).

    Environment variables are read here, at construction, never at import. The client is made
    lazily per event loop, so the teacher can serve several ``asyncio.run`` calls.
    """

    def __init__(self, model: str = "gpt-4o", *, base_url: str | None = None, api_key: str | None = None,
                 temperature: float = 0.0, max_tokens: int = 512, timeout_s: float = 60.0, max_retries: int = 5,
                 max_concurrency: int = 16, budget: Budget | SharedBudget | None = None,
                 answer_hint: bool = False) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"OpenAITeacher model={model!r} is invalid: give the served model's name, e.g. 'gpt-4o'")
        for name, value, low in (("max_tokens", max_tokens, 1), ("max_retries", max_retries, 0),
                                 ("max_concurrency", max_concurrency, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"OpenAITeacher {name}={value!r} is invalid: give an int >= {low}")
        if not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
            raise ValueError(f"OpenAITeacher timeout_s={timeout_s!r} is invalid: give seconds > 0, e.g. 60")
        if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            raise ValueError(f"OpenAITeacher temperature={temperature!r} is invalid: give a number in [0, 2]")
        self.model, self.temperature, self.max_tokens = model, float(temperature), max_tokens
        self.timeout_s, self.max_retries, self.max_concurrency = float(timeout_s), max_retries, max_concurrency
        self.budget = budget if budget is not None else Budget()
        self.answer_hint = answer_hint
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if not _is_local(self.base_url):
                where = self.base_url or "OpenAI's API (no base URL given, OPENAI_BASE_URL unset)"
                raise ValueError(f"no API key for the teacher at {where}: set OPENAI_API_KEY or pass api_key=...; "
                                 "only a local base_url (127.0.0.1, localhost) works without one")
            key = PLACEHOLDER_API_KEY
        self._api_key = key
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = None
        self._semaphore: asyncio.Semaphore | None = None

    def __repr__(self) -> str:  # never shows the key
        return (f"OpenAITeacher(model={self.model!r}, base_url={self.base_url!r}, "
                f"max_concurrency={self.max_concurrency}, max_retries={self.max_retries}, {self.budget!r})")

    def _client_for_loop(self):
        """The client and semaphore of the running loop (made on first use in each loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(api_key=self._api_key, base_url=self.base_url,
                                       timeout=self.timeout_s, max_retries=self.max_retries)
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
            self._loop = loop
        return self._client, self._semaphore

    async def aclose(self) -> None:
        """Close the current loop's HTTP client (optional; a new one is made on next use)."""
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.close()
        self._client = self._loop = self._semaphore = None

    async def generate(self, example: dict) -> TeacherReply:
        """Ask the endpoint for a rationale of ``example``.

        Returns the reply text and token usage; on a failure after the client's retries, an
        error reply (``transient`` for a transport failure); once the budget is spent, a
        ``budget_exhausted`` reply without sending.
        """
        from openai import OpenAIError

        try:
            messages = distillation_messages(example, self.answer_hint)
        except (KeyError, TypeError, ValueError) as e:
            return TeacherReply(text=None, error=f"cannot build the request: {type(e).__name__}: {e}")
        client, semaphore = self._client_for_loop()
        async with semaphore:
            if not await self.budget.reserve():
                return _exhausted()
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens)
                completion = raw.parse()
            except OpenAIError as e:
                logger.warning("teacher request for %s failed: %s", example.get("id"), _describe(e))
                return TeacherReply(text=None, error=_describe(e), transient=_transient(e))
        usage = completion.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        await self.budget.spend(prompt_tokens + completion_tokens)
        choice = completion.choices[0] if completion.choices else None
        text = choice.message.content if choice is not None else None
        if text is None:
            refusal = getattr(choice.message, "refusal", None) if choice is not None else None
            error = f"the teacher returned no text (refusal: {refusal})" if refusal else "the teacher returned no text"
            return TeacherReply(text=None, error=error, prompt_tokens=prompt_tokens,
                                completion_tokens=completion_tokens, retries=raw.retries_taken)
        return TeacherReply(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                            retries=raw.retries_taken, finish_reason=choice.finish_reason)
