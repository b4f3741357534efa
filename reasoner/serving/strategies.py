"""The strategies of ``/v1/reason``, over injected ``generate`` and ``verify`` callables.

The selection math is ``reasoner.verify`` (best-of-N, weighted vote, majority) and
``reasoner.search`` (stage-level beam search), the same functions the evaluation calls; this
module only asks the generator for candidates and the verifier for rewards, and lays the answer
out as DESIGN.md's HTTP API gives it. In the Serve app the callables are deployment handles; in a
test or a batch job, anything with the same shape:

- ``generate(prompt, options: SamplingOptions, prefixes) -> {"prompt_tokens", "outputs"}`` (as
  ``reasoner.serving.generator.Generation.generate``, the image bound by the caller);
- ``verify(prompt, texts, complete, beta) -> (kind, [Verdict, ...])`` (as
  ``reasoner.serving.verifier.Verifier.score`` with its ``kind``).

Strategies: ``direct`` and ``cot`` answer greedily (temperature 0 unless asked) with the paper's
prompts; ``majority`` is self-consistency over N samples (no verifier); ``best_of_n`` and
``weighted_vote`` score N samples with the verifier; ``beam`` is stage-level beam search with the
verifier scoring each prefix.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from reasoner.answers import extract_answer
from reasoner.evaluation import prediction_of
from reasoner.search import BeamConfig, Continuation, beam_search
from reasoner.serving.generator import SamplingOptions
from reasoner.serving.verifier import Verdict, json_float
from reasoner.verify import select

Generate = Callable[[str, SamplingOptions, Sequence[str]], Awaitable[dict] | dict]
Verify = Callable[[str, Sequence[str], Sequence[bool], float | None], Awaitable[tuple[str, list[Verdict]]]]


@dataclass(frozen=True)
class ReasonSettings:
    """One request's strategy with every default filled in (``reasoner.serving.config.ServeConfig``)."""

    strategy: str
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    beam_width: int
    expansions: int
    max_steps: int
    beta: float | None
    return_token_rewards: bool


async def _await(value):
    return await value if inspect.isawaitable(value) else value


def candidate_json(text: str, answer: str | None, verdict: Verdict | None, token_rewards: bool) -> dict[str, Any]:
    """A candidate as the API gives it (``/v1/reason``'s ``candidates``, ``/v1/verify``'s)."""
    return {"text": text, "answer": answer, "reward": None if verdict is None else json_float(verdict.reward),
            "token_rewards": verdict.token_pairs() if verdict is not None and token_rewards else None}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


async def reason(prompt: str, settings: ReasonSettings, generate: Generate, verify: Verify) -> dict[str, Any]:
    """The ``/v1/reason`` answer for ``prompt`` (the question with the strategy's instruction,
    ``serve_apps.protocol.prompt_for``)."""
    s = settings
    if s.strategy == "beam":
        return await _beam(prompt, s, generate, verify)
    greedy = s.strategy in ("direct", "cot")
    options = SamplingOptions(n=1 if greedy else s.n, temperature=s.temperature, top_p=s.top_p,
                              max_tokens=s.max_tokens, seed=s.seed)
    generated = await _await(generate(prompt, options, [""]))
    texts = [o["text"] for o in generated["outputs"][0]]
    usage = _usage(generated["prompt_tokens"], sum(o["num_tokens"] for o in generated["outputs"][0]))
    answers = [prediction_of(t, "direct") if s.strategy == "direct" else extract_answer(t) for t in texts]
    kind, verdicts = None, None
    if s.strategy in ("best_of_n", "weighted_vote"):
        kind, verdicts = await _await(verify(prompt, texts, [True] * len(texts), s.beta))
    rewards = None if verdicts is None else [v.reward for v in verdicts]
    strategy = {"direct": "single", "cot": "single"}.get(s.strategy, s.strategy)
    chosen = select(strategy, answers, rewards)
    candidates = [candidate_json(t, a, None if verdicts is None else verdicts[i], s.return_token_rewards)
                  for i, (t, a) in enumerate(zip(texts, answers))]
    votes = None
    if chosen.votes is not None:
        votes = {answer: {"count": vote.count, "reward_sum": vote.reward_sum if rewards is not None else None}
                 for answer, vote in chosen.votes.items()}
    return {"strategy": s.strategy, "verifier": kind, "answer": answers[chosen.index],
            "rationale": texts[chosen.index], "candidates": candidates, "votes": votes, "beam": None,
            "usage": usage}


async def _beam(prompt: str, s: ReasonSettings, generate: Generate, verify: Verify) -> dict[str, Any]:
    """Stage-level beam search (``reasoner.search``): each step a line of the rationale."""
    usage = {"prompt": 0, "completion": 0}
    kinds: list[str] = []
    finals: dict[str, Verdict] = {}

    async def gen(prefixes: Sequence[str], n: int, stop: Sequence[str]) -> list[list[Continuation]]:
        options = SamplingOptions(n=n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                                  stop=tuple(stop), seed=s.seed)
        generated = await _await(generate(prompt, options, list(prefixes)))
        usage["prompt"] = generated["prompt_tokens"]
        usage["completion"] += sum(o["num_tokens"] for outs in generated["outputs"] for o in outs)
        return [[Continuation(o["text"], o["finished"]) for o in outs] for outs in generated["outputs"]]

    async def score(responses: Sequence[str], complete: Sequence[bool]) -> list[float]:
        kind, verdicts = await _await(verify(prompt, list(responses), list(complete), s.beta))
        kinds.append(kind)
        for text, done, verdict in zip(responses, complete, verdicts):
            if done:
                finals[text] = verdict
        # A prefix the verifier cannot score (no tokens: a likelihood of -inf) ranks last.
        return [v.reward if v.tokens and math.isfinite(v.reward) else -1e30 for v in verdicts]

    result = await beam_search(gen, score, BeamConfig(beam_width=s.beam_width, expansions=s.expansions,
                                                      max_steps=s.max_steps, step_format="lines"))
    # The candidates: every complete response the search scored, the chosen one first.
    texts = [result.text] + [t for t in finals if t != result.text]
    candidates = [candidate_json(t, extract_answer(t), finals.get(t), s.return_token_rewards) for t in texts]
    return {"strategy": "beam", "verifier": kinds[-1] if kinds else None, "answer": extract_answer(result.text),
            "rationale": result.text, "candidates": candidates, "votes": None, "beam": result.tree(),
            "usage": _usage(usage["prompt"], usage["completion"])}
