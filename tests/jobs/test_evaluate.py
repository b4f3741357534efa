"""jobs.evaluate on a tiny run (the tiny model as base and SFT, a perturbed copy as DPO): greedy
accuracy, the pool and its scores, and curves that a recomputation from the saved pool matches;
and jobs.rerank on the same run (the same pool, by the same code), and on a user's questions."""

from __future__ import annotations

import json
import math
import shutil

import pyarrow.parquet as pq
import pytest

from jobs import evaluate, rerank
from reasoner.rundir import RunDir
from tests.conftest import VLLM_CPU_ENV
from tests.jobs.conftest import install_model, run_config
from tests.support.models import perturbed_copy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENGINE_ENV = "{" + ", ".join(f"{k}: '{v}'" for k, v in VLLM_CPU_ENV.items()) + "}"


@pytest.fixture(scope="module")
def evaluated(examples_run, tiny_model_dir, tmp_path_factory):
    """One evaluated run shared by the module's tests (each engine start costs seconds)."""
    from reasoner.config import config_hash
    from reasoner.rundir import StageCounts

    fresh_run = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(examples_run, fresh_run)
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
    def recompute(pool: list[dict], saved_curves: list[dict]) -> dict:
        ids = sorted({r["id"] for r in pool})
        pools = []
        for i in ids:
            rows = sorted((r for r in pool if r["id"] == i), key=lambda r: r["sample_index"])
            pools.append(Pool([r["correct"] for r in rows], [r["answer"] for r in rows], [r["reward"] for r in rows],
                              [r["control"] for r in rows], examples[i]["metric"], examples[i]["choices"]))
        again = curves(pools, ns=(1, 2, 4), draws=64, seed=0)
        saved = {(c["strategy"], c["n"]): c for c in saved_curves}
        assert {s for s, _ in saved} == {"single", "majority", "best_of_n", "weighted_vote", "control", "oracle"}
        for (strategy, n), point in saved.items():
            assert point["accuracy"] == pytest.approx(sum(again[strategy][n]) / len(ids), abs=1e-9)
            assert point["low"] <= point["accuracy"] <= point["high"]
        return saved

    saved = recompute(pool, record["curves"])
    # The served app's default generator (the DPO model) has a pool of its own, scored and reranked
    # the same way: reward against the SFT reference, control under the SFT model.
    assert record["served_generator"] == "models/dpo" and manifest["served_pool"] == 16
    served = pq.read_table(run.path("eval", "served_pool")).to_pylist()
    assert [r["text"] for r in served] != [r["text"] for r in pool]  # another model's candidates
    for r in served:
        assert r["reward"] == pytest.approx(0.1 * (r["policy_logp"] - r["reference_logp"]), abs=1e-4)
    recompute(served, record["served_curves"])
    # Oracle bounds every strategy; N=1 of any verifier is a single sample.
    for n in (1, 2, 4):
        assert all(saved[s, n]["accuracy"] <= saved["oracle", n]["accuracy"] + 1e-9 for s, _ in saved)
    assert saved["best_of_n", 1]["accuracy"] == pytest.approx(saved["single", 1]["accuracy"])
    assert "dpo_vs_sft_cot" in record["comparisons"]
    accuracy = pq.read_table(run.path("eval", "accuracy")).to_pylist()
    assert {(r["model"], r["mode"]) for r in accuracy if r["source"] == "overall"} == {
        (m, mode) for m in ("models/base", "models/sft", "models/dpo") for mode in ("direct", "cot")}


RERANK = ("rerank.n=4", "rerank.max_tokens=16", "rerank.questions_per_part=2")


def test_rerank_picks_from_the_evaluation_pool(evaluated) -> None:
    """The batch job over the run's test questions samples the evaluation's pool (same seed, same
    code), scores it the same, and each strategy's choice is ``reasoner.verify.select``'s."""
    from reasoner.verify import select

    run, config = evaluated
    rerank.main(run_config(run.root, "rerank.split=test", "rerank.max_questions=4", *RERANK,
                           "engine.max_model_len=512", f"engine.env={ENGINE_ENV}"))
    rows = pq.read_table(run.path("rerank", "answers")).to_pylist()
    pool = pq.read_table(run.path("eval", "pool")).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted({p["id"] for p in pool})
    manifest = run.manifest("rerank")
    assert manifest["counts"]["in"] == manifest["counts"]["out"] == 4 and manifest["counts"]["rejected"] == 0
    assert not run.exists("rerank", "sampled")  # the images' copy is gone once the answers are complete
    for row in rows:
        mine = sorted((p for p in pool if p["id"] == row["id"]), key=lambda p: p["sample_index"])
        assert [c["text"] for c in row["candidates"]] == [p["text"] for p in mine]
        for c, p in zip(row["candidates"], mine):
            assert c["reward"] == pytest.approx(p["reward"], abs=1e-4)
            assert c["control"] == pytest.approx(p["control"], abs=1e-4)
        answers = [c["answer"] for c in row["candidates"]]
        for strategy, values in (("single", None), ("majority", None), ("control", [c["control"] for c in row["candidates"]]),
                                 ("best_of_n", [c["reward"] for c in row["candidates"]]),
                                 ("weighted_vote", [c["reward"] for c in row["candidates"]])):
            pick = select(strategy, answers, values, metric=row["metric"], choices=row["choices"])
            assert (row[f"index_{strategy}"], row[f"answer_{strategy}"]) == (pick.index, pick.answer)
            assert row[f"correct_{strategy}"] == bool(pick.answer is not None
                                                      and row["candidates"][pick.index]["correct"])
        assert row["oracle"] == any(c["correct"] for c in row["candidates"])
        assert row["verifier"] == "dpo" and row["beta"] == 0.1
    accuracy = manifest["accuracy"]
    assert accuracy["oracle"] == sum(r["oracle"] for r in rows) / 4


def test_rerank_takes_a_users_questions(evaluated, tmp_path) -> None:
    """A user's Parquet: an unanswered question is reranked, not graded; a corrupt image goes to
    rejected with its reason; no verifier means single, majority and control only; a rerun is a no-op."""
    import pyarrow as pa

    from reasoner.config import ConfigError

    run, _ = evaluated
    examples = run.read_table("examples").to_pylist()[:2]
    questions = [{"id": "q-graded", "image": examples[0]["image"], "question": examples[0]["question"],
                  "choices": examples[0]["choices"], "answers": examples[0]["answers"], "metric": examples[0]["metric"]},
                 {"id": "q-open", "image": examples[1]["image"], "question": examples[1]["question"],
                  "choices": examples[1]["choices"], "answers": [], "metric": "exact"},
                 {"id": "q-broken", "image": b"not an image", "question": "How many?", "choices": None,
                  "answers": ["3"], "metric": "exact"}]
    path = tmp_path / "questions.parquet"
    pq.write_table(pa.Table.from_pylist(questions), path)
    overrides = (f"rerank.input={path}", "rerank.output=rerank_user", "rerank.verifier=null", *RERANK,
                 "engine.max_model_len=512", f"engine.env={ENGINE_ENV}")
    rerank.main(run_config(run.root, *overrides))
    rows = {r["id"]: r for r in pq.read_table(run.path("rerank_user", "answers")).to_pylist()}
    assert set(rows) == {"q-graded", "q-open"}
    rejected = pq.read_table(run.path("rejected", "rerank_user")).to_pylist()
    assert [r["id"] for r in rejected] == ["q-broken"] and "unreadable image" in rejected[0]["reason"]
    manifest = run.manifest("rerank_user")
    assert manifest["counts"] == {**manifest["counts"], "in": 3, "out": 2, "rejected": 1}
    open_, graded = rows["q-open"], rows["q-graded"]
    assert open_["oracle"] is None and open_["correct_majority"] is None
    assert all(c["score"] is None and c["correct"] is None for c in open_["candidates"])
    assert graded["oracle"] is not None and graded["correct_single"] is not None
    for row in rows.values():
        assert row["verifier"] is None and all(c["reward"] is None for c in row["candidates"])
        assert row["index_best_of_n"] is None and row["index_control"] is not None
    rerank.main(run_config(run.root, *overrides))  # complete: nothing to do, nothing duplicated
    assert pq.read_table(run.path("rerank_user", "answers")).num_rows == 2

    # Input the job cannot use is refused before any engine starts, naming the problem.
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in questions[0].items() if k != "metric"}]),
                   tmp_path / "nometric.parquet")
    with pytest.raises(ConfigError, match="metric"):
        rerank.main(run_config(run.root, f"rerank.input={tmp_path / 'nometric.parquet'}", "rerank.output=r2"))
    pq.write_table(pa.Table.from_pylist([questions[0], questions[0]]), tmp_path / "twice.parquet")
    with pytest.raises(ConfigError, match="'q-graded' appears more than once"):
        rerank.main(run_config(run.root, f"rerank.input={tmp_path / 'twice.parquet'}", "rerank.output=r3"))
    with pytest.raises(ConfigError, match="does not exist"):
        rerank.main(run_config(run.root, f"rerank.input={tmp_path / 'nothing'}", "rerank.output=r4"))
