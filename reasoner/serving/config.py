"""The ``serve`` section of the run config: what stage (D) serves and its request defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reasoner.options import check, option

STRATEGIES = ("direct", "cot", "majority", "best_of_n", "weighted_vote", "beam")
"""The strategies of ``/v1/reason`` (DESIGN.md): greedy direct and CoT answers, self-consistency,
the verifier's best-of-N and weighted vote, and stage-level beam search."""


@dataclass
class ServeConfig:
    """Stage serve (D): the generator, the DPO verifier over its reference, and request defaults."""

    generator: str = option("models/dpo", "model artifact of the run that writes the answers (models/sft: the "
                                          "paper's setting, sampling from the SFT model)")
    verifier: str = option("models/dpo", "model artifact whose implicit reward against its reference scores "
                                         "candidates (the DPO model)")
    reference: str | None = option(
        None, "the verifier's reference artifact (null: the model the DPO run started from, from its manifest)")
    verifier_backend: Literal["vllm", "transformers"] = option(
        "vllm", "engine of the verifier's log-prob scorer (the shared scorer's two backends agree in fp32)")
    model_name: str = option("reasoner", "the model id the API serves (GET /v1/models; a request's 'model')")
    n: int = option(8, "candidates of a sampling strategy when a request gives no n")
    temperature: float = option(1.0, "sampling temperature of the sampling strategies (paper: 1.0); direct and "
                                     "cot answer greedily unless a request says otherwise")
    max_tokens: int = option(256, "most tokens of a response when a request gives no max_tokens")
    beam_width: int = option(2, "beams kept after each step of beam search")
    expansions: int = option(4, "continuations sampled per beam and step of beam search")
    max_steps: int = option(8, "step budget of beam search (lines of a rationale)")
    generator_replicas: int = option(1, "replicas of the Generator deployment (one engine each)")
    verifier_replicas: int = option(1, "replicas of the Verifier deployment (policy and reference engines each)")
    max_ongoing_requests: int = option(16, "requests a replica works on at once before Serve queues more")

    def __post_init__(self) -> None:
        check(1 <= self.n <= 64, "n", self.n, "use 1 to 64 candidates")
        check(0 <= self.temperature <= 2, "temperature", self.temperature, "use a temperature in [0, 2]")
        check(self.max_tokens >= 1, "max_tokens", self.max_tokens, "allow at least 1 token")
        for name in ("beam_width", "expansions", "max_steps", "generator_replicas", "verifier_replicas",
                     "max_ongoing_requests"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "use 1 or more")
        check(bool(self.model_name.strip()), "model_name", self.model_name, "name the served model")
