"""The ``serve`` section of the run config: what stage (D) serves, its request defaults, its
replicas and autoscaling, and the limits every request is held to (``serve.limits``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from reasoner.options import check, option, section

STRATEGIES = ("direct", "cot", "majority", "best_of_n", "weighted_vote", "beam")
"""The strategies of ``/v1/reason`` (DESIGN.md): greedy direct and CoT answers, self-consistency,
the verifier's best-of-N and weighted vote, and stage-level beam search."""


@dataclass
class LimitsConfig:
    """What one request may ask for, how often a key may ask, and how long and how deep the queues are.

    A request over a cap is answered 400 (413 for the body) in OpenAI's error JSON naming the field
    and the cap; a key over its rate 429 with ``Retry-After``; a request over its time 504; a full
    queue 503 with ``Retry-After``. Nothing waits without bound.
    """

    max_body_bytes: int = option(16 * 2**20, "largest request body in bytes (images travel inline, base64): 413 "
                                             "beyond it, before the body is read")
    max_image_pixels: int = option(4096 * 4096, "most pixels (width x height) of a request's image, checked from its "
                                                "header before it is decoded")
    max_text_chars: int = option(16384, "longest question text and longest /v1/verify candidate, in characters")
    max_n: int = option(64, "most candidates a request may ask for (n of /v1/reason, /v1/chat/completions)")
    max_tokens: int = option(2048, "most tokens a request may ask for per response (max_tokens)")
    max_beam_width: int = option(8, "widest beam a beam-search request may ask for (beam_width)")
    max_expansions: int = option(8, "most continuations per beam and step a beam-search request may ask for")
    max_steps: int = option(16, "longest step budget a beam-search request may ask for (max_steps)")
    max_candidates: int = option(64, "most candidates one /v1/verify request may score")
    requests_per_minute: float = option(
        600.0, "requests a minute each API key may send (token bucket, per ReasonAPI replica); 0: no limit. Applies "
               "when REASONER_API_KEYS is set (an open server has no keys to count)")
    burst: int = option(60, "requests a key may send at once before requests_per_minute paces it")
    request_timeout_s: float = option(300.0, "longest a request may take in the ingress before it is answered 504 "
                                             "and its generation cancelled")
    max_queued_requests: int = option(
        64, "requests each ReasonAPI replica may queue for the Generator and for the Verifier once their replicas "
            "are all busy (Serve's max_queued_requests); beyond it 503")
    ingress_max_ongoing_requests: int = option(
        256, "requests a ReasonAPI replica works on at once (it only waits on the engines)")
    ingress_max_queued_requests: int = option(
        512, "requests Serve's HTTP proxy queues for the ReasonAPI replicas when all are at "
             "ingress_max_ongoing_requests; beyond it 503")
    retry_after_s: int = option(2, "the Retry-After header (seconds) of a 503 answered for a full queue")

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_image_pixels", "max_text_chars", "max_n", "max_tokens", "max_beam_width",
                     "max_expansions", "max_steps", "max_candidates", "burst", "max_queued_requests",
                     "ingress_max_ongoing_requests", "ingress_max_queued_requests"):
            check(getattr(self, name) >= 1, f"serve.limits.{name}", getattr(self, name), "use 1 or more")
        check(self.max_body_bytes >= 1024, "serve.limits.max_body_bytes", self.max_body_bytes,
              "allow at least 1024 bytes (a request's JSON without its image is larger than that)")
        check(self.requests_per_minute >= 0, "serve.limits.requests_per_minute", self.requests_per_minute,
              "use 0 (no limit) or a positive rate")
        check(self.request_timeout_s > 0, "serve.limits.request_timeout_s", self.request_timeout_s,
              "use a positive number of seconds")
        check(self.retry_after_s >= 0, "serve.limits.retry_after_s", self.retry_after_s, "use 0 or more seconds")


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
    generator_replicas: int = option(1, "replicas of the Generator deployment (one engine each); with "
                                        "generator_max_replicas, the fewest Serve autoscaling keeps")
    verifier_replicas: int = option(1, "replicas of the Verifier deployment (policy and reference engines each); "
                                       "with verifier_max_replicas, the fewest Serve autoscaling keeps")
    generator_max_replicas: int | None = option(
        None, "most Generator replicas Serve autoscaling may start (null: a fixed generator_replicas)")
    verifier_max_replicas: int | None = option(
        None, "most Verifier replicas Serve autoscaling may start (null: a fixed verifier_replicas)")
    target_ongoing_requests: float = option(
        8.0, "autoscaling: requests each Generator or Verifier replica should work on; above it Serve adds replicas "
             "(at most max_ongoing_requests)")
    upscale_delay_s: float = option(30.0, "autoscaling: how long the load must stay above target before a replica "
                                          "is added")
    downscale_delay_s: float = option(600.0, "autoscaling: how long the load must stay below target before a "
                                             "replica is removed (an engine takes a while to start)")
    max_ongoing_requests: int = option(16, "requests a Generator or Verifier replica works on at once before Serve "
                                           "queues more")
    limits: LimitsConfig = section(LimitsConfig, "caps, rate limits, timeouts and queue limits of every request")

    def __post_init__(self) -> None:
        check(1 <= self.n <= 64, "n", self.n, "use 1 to 64 candidates")
        check(0 <= self.temperature <= 2, "temperature", self.temperature, "use a temperature in [0, 2]")
        check(self.max_tokens >= 1, "max_tokens", self.max_tokens, "allow at least 1 token")
        for name in ("beam_width", "expansions", "max_steps", "generator_replicas", "verifier_replicas",
                     "max_ongoing_requests"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "use 1 or more")
        check(bool(self.model_name.strip()), "model_name", self.model_name, "name the served model")
        for name in ("generator", "verifier"):
            most, fewest = getattr(self, f"{name}_max_replicas"), getattr(self, f"{name}_replicas")
            check(most is None or most >= fewest, f"serve.{name}_max_replicas", most,
                  f"use null or at least serve.{name}_replicas ({fewest})")
        check(0 < self.target_ongoing_requests <= self.max_ongoing_requests, "serve.target_ongoing_requests",
              self.target_ongoing_requests, f"use a positive number at most serve.max_ongoing_requests "
                                            f"({self.max_ongoing_requests}), or Serve never scales up")
        for name in ("upscale_delay_s", "downscale_delay_s"):
            check(getattr(self, name) >= 0, f"serve.{name}", getattr(self, name), "use 0 or more seconds")
        # A server's own defaults must pass its own caps.
        limits = self.limits
        for default, cap in (("n", "max_n"), ("max_tokens", "max_tokens"), ("beam_width", "max_beam_width"),
                             ("expansions", "max_expansions"), ("max_steps", "max_steps")):
            check(getattr(self, default) <= getattr(limits, cap), f"serve.{default}", getattr(self, default),
                  f"use at most serve.limits.{cap} ({getattr(limits, cap)}), or raise that cap")

    def replica_options(self, deployment: Literal["generator", "verifier"]) -> dict[str, Any]:
        """Serve options of the Generator or Verifier deployment: a fixed count, or autoscaling between
        ``<deployment>_replicas`` and ``<deployment>_max_replicas``; Serve's queue limit either way."""
        fewest, most = getattr(self, f"{deployment}_replicas"), getattr(self, f"{deployment}_max_replicas")
        options: dict[str, Any] = {"max_ongoing_requests": self.max_ongoing_requests,
                                   "max_queued_requests": self.limits.max_queued_requests}
        if most is None or most == fewest:
            return {**options, "num_replicas": fewest}
        return {**options, "num_replicas": "auto", "autoscaling_config": {
            "min_replicas": fewest, "max_replicas": most, "initial_replicas": fewest,
            "target_ongoing_requests": self.target_ongoing_requests, "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s}}
