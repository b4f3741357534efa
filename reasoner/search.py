"""Stage-level beam search over a verifier (LLaVA-CoT, Xu et al. 2024, section 4).

A response is a sequence of steps: the lines of a rationale (``step_format="lines"``, our CoT
format, ending at ``### Answer: <answer>``) or LLaVA-CoT's ``<SUMMARY>``, ``<CAPTION>``,
``<REASONING>``, ``<CONCLUSION>`` blocks (``"tags"``). At each step every active beam is extended
by K sampled continuations that stop at the step's end, the verifier scores every new prefix, and
the best B survive; a surviving prefix that is complete leaves the search. LLaVA-CoT compares
candidates pairwise with an LLM judge, one question at a time (``inference/demo``); here the
judge is any per-prefix scorer (the DPO implicit reward, a likelihood), and each step is one
batched ``generate`` and one batched ``score`` call, following the beam search of huggingface
search-and-learn (``src/sal/search/beam_search.py``).

The engine and the verifier are injected (STYLE 4): ``generate`` and ``score`` may be plain
functions over an offline engine (batch jobs, :func:`run_beam_search`) or coroutines over Ray
Serve deployment handles (serving, ``await`` :func:`beam_search`). Every scored step is kept as a
:class:`BeamNode`, the ``beam`` field of a ``/v1/reason`` answer.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from reasoner.answers import extract_answer
from reasoner.options import check, option

logger = logging.getLogger(__name__)

T = TypeVar("T")

STEP_FORMATS = ("lines", "tags")
LLAVA_COT_STAGES = ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION")


@dataclass(frozen=True)
class BeamConfig:
    """The search's shape: B beams kept, K continuations each, at most ``max_steps`` steps."""

    beam_width: int = option(2, "B: beams kept after each step (1: greedy by verifier score)")
    expansions: int = option(4, "K: sampled continuations per beam per step")
    max_steps: int = option(8, "step budget; beams still open then are completed in one call (tags: at most 4)")
    step_format: str = option("lines", "'lines': a step is one rationale line; 'tags': one LLaVA-CoT <STAGE> block")

    def __post_init__(self) -> None:
        for name in ("beam_width", "expansions", "max_steps"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                  name, value, "give an int >= 1")
        check(self.step_format in STEP_FORMATS, "step_format", self.step_format,
              f"use one of {STEP_FORMATS}")

    @property
    def steps(self) -> int:
        """The effective step budget: ``max_steps``, capped at the 4 stages in ``"tags"`` mode."""
        return min(self.max_steps, len(LLAVA_COT_STAGES)) if self.step_format == "tags" else self.max_steps


@dataclass(frozen=True)
class Continuation:
    """One generated continuation of a prefix.

    ``text`` includes the stop string when generation stopped at one; ``finished`` is True when
    generation ended otherwise (EOS or the token limit), so the response cannot go on.
    """

    text: str
    finished: bool


@dataclass
class BeamNode:
    """One scored step: ``text`` is the step's own text, ``score`` the verifier's of the prefix
    ending with it; ``parent`` is the node it extends (None at step 0); ``kept`` if it survived."""

    id: int
    parent: int | None
    step: int
    text: str
    score: float
    kept: bool

    def to_dict(self) -> dict[str, Any]:
        """``{"id", "parent", "step", "text", "score", "kept"}``: one entry of the ``beam`` field."""
        return asdict(self)


@dataclass
class BeamResult:
    """The chosen response, its verifier score, and every node scored on the way."""

    text: str
    score: float
    finished: bool  # is_complete(text): it reached "### Answer: ..." (lines) or </CONCLUSION> (tags)
    nodes: list[BeamNode]

    def tree(self) -> list[dict[str, Any]]:
        """Every scored step, in the order scored, as the ``beam`` field's dicts."""
        return [node.to_dict() for node in self.nodes]


Generate = Callable[
    [Sequence[str], int, Sequence[str]],
    Sequence[Sequence[Continuation]] | Awaitable[Sequence[Sequence[Continuation]]],
]
Score = Callable[[Sequence[str], Sequence[bool]], Sequence[float] | Awaitable[Sequence[float]]]


def step_stop(config: BeamConfig, step_index: int) -> list[str]:
    """The stop strings of step ``step_index`` (0-based): ``["\\n"]`` for lines, ``["</STAGE>"]``
    of ``LLAVA_COT_STAGES[step_index]`` for tags."""
    if not isinstance(step_index, int) or not 0 <= step_index < config.steps:
        raise ValueError(f"step_index must be an int in [0, {config.steps}), got {step_index!r}")
    if config.step_format == "tags":
        return [f"</{LLAVA_COT_STAGES[step_index]}>"]
    return ["\n"]


def is_complete(text: str, config: BeamConfig) -> bool:
    """Whether ``text`` is a whole response: it has an answer after ``### Answer:`` (lines) or
    ends, trailing whitespace aside, with ``</CONCLUSION>`` (tags)."""
    if config.step_format == "tags":
        return text.rstrip().endswith(f"</{LLAVA_COT_STAGES[-1]}>")
    return extract_answer(text) is not None


async def _resolve(value: T | Awaitable[T]) -> T:
    """``value`` itself, or awaited when it is awaitable (a coroutine, a Ray Serve response)."""
    return await value if inspect.isawaitable(value) else value  # type: ignore[return-value]


async def _generate(generate: Generate, prefixes: list[str], n: int, stop: list[str]) -> list[list[Continuation]]:
    """One batched ``generate`` call, checked: ``n`` Continuations for each prefix."""
    out = [list(c) for c in await _resolve(generate(prefixes, n, stop))]
    if len(out) != len(prefixes):
        raise ValueError(f"generate returned {len(out)} lists for {len(prefixes)} prefixes; "
                         "return one list of continuations per prefix, in order")
    for i, conts in enumerate(out):
        if len(conts) != n:
            raise ValueError(f"generate returned {len(conts)} continuations for prefix {i}, "
                             f"asked for n={n}; return exactly n per prefix")
        for c in conts:
            if not isinstance(c, Continuation):
                raise TypeError(f"generate must return Continuation objects, got {type(c).__name__}: {c!r}")
    return out


async def _score(score: Score, responses: list[str], complete: list[bool]) -> list[float]:
    """One batched ``score`` call, checked: one real, non-NaN float per response."""
    raw = list(await _resolve(score(responses, complete)))
    if len(raw) != len(responses):
        raise ValueError(f"score returned {len(raw)} scores for {len(responses)} responses; "
                         "return one score per response, in order")
    scores = []
    for i, s in enumerate(raw):
        if isinstance(s, (str, bytes)):
            raise TypeError(f"score {i} is {s!r}, a string; return numbers")
        try:
            value = float(s)
        except (TypeError, ValueError) as e:
            raise TypeError(f"score {i} is {s!r}, not a number; return floats") from e
        if math.isnan(value):
            raise ValueError(f"score {i} is NaN (response {responses[i]!r}); the verifier must "
                             "return a number for every response")
        scores.append(value)
    return scores


@dataclass
class _Beam:
    text: str
    node: int | None


async def beam_search(generate: Generate, score: Score, config: BeamConfig) -> BeamResult:
    """Stage-level beam search (LLaVA-CoT) with ``generate`` and ``score`` injected.

    ``generate(prefixes, n, stop)`` returns, for each prefix, n :class:`Continuation` of it that
    stop at any string of ``stop`` (``[]``: run to the end). ``score(responses, complete)``
    returns the verifier's score of each response, partial where ``complete[i]`` is False.
    Either may be sync or async.

    Each step: one ``generate`` call extends every active beam by K continuations; identical
    continuations of the same beam are scored once (the first is kept); one ``score`` call scores
    each new prefix; the best B of the step (ties: the earlier) are kept, the complete ones go to
    the finished pool, the rest stay active. A step that adds only whitespace still counts, so
    the search ends within the budget. If the budget runs out with beams still active and none
    finished, the active beams are completed by one more ``generate`` (n=1, no stop) and scored
    complete. The result is the best finished beam (ties: the earliest scored).
    """
    nodes: list[BeamNode] = []
    active = [_Beam("", None)]
    finished: list[tuple[float, int, str]] = []  # (score, node id, text)

    async def expand(step: int, beams: list[_Beam], n: int, stop: list[str]) -> list[tuple[_Beam, Continuation]]:
        outs = await _generate(generate, [b.text for b in beams], n, stop)
        children = []
        for beam, conts in zip(beams, outs):
            seen: set[tuple[str, bool]] = set()
            for c in conts:
                if (c.text, c.finished) not in seen:
                    seen.add((c.text, c.finished))
                    children.append((beam, c))
        logger.debug("step %d: %d beams -> %d distinct candidates", step, len(beams), len(children))
        return children

    async def score_nodes(step: int, children: list[tuple[_Beam, Continuation]], force: bool) -> list[BeamNode]:
        texts = [beam.text + c.text for beam, c in children]
        complete = [force or c.finished or is_complete(t, config) for (_, c), t in zip(children, texts)]
        scores = await _score(score, texts, complete)
        new = [BeamNode(len(nodes) + i, beam.node, step, c.text, s, False)
               for i, ((beam, c), s) in enumerate(zip(children, scores))]
        nodes.extend(new)
        return new

    for step in range(config.steps):
        if not active:
            break
        children = await expand(step, active, config.expansions, step_stop(config, step))
        new = await score_nodes(step, children, force=False)
        ranked = sorted(range(len(new)), key=lambda i: (-new[i].score, i))[: config.beam_width]
        active = []
        for i in sorted(ranked):
            new[i].kept = True
            beam, c = children[i]
            text = beam.text + c.text
            if c.finished or is_complete(text, config):
                finished.append((new[i].score, new[i].id, text))
            else:
                active.append(_Beam(text, new[i].id))

    if active and not finished:
        children = await expand(config.steps, active, 1, [])
        for node, (beam, c) in zip(await score_nodes(config.steps, children, force=True), children):
            node.kept = True
            finished.append((node.score, node.id, beam.text + c.text))

    best_score, _, text = min(finished, key=lambda f: (-f[0], f[1]))
    return BeamResult(text=text, score=best_score, finished=is_complete(text, config), nodes=nodes)


def run_beam_search(generate: Generate, score: Score, config: BeamConfig) -> BeamResult:
    """:func:`beam_search` from synchronous code (batch jobs): runs it with ``asyncio.run``.

    Inside a running event loop (a Ray Serve deployment) ``await beam_search(...)`` instead.
    """
    return asyncio.run(beam_search(generate, score, config))
