"""The HTTP API's requests, and OpenAI chat messages turned into what the engines take.

Models here validate request bodies (``POST /v1/chat/completions``, ``/v1/reason``,
``/v1/verify``); ``parse_messages`` turns the validated messages into a ``Query`` (one decoded
image, one question) and ``prompt_for`` into the model prompt of a strategy. Every refusal is an
``APIError`` (OpenAI's error JSON) whose ``param`` names the offending field, so a client knows
what to fix. Pure: no Ray, no engine; pydantic and the repo's own modules only.

Security: images arrive only as ``data:image/...;base64,`` URLs and are decoded by
``reasoner.data.images.decode_image`` (bounded bytes and pixels, a short list of formats, no
pickle, no plugin guessing). An http(s), file or any other URL is refused without being fetched,
so the server can never be made to read its own files or reach another host (SSRF).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from PIL import Image
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from reasoner.data.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageError,
    decode_image,
)
from reasoner.prompts import COT_MC, COT_SHORT, DIRECT_MC, DIRECT_SHORT, instruction
from reasoner.serving.config import STRATEGIES

# Fields that only mean something to stage-level beam search: refused with other strategies
# rather than silently ignored.
BEAM_ONLY = ("beam_width", "expansions", "max_steps")

# Strict scalars: "4" is not an int and 1 is not a bool, as in OpenAI's API. Floats must be
# finite (Python's json, which Starlette uses, accepts NaN and Infinity).
_Int = Annotated[int, Field(strict=True)]
_Str = Annotated[str, Field(strict=True)]
_Bool = Annotated[bool, Field(strict=True)]
_Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_Positive = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0)]
_Temperature = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=2)]
_TopP = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0, le=1)]
_Tokens = Annotated[int, Field(strict=True, ge=1)]
# Counts whose upper bounds are the server's caps (``serve.limits``, ``check_caps``), not fixed here.
_Count = Annotated[int, Field(strict=True, ge=1)]
# A sampling seed: an int64, as OpenAI's (the engine's generator takes no more).
_Seed = Annotated[int, Field(strict=True, ge=-(2**63), le=2**63 - 1)]


class APIError(Exception):
    """An HTTP error answered as OpenAI's error JSON (what the ``openai`` client parses)."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None,
                 type: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.param, self.type, self.code = (
            message, status, param, type, code)
        self.headers = dict(headers or {})  # e.g. Retry-After of a 429 or 503

    def to_json(self) -> dict:
        """``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: _Str
    detail: Literal["auto", "low", "high"] | None = None  # accepted, ignored: one resolution


class ContentPart(BaseModel):
    """``{"type": "text", "text": ...}`` or ``{"type": "image_url", "image_url": {"url": ...}}``.

    One model rather than a discriminated union, so error locations stay the plain path of the
    JSON (``messages[0].content[1].image_url.url``) without pydantic's union tags in them.
    """

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "image_url"]
    text: _Str | None = None
    image_url: ImageURL | None = None

    @model_validator(mode="after")
    def _one_payload(self) -> ContentPart:
        if self.type == "text" and (self.text is None or self.image_url is not None):
            raise ValueError('a text part is {"type": "text", "text": <str>}')
        if self.type == "image_url" and (self.image_url is None or self.text is not None):
            raise ValueError('an image part is {"type": "image_url", "image_url": {"url": '
                             '"data:image/png;base64,..."}}')
        return self


class ChatMessage(BaseModel):
    """An OpenAI chat message. A str ``content`` is read as one text part.

    Roles other than "user" validate here so that ``parse_messages`` can refuse them with a
    message saying why; "developer" is OpenAI's newer name for "system".
    """

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: list[ContentPart]
    name: _Str | None = None  # OpenAI's participant name: accepted, ignored

    @field_validator("content", mode="before")
    @classmethod
    def _text_as_part(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [{"type": "text", "text": value}]
        if not isinstance(value, list):
            raise ValueError("must be a string or a list of text and image_url parts")
        return value


class ReasoningOptions(BaseModel):
    """The ``/v1/reason`` fields other than model and messages (the chat route's ``reasoning``).

    None means the server's default (the run's settings, e.g. the DPO run's beta).
    """

    model_config = ConfigDict(extra="forbid")
    strategy: _Str = Field("best_of_n", json_schema_extra={"enum": list(STRATEGIES)})
    n: _Count | None = None
    beam_width: _Count | None = None
    expansions: _Count | None = None
    max_steps: _Count | None = None
    beta: _Positive | None = None
    return_token_rewards: _Bool = False

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"must be one of {', '.join(STRATEGIES)}")
        return value

    @field_validator(*BEAM_ONLY)
    @classmethod
    def _beam_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        strategy = info.data.get("strategy")  # absent when strategy itself was invalid
        if value is not None and strategy is not None and strategy != "beam":
            raise ValueError(f"applies only to strategy 'beam', not {strategy!r}; leave it out")
        return value


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``: the OpenAI fields we honour, and ``reasoning``.

    The ``openai`` client sends only the arguments given (plus ``extra_body`` merged at the top
    level), so anything else is refused by name rather than ignored. Accepted and ignored:
    ``user``. ``frequency_penalty``/``presence_penalty`` are accepted only at their default 0
    (the engines sample without penalties; a client sending the default explicitly still works).
    ``max_completion_tokens`` is OpenAI's newer name of ``max_tokens`` and is folded into it.
    ``stop`` is normalised to a list. Field order matters: a cross-field check sits on the later
    field, so its error names that field.
    """

    model_config = ConfigDict(extra="forbid")
    model: _Str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    reasoning: ReasoningOptions | None = None
    n: _Count = 1
    temperature: _Temperature | None = None
    top_p: _TopP | None = None
    max_completion_tokens: _Tokens | None = None
    max_tokens: _Tokens | None = None
    stop: list[_Str] | None = None
    seed: _Seed | None = None
    logprobs: _Bool = False
    top_logprobs: Annotated[int, Field(strict=True, ge=0, le=20)] | None = None
    stream: _Bool = False
    stream_options: dict[str, Any] | None = None
    frequency_penalty: _Float | None = None
    presence_penalty: _Float | None = None
    user: _Str | None = None

    @field_validator("n")
    @classmethod
    def _n_with_reasoning(cls, value: int, info: ValidationInfo) -> int:
        if value != 1 and info.data.get("reasoning") is not None:
            raise ValueError("must be absent or 1 with reasoning: the number of candidates "
                             "is reasoning.n")
        return value

    @field_validator("max_tokens")
    @classmethod
    def _one_token_limit(cls, value: int | None, info: ValidationInfo) -> int | None:
        other = info.data.get("max_completion_tokens")
        if value is not None and other is not None and other != value:
            raise ValueError(f"disagrees with max_completion_tokens ({other}); send one")
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list) and (len(value) > 4 or "" in value):
            raise ValueError("takes up to 4 non-empty strings")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("needs logprobs: true")
        return value

    @field_validator("stream_options")
    @classmethod
    def _needs_stream(cls, value: dict | None, info: ValidationInfo) -> dict | None:
        if value is not None and not info.data.get("stream"):
            raise ValueError("only allowed with stream: true")
        return value

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None) -> float | None:
        if value not in (None, 0):
            raise ValueError("not supported: only 0 (the default) is accepted")
        return value

    @model_validator(mode="after")
    def _fold_max_completion_tokens(self) -> ChatCompletionRequest:
        if self.max_tokens is None:
            self.max_tokens = self.max_completion_tokens
        return self


class ReasonRequest(ReasoningOptions):
    """``POST /v1/reason``: the chat request's fields and the reasoning options, flat."""

    model: _Str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: _Temperature | None = None
    max_tokens: _Tokens | None = None
    top_p: _TopP | None = None
    seed: _Seed | None = None


class VerifyRequest(BaseModel):
    """``POST /v1/verify``: the verifier's rewards of given candidates (empty texts allowed:
    they are legitimate, if poor, responses; the list itself must not be empty)."""

    model_config = ConfigDict(extra="forbid")
    model: _Str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    candidates: list[_Str] = Field(min_length=1)
    beta: _Positive | None = None
    return_token_rewards: _Bool = True


@dataclass(frozen=True)
class Query:
    """One question about one image: what the engines take."""

    image: Image.Image  # RGB, fully loaded
    question: str  # the user's text parts joined with "\n", stripped


def parse_messages(messages: list[ChatMessage], *, max_pixels: int = DEFAULT_MAX_PIXELS,
                   max_bytes: int = DEFAULT_MAX_BYTES, max_text_chars: int | None = None) -> Query:
    """The ``Query`` of validated messages: exactly one user message with one image and text.

    The models were trained on one (image, question) turn without a system turn in their chat
    template, so system/developer and assistant messages are refused, not silently dropped.
    Structure is checked before the image is decoded, so a bad request costs no decoding.

    ``max_pixels`` and ``max_bytes`` bound the image, ``max_text_chars`` the question (the server's
    caps, ``serve.limits``).

    Raises:
        APIError: 400, ``param`` naming the message, part or field at fault.
    """
    if not messages:
        raise APIError("messages must hold one user message", param="messages")
    for i, message in enumerate(messages):
        if message.role in ("system", "developer"):
            raise APIError(f"{message.role} messages are not supported: the model's chat "
                           "template has no system turn; put instructions in the user message",
                           param=f"messages[{i}].role")
        if message.role == "assistant":
            raise APIError("multi-turn is not supported: send one user message with one image "
                           "and the question", param=f"messages[{i}].role")
    if len(messages) > 1:
        raise APIError("multi-turn is not supported: send exactly one user message",
                       param="messages[1]")
    where = "messages[0].content"
    images = [j for j, part in enumerate(messages[0].content) if part.type == "image_url"]
    if not images:
        raise APIError("the user message must hold one image_url part with a "
                       "data:image/...;base64, URL", param=where)
    if len(images) > 1:
        raise APIError("exactly one image per request is supported",
                       param=f"{where}[{images[1]}]")
    texts = [(part.text or "").strip() for part in messages[0].content if part.type == "text"]
    question = "\n".join(text for text in texts if text)
    if not question:
        raise APIError("the user message must hold the question as non-empty text", param=where)
    if max_text_chars is not None and len(question) > max_text_chars:
        raise APIError(f"the question is {len(question)} characters, more than this server's cap of "
                       f"{max_text_chars} (serve.limits.max_text_chars)", param=where, code="cap_exceeded")

    param = f"{where}[{images[0]}].image_url.url"
    url = messages[0].content[images[0]].image_url.url  # type: ignore[union-attr]
    # Checked here as well as in decode_image, to make the no-fetch rule explicit at the edge.
    if url.lstrip()[:5].lower() != "data:":
        raise APIError("image URLs are never fetched: send the image inline as a "
                       "data:image/...;base64, URL", param=param)
    try:
        image = decode_image(url, max_pixels=max_pixels, max_bytes=max_bytes)
    except ImageError as e:
        message = str(e)
        if message.endswith("(max_pixels)"):  # name the server's cap, not the decoder's argument
            message = (message.removesuffix("(max_pixels)").replace("the limit of", "this server's cap of")
                       + "(serve.limits.max_image_pixels)")
            raise APIError(message, param=param, code="cap_exceeded") from e
        raise APIError(message, param=param) from e
    return Query(image=image, question=question)


_INSTRUCTION_SUFFIX = re.compile(
    "(?:" + "|".join(re.escape(s) for s in (DIRECT_SHORT, DIRECT_MC, COT_SHORT, COT_MC))
    + r")\s*\Z", re.IGNORECASE)
# An option line: "A. text", "A) text" or "(A) text".
_OPTION = re.compile(r"\s*\(?([A-Z])[.)]\s+\S")


def _has_options(text: str) -> bool:
    """True when two adjacent lines are options with consecutive letters ("A. ..", "B. ..")."""
    letters = [m[1] if (m := _OPTION.match(line)) else None for line in text.splitlines()]
    return any(a and b and ord(b) == ord(a) + 1 for a, b in zip(letters, letters[1:]))


def prompt_for(question: str, strategy: str, choices_hint: bool | None = None) -> str:
    """The model prompt: the question, then the paper's instruction for the strategy.

    "direct" takes the direct instruction, every other strategy the CoT one (its candidates
    are rationales ending ``### Answer:``). The letter-answer form is used when ``choices_hint``
    is True, or, with ``choices_hint`` None, when the question holds option lines or already
    ended with a letter instruction; False forces the short-answer form. A question already
    ending with one of the four instructions has it replaced, so a client that copies the
    paper's prompt gets the strategy's instruction, not two.

    Raises:
        ValueError: unknown strategy, or no question left once any instruction is removed.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    body, letter_instruction = question.strip(), False
    if match := _INSTRUCTION_SUFFIX.search(body):
        letter_instruction = match[0].strip().lower() in (DIRECT_MC.lower(), COT_MC.lower())
        body = body[:match.start()].strip()
    if not body:
        raise ValueError("the question is empty once its instruction is removed")
    multiple_choice = (choices_hint if choices_hint is not None
                       else letter_instruction or _has_options(body))
    mode = "direct" if strategy == "direct" else "cot"
    return f"{body}\n{instruction(mode, multiple_choice)}"


# OpenAI fields this server does not implement, named as such instead of "unknown field".
_UNSUPPORTED = frozenset({
    "logit_bias", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
    "response_format", "audio", "modalities", "prediction", "reasoning_effort", "service_tier",
    "store", "metadata", "web_search_options", "verbosity", "prompt_cache_key",
    "safety_identifier",
})


def _param(loc: tuple[int | str, ...]) -> str | None:
    """``("messages", 0, "content")`` -> ``"messages[0].content"``."""
    out = ""
    for key in loc:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out or None


class _HasErrors(Protocol):
    def errors(self) -> Sequence[Mapping[str, Any]]: ...


def validation_error(exc: _HasErrors) -> APIError:
    """A 400 ``APIError`` for the first error of a pydantic ``ValidationError``.

    ``param`` is the location (``messages[0].content``); a leading ``body`` (FastAPI's
    ``RequestValidationError``, which has the same ``errors()``) is dropped, and a body that is
    not JSON has no param.
    """
    error = exc.errors()[0]
    loc = tuple(error.get("loc", ()))
    loc = loc[1:] if loc[:1] == ("body",) else loc
    kind, message = error.get("type"), str(error.get("msg", "invalid value"))
    param = None if kind == "json_invalid" else _param(loc)
    if kind == "extra_forbidden":
        field = loc[-1] if loc else "?"
        message = (f"{field!r} is not supported by this server" if field in _UNSUPPORTED
                   and len(loc) == 1 else f"unknown field {field!r}")
    elif kind == "missing":
        message = f"{param or 'the request body'} is required"
    else:
        message = message.removeprefix("Value error, ")
        shown = repr(error.get("input"))
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        message = f"{param or 'request'}: {message} (got {shown})"
    return APIError(message, param=param)
