"""The verifier of stage (D): token and sequence rewards of candidate responses.

The DPO model against its reference (the SFT model) is an implicit reward model (Zhang et al.
2024, sections 5.2 and 5.4): ``r_t = beta * (log pi_dpo(y_t) - log pi_ref(y_t))``, summed over the
response. Each request's candidates are scored in one batched call of the shared log-prob scorer
per model (``reasoner.models``: vLLM's ``prompt_logprobs`` or transformers), through the one
tokenisation of ``reasoner.models.inputs``. Without a reference (a bare model, or the SFT model
as a control) a model cannot verify against itself (its reward would be 0): the score is the mean
token log-likelihood, and ``kind`` says ``"likelihood"``. Its token values are the token log-probs
divided by the response length, so that for either kind the token rewards sum to the reward.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from reasoner.models.scorer import LogProbScorer, ScoreRequest
from reasoner.verify import likelihood_score, sequence_reward, token_rewards


@dataclass(frozen=True)
class Verdict:
    """One scored candidate: its reward and each response token's share of it."""

    reward: float
    tokens: list[str]
    token_rewards: list[float]

    def token_pairs(self) -> list[list[Any]]:
        """``[[token, reward], ...]``, raw (DESIGN.md's ``token_rewards``)."""
        return [[t, r] for t, r in zip(self.tokens, self.token_rewards)]


class Verifier:
    """Scores responses to one (image, prompt) under ``policy`` against ``reference`` (or alone).

    Scorers are synchronous and not thread-safe: calls are serialised by a lock, so the Serve
    deployment may run them in worker threads while its event loop serves other requests.
    """

    def __init__(self, policy: LogProbScorer, reference: LogProbScorer | None, beta: float | None) -> None:
        if reference is not None and (beta is None or not beta > 0):
            raise ValueError(f"a DPO verifier needs the DPO run's beta > 0, got {beta!r}")
        self.policy, self.reference, self.beta = policy, reference, beta
        self._lock = threading.Lock()

    @property
    def kind(self) -> Literal["dpo", "likelihood"]:
        return "likelihood" if self.reference is None else "dpo"

    def score(self, image: Image.Image, prompt: str, responses: Sequence[str], complete: Sequence[bool] | None = None,
              beta: float | None = None) -> list[Verdict]:
        """One :class:`Verdict` per response, in order. ``complete[i]`` False scores a prefix (no
        EOS: a beam of stage-level search); ``beta`` overrides the run's (DPO verifier only)."""
        complete = [True] * len(responses) if complete is None else list(complete)
        if len(complete) != len(responses):
            raise ValueError(f"complete has {len(complete)} flags for {len(responses)} responses")
        requests = [ScoreRequest(image, prompt, text, eos=done) for text, done in zip(responses, complete)]
        with self._lock:
            policy = self.policy.score(requests)
            reference = self.reference.score(requests) if self.reference is not None else None
        if reference is None:
            verdicts = []
            for scored in policy:
                n = len(scored.logprobs)
                shares = [lp / n for lp in scored.logprobs] if n else []
                verdicts.append(Verdict(likelihood_score(scored.logprobs), list(scored.tokens), shares))
            return verdicts
        beta = self.beta if beta is None else beta
        verdicts = []
        for p, r in zip(policy, reference):
            rewards = token_rewards(p.logprobs, r.logprobs, beta)
            verdicts.append(Verdict(sequence_reward(rewards), list(p.tokens), rewards))
        return verdicts


def json_float(value: float) -> float | None:
    """A reward for JSON: None where it is not finite (an empty response's likelihood)."""
    return value if math.isfinite(value) else None
