"""reasoner.serving.metrics: the chosen candidate's reward, from a /v1/reason answer (no Ray cluster:
Ray's metrics are made and recorded without one, and exported only where one runs)."""

from __future__ import annotations

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


def test_engine_metrics_record() -> None:
    VerifierMetrics().scored("dpo", 32, 0.25)
    VerifierMetrics().scored("likelihood", 0, 0.01)
    GeneratorMetrics().update(running=3, cancelled_now=2)
