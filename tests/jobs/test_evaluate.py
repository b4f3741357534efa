"""jobs.evaluate on a tiny run (the tiny model as base and SFT, a perturbed copy as DPO): greedy
accuracy, the pool and its scores, and curves that a recomputation from the saved pool matches."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest

from jobs import evaluate
from reasoner.rundir import RunDir
from tests.conftest import VLLM_CPU_ENV
from tests.jobs.conftest import install_model, run_config
from tests.support.models import perturbed_copy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENGINE_ENV = "{" + ", ".join(f"{k}: '{v}'" for k, v in VLLM_CPU_ENV.items()) + "}"


@pytest.fixture
def evaluated(fresh_run, tiny_model_dir, tmp_path):
    from reasoner.config import config_hash
    from reasoner.rundir import StageCounts

    run = RunDir(str(fresh_run))
    install_model(run, tiny_model_dir, "models/base")
    install_model(run, tiny_model_dir, "models/sft")
    perturbed_copy(tiny_model_dir, fresh_run / "models" / "dpo")
    run.finish("models/dpo", stage="train_dpo", config={"dpo": "perturbed"}, config_hash=config_hash("dpo"),
               counts=StageCounts(1, 1), extra={"beta": 0.1, "base_model": "models/sft"})
    config = run_config(fresh_run, "evaluate.questions=4", "evaluate.pool_size=4", "evaluate.ns=[1,2,4]",
                        "evaluate.max_tokens=16", "evaluate.draws=64", "evaluate.bootstrap=200",
                        "engine.max_model_len=512", f"engine.env={ENGINE_ENV}")
    evaluate.main(config)
    return run, config


def test_curves_are_recomputed_from_the_saved_pool(evaluated) -> None:
    from reasoner.reranking import Pool, curves

    run, config = evaluated
    manifest = run.manifest("eval")
    assert manifest["pool"] == 16 and manifest["greedy_answers"] == 3 * 2 * 4  # 3 models, 2 modes, 4 questions
    record = json.loads(open(run.path("eval", "eval.json")).read())
    pool = pq.read_table(run.path("eval", "pool")).to_pylist()
    examples = {e["id"]: e for e in run.read_table("examples").to_pylist()}
    # Every candidate has the verifier's reward and the control's mean likelihood.
    assert all(r["reward"] is not None and math.isfinite(r["control"]) for r in pool)
    assert any(abs(r["reward"]) > 1e-4 for r in pool)
    for r in pool:
        assert r["reward"] == pytest.approx(0.1 * (r["policy_logp"] - r["reference_logp"]), abs=1e-4)
        # Each token's reward is saved (the credit assignment of Figure 8), and they add up.
        assert len(r["tokens"]) == len(r["token_rewards"]) >= 1  # the response's tokens and EOS
        assert sum(r["token_rewards"]) == pytest.approx(r["reward"], abs=1e-6)
    ids = sorted({r["id"] for r in pool})
    pools = []
    for i in ids:
        rows = sorted((r for r in pool if r["id"] == i), key=lambda r: r["sample_index"])
        pools.append(Pool([r["correct"] for r in rows], [r["answer"] for r in rows], [r["reward"] for r in rows],
                          [r["control"] for r in rows], examples[i]["metric"], examples[i]["choices"]))
    again = curves(pools, ns=(1, 2, 4), draws=64, seed=0)
    saved = {(c["strategy"], c["n"]): c for c in record["curves"]}
    assert {s for s, _ in saved} == {"single", "majority", "best_of_n", "weighted_vote", "control", "oracle"}
    for (strategy, n), point in saved.items():
        assert point["accuracy"] == pytest.approx(sum(again[strategy][n]) / len(ids), abs=1e-9)
        assert point["low"] <= point["accuracy"] <= point["high"]
    # Oracle bounds every strategy; N=1 of any verifier is a single sample.
    for n in (1, 2, 4):
        assert all(saved[s, n]["accuracy"] <= saved["oracle", n]["accuracy"] + 1e-9 for s, _ in saved)
    assert saved["best_of_n", 1]["accuracy"] == pytest.approx(saved["single", 1]["accuracy"])
    assert "dpo_vs_sft_cot" in record["comparisons"]
    accuracy = pq.read_table(run.path("eval", "accuracy")).to_pylist()
    assert {(r["model"], r["mode"]) for r in accuracy if r["source"] == "overall"} == {
        (m, mode) for m in ("models/base", "models/sft", "models/dpo") for mode in ("direct", "cot")}
