"""The serving metrics of stage (D), beside Ray Serve's own (``ray_serve_*``: requests, latencies,
replicas, queue lengths per deployment).

Made with ``ray.serve.metrics``, which tags each with the deployment, replica and application, and
exported where Ray exports every metric: each node's metrics agent, in Prometheus' format on the
node's metrics export port (``ray start --metrics-export-port``; Ray's Prometheus service
discovery file lists them), with Ray's ``ray_`` prefix. Names (Prometheus adds ``_total`` to a
counter, ``_bucket``/``_sum``/``_count`` to a histogram):

- ``reasoner_verifier_candidates_scored`` (counter, tag ``verifier``: dpo | likelihood): candidates
  the Verifier scored (a beam prefix counts as one);
- ``reasoner_verifier_scoring_seconds`` (histogram, tag ``verifier``): time of one scoring call
  (a request's candidates under the policy and the reference, batched);
- ``reasoner_verifier_chosen_reward`` (gauge, tag ``strategy``): the reward of the candidate the last
  verifier strategy (best_of_n, weighted_vote, beam) chose, and
  ``reasoner_verifier_chosen_reward_mean`` its mean over the replica's last 100 answers (a
  reward can be negative, which a Ray histogram cannot hold);
- ``reasoner_generator_running_requests`` (gauge) and ``reasoner_generator_cancelled_requests``
  (counter): engine requests in flight on a Generator replica, and those aborted because their
  client went away or their time ran out;
- ``reasoner_api_rejected_requests`` (counter, tags ``route``, ``reason``: auth, rate_limit, cap,
  body_size, timeout, backpressure): requests the ingress refused.

The classes here create their metrics on first use inside a replica (Ray must be running).
"""

from __future__ import annotations

import collections
from typing import Any

SCORING_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]


class VerifierMetrics:
    """The Verifier deployment's: candidates scored and the time of each scoring call."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.candidates = metrics.Counter(
            "reasoner_verifier_candidates_scored", description="candidates the Verifier scored",
            tag_keys=("verifier",))
        self.latency = metrics.Histogram(
            "reasoner_verifier_scoring_seconds", description="time of one Verifier scoring call (all its candidates)",
            boundaries=SCORING_BOUNDARIES, tag_keys=("verifier",))

    def scored(self, kind: str, count: int, seconds: float) -> None:
        tags = {"verifier": kind}
        if count:
            self.candidates.inc(count, tags=tags)
        self.latency.observe(seconds, tags=tags)


class GeneratorMetrics:
    """The Generator deployment's: engine requests in flight and those cancelled."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.running = metrics.Gauge("reasoner_generator_running_requests",
                                     description="engine requests in flight on the Generator replica")
        self.cancelled = metrics.Counter(
            "reasoner_generator_cancelled_requests",
            description="engine requests aborted because their client disconnected or their time ran out")

    def update(self, running: int, cancelled_now: int = 0) -> None:
        self.running.set(running)
        if cancelled_now:
            self.cancelled.inc(cancelled_now)


class IngressMetrics:
    """The ReasonAPI deployment's: the reward of each chosen candidate, and refused requests."""

    def __init__(self, window: int = 100) -> None:
        from ray.serve import metrics

        self.chosen = metrics.Gauge("reasoner_verifier_chosen_reward",
                                    description="reward of the candidate the last verifier strategy chose",
                                    tag_keys=("strategy",))
        self.chosen_mean = metrics.Gauge("reasoner_verifier_chosen_reward_mean",
                                         description=f"mean reward of the chosen candidates of the last {window} "
                                                     "answers", tag_keys=("strategy",))
        self.rejected = metrics.Counter("reasoner_api_rejected_requests",
                                        description="requests the ingress refused, by route and reason",
                                        tag_keys=("route", "reason"))
        self._recent: dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=window))

    def answered(self, answer: dict[str, Any]) -> None:
        """Record the chosen candidate's reward of a ``/v1/reason`` answer (if a verifier chose it)."""
        if answer.get("verifier") is None:
            return
        chosen = next((c for c in answer["candidates"] if c["text"] == answer["rationale"]), None)
        if chosen is None or chosen["reward"] is None:
            return
        strategy = answer["strategy"]
        recent = self._recent[strategy]
        recent.append(chosen["reward"])
        self.chosen.set(chosen["reward"], tags={"strategy": strategy})
        self.chosen_mean.set(sum(recent) / len(recent), tags={"strategy": strategy})

    def refused(self, route: str, reason: str) -> None:
        self.rejected.inc(tags={"route": route, "reason": reason})
