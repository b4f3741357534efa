"""reasoner.serving.metrics: the chosen candidate's reward, from a /v1/reason answer (no Ray cluster:
Ray's metrics are made and recorded without one, and exported only where one runs)."""

from __future__ import annotations

import pytest

from reasoner.serving.metrics import GeneratorMetrics, IngressMetrics, VerifierMetrics


def answer(strategy: str, rationale: str, rewards: dict, verifier: str | None = "dpo") -> dict:
    return {"strategy": strategy, "verifier": verifier, "rationale": rationale,
            "candidates": [{"text": t, "reward": r} for t, r in rewards.items()]}


def test_the_chosen_reward_and_its_running_mean() -> None:
    metrics = IngressMetrics(window=2)
    metrics.answered(answer("best_of_n", "b", {"a": 1.0, "b": -2.0}))
    metrics.answered(answer("best_of_n", "a", {"a": 3.0, "b": -2.0}))
    metrics.answered(answer("best_of_n", "b", {"a": 3.0, "b": 5.0}))
    assert list(metrics._recent["best_of_n"]) == [3.0, 5.0]  # the window keeps the last 2
    metrics.answered(answer("majority", "a", {"a": None}, verifier=None))  # no verifier chose it
    metrics.answered(answer("weighted_vote", "c", {"a": 1.0}))  # the rationale is no candidate
    assert set(metrics._recent) == {"best_of_n"}
    metrics.refused("/v1/reason", "cap")


def test_engine_metrics_record_with_their_names_and_skip_empty_counts() -> None:
    verifier, generator = VerifierMetrics(), GeneratorMetrics()
    # The names and tags the README gives (Ray adds ray_ and Prometheus _total when it exports).
    assert (verifier.candidates.info["name"], verifier.candidates.info["tag_keys"]) == (
        "reasoner_verifier_candidates_scored", ("verifier",))
    assert (verifier.latency.info["name"], verifier.latency.info["tag_keys"]) == (
        "reasoner_verifier_scoring_seconds", ("verifier",))
    assert [generator.running.info["name"], generator.cancelled.info["name"]] == [
        "reasoner_generator_running_requests", "reasoner_generator_cancelled_requests"]
    # Ray refuses a counter increment of 0: a call with nothing scored or cancelled must skip it.
    with pytest.raises(ValueError, match="value must be >0"):
        verifier.candidates.inc(0, tags={"verifier": "dpo"})
    verifier.scored("dpo", 32, 0.25)
    verifier.scored("likelihood", 0, 0.01)  # an empty /v1/verify: the time only
    generator.update(running=3, cancelled_now=2)
    generator.update(running=0)
