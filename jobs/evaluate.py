"""Stage evaluate: greedy accuracy per model, mode and source, and reranking curves, into ``<run>/eval``.

    python -m jobs.evaluate --config jobs/configs/default.yaml run_dir=runs/r1
    ray job submit --working-dir . -- python -m jobs.evaluate --config jobs/configs/h100.yaml run_dir=s3://bucket/r1

On ``evaluate.questions`` questions of ``evaluate.split`` (a fixed subset mixing sources): every
model of ``evaluate.models`` answers greedily in each mode (Tables 2 and 6 of the paper); the
generator (the SFT model) samples a pool of ``pool_size`` candidates a question, scored by itself
(the reference, and the control's mean likelihood) and by the verifier (the DPO model): its
implicit reward ``beta * (log pi_dpo - log pi_sft)``, beta from the DPO run (Figures 6-7).
Curves: for each N, the expected accuracy over N-subsets of the pool (``reasoner.reranking``) of
``single``, ``majority``, ``best_of_n``, ``weighted_vote``, ``control`` and ``oracle``, with paired
bootstrap intervals over questions, as do the comparisons (DPO vs SFT greedy; verifier vs majority;
majority vs single). Where the served app's default generator (``serve.generator``, the DPO model)
differs from the pool's, it samples a pool of its own, reranked the same way (``served_*``): what
a user of the served ``/v1/reason`` gets. Written: ``eval/greedy`` (every answer), ``eval/pool``
(every candidate and its scores), ``eval/accuracy``, ``eval/curves``, ``eval/served_pool``,
``eval/served_curves`` (Parquet) and ``eval/eval.json``.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Any

import pyarrow as pa
import ray

from reasoner.config import RunConfig, identity, to_dict
from reasoner.eval_pool import EvaluateConfig, pool_rows
from reasoner.models.engine import engine_kwargs, ray_options
from reasoner.rundir import RunDir, StageCounts

from jobs._common import Timings, begin_stage, run_job, say, select_ids
from jobs._eval import usable_examples

logger = logging.getLogger("jobs.evaluate")
STAGE, ARTIFACT = "evaluate", "eval"


@ray.remote
def model_task(run: RunDir, artifact: str, examples: list[dict], config: EvaluateConfig, *, greedy: bool,
               sample: str | None, pools: dict[str, list[dict]], engine: dict, cache_dir: str) -> dict[str, Any]:
    """One engine over ``artifact``: its greedy answers, the pool it samples (named ``sample``), and
    the scored tokens (``TokenLogProbs``) of every pool's candidates under it (those given, and
    the one it sampled)."""
    from reasoner.eval_pool import pool_sample_config, score_candidates
    from reasoner.evaluation import GreedyEvalConfig, GreedyEvaluator
    from reasoner.models import make_vllm_engine, shutdown_vllm_engine
    from reasoner.sampling import Sampler
    from reasoner.training.export import engine_model_dir

    out: dict[str, Any] = {"greedy": [], "pools": dict(pools), "logprobs": {}}
    with engine_model_dir(run, artifact, cache_dir) as model_dir:
        llm = make_vllm_engine(model_dir, **engine)
        shared = lambda *args, **kwargs: llm  # noqa: E731 - every helper below uses this one engine
        try:
            if greedy:
                greedy_config = GreedyEvalConfig(questions=len(examples), split=config.split, modes=list(config.modes),
                                                 max_tokens=config.max_tokens, blind=False, image_gain=False,
                                                 correct_threshold=config.correct_threshold)
                out["greedy"] = GreedyEvaluator(model_dir, greedy_config, engine_factory=shared).evaluate(examples)
            if sample:
                sampling = pool_sample_config(n=config.pool_size, temperature=config.temperature,
                                              mc_temperature=config.mc_temperature, max_tokens=config.max_tokens,
                                              seed=config.seed, correct_threshold=config.correct_threshold)
                out["pools"][sample] = Sampler(model_dir, sampling, engine_factory=shared).sample(examples)
            for name, rows in out["pools"].items():
                out["logprobs"][name] = score_candidates(llm, examples, rows)
        finally:
            shutdown_vllm_engine(llm)
    return out


def _accuracy_rows(greedy: list[dict]) -> list[dict]:
    """Accuracy per model, mode and source (and "overall"), by ``reasoner.evaluation.summarise``."""
    from reasoner.evaluation import summarise as accuracy_summary

    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in greedy:
        by_model[r["model"]].append(r)
    rows = []
    for model, answers in by_model.items():
        summary = accuracy_summary(answers)
        groups = [("overall", summary["overall"]), *summary["by_source"].items()]
        rows += [{"model": model, "mode": mode, "source": source, "questions": a["questions"],
                  "accuracy": a["accuracy"]} for source, by_mode in groups for mode, a in by_mode.items()]
    return sorted(rows, key=lambda r: (r["model"], r["mode"], r["source"]))


def _interval(i) -> dict[str, float | int]:
    return {"estimate": i.estimate, "low": i.low, "high": i.high, "questions": i.questions}


def summarise(greedy: list[dict], pool: list[dict], config: EvaluateConfig, has_verifier: bool,
              examples: dict[str, dict]) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """The accuracy rows, the curve rows and eval.json's comparisons, from the saved answers and pool."""
    from reasoner.reranking import CURVE_STRATEGIES, Pool, bootstrap_mean, curves, paired_difference, questions_needed
    from reasoner.verify import NEEDS_REWARDS

    c = config
    comparisons: dict[str, Any] = {}
    by_model: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in greedy:
        by_model[r["model"], r["mode"]][r["id"]] = float(r["correct"])
    needed: dict[str, int | None] = {}
    for mode in c.modes:
        sft, dpo = by_model.get(("models/sft", mode)), by_model.get(("models/dpo", mode))
        if sft and dpo:
            ids = sorted(set(sft) & set(dpo))
            dpo_correct, sft_correct = [dpo[i] for i in ids], [sft[i] for i in ids]
            comparisons[f"dpo_vs_sft_{mode}"] = _interval(paired_difference(dpo_correct, sft_correct,
                                                                            reps=c.bootstrap, seed=c.seed))
            diffs = [a - b for a, b in zip(dpo_correct, sft_correct)]
            needed[f"dpo_vs_sft_{mode}"] = questions_needed(diffs, 0.02) if len(diffs) > 1 else None
    by_question: dict[str, list[dict]] = defaultdict(list)
    for row in pool:
        by_question[row["id"]].append(row)
    ids = sorted(by_question)
    pools = []
    for i in ids:
        rows = sorted(by_question[i], key=lambda r: r["sample_index"])
        ex = examples[i]
        pools.append(Pool(correct=[r["correct"] for r in rows], answers=[r["answer"] for r in rows],
                          rewards=[r["reward"] for r in rows] if has_verifier else None,
                          control=[r["control"] for r in rows], metric=ex["metric"], choices=ex.get("choices")))
    strategies = [s for s in CURVE_STRATEGIES if has_verifier or s not in NEEDS_REWARDS]
    per_question = curves(pools, strategies, c.ns, draws=c.draws, seed=c.seed) if pools else {}
    curve_rows = []
    for strategy, by_n in per_question.items():
        for n, values in by_n.items():
            i = bootstrap_mean(values, reps=c.bootstrap, seed=c.seed)
            curve_rows.append({"strategy": strategy, "n": n, "accuracy": i.estimate, "low": i.low, "high": i.high,
                               "questions": i.questions})
    pairs = [("majority", "single"), ("best_of_n", "majority"), ("weighted_vote", "majority"),
             ("best_of_n", "control")]
    for a, b in pairs:
        if a in per_question and b in per_question:
            for n in c.ns:
                comparisons[f"{a}_vs_{b}@{n}"] = _interval(paired_difference(
                    per_question[a][n], per_question[b][n], reps=c.bootstrap, seed=c.seed))
    if "best_of_n" in per_question:
        n = c.ns[len(c.ns) // 2]  # the middle of the curve
        diffs = [x - y for x, y in zip(per_question["best_of_n"][n], per_question["majority"][n])]
        needed[f"best_of_n_vs_majority@{n}"] = questions_needed(diffs, 0.02) if len(diffs) > 1 else None
    comparisons["questions_for_2_points"] = needed
    return _accuracy_rows(greedy), curve_rows, comparisons


def main(config: RunConfig) -> None:
    section, timings = config.evaluate, Timings()
    run = RunDir(config.run_dir)
    run.require(section.generator)  # the pool's generator must exist before anything starts
    manifests = {m: run.manifest(m) for m in {*section.models, section.generator, section.verifier}}
    present = [m for m in section.models if manifests[m] is not None]
    verifier = manifests[section.verifier]
    served = _served_generator(config, verifier is not None)
    provenance = {"evaluate": identity(section), "examples_config_hash": run.require("examples")["config_hash"],
                  "served_generator": served,
                  "models": {m: manifests[m]["config_hash"] for m in sorted({*present, section.generator})},
                  "verifier_config_hash": None if verifier is None else verifier["config_hash"]}
    digest = begin_stage(run, ARTIFACT, STAGE, provenance, config.overwrite)
    if digest is None:
        return
    skipped = sorted(set(section.models) - set(present))
    if skipped:
        say("evaluate: %s not in the run: skipped", ", ".join(skipped))
    beta = None if verifier is None else verifier.get("beta")
    if verifier is not None and beta is None:
        raise ValueError(f"evaluate.verifier={section.verifier!r} records no beta: it was not trained by train_dpo")
    with timings.step("plan"):
        ids = select_ids(run, section.split, section.questions)
        if not ids:
            raise ValueError(f"evaluate.split={section.split!r}: the run's examples have no such split")
        if section.questions is not None and len(ids) < section.questions:
            say("evaluate: the %s split has %d questions, fewer than evaluate.questions=%d", section.split,
                len(ids), section.questions)
        examples, unusable = usable_examples(run, ids)
        if unusable:
            say("evaluate: %d of %d questions are unusable (see examples' checks) and left out", len(unusable),
                len(ids))
    engine, cache_dir = engine_kwargs(config.engine), os.path.expanduser(config.cache_dir)
    options = ray_options(config.engine)
    has_verifier = verifier is not None
    # The engine passes: the generator samples the paper's pool; the others answer greedily, the
    # verifier scores the pool and (the served generator) samples its own; the generator comes back
    # to score that one (its reference half and control): one engine at a time.
    passes = [(section.generator, section.generator in present, "generator", ())]
    for m in dict.fromkeys([*present, section.verifier]):
        if m != section.generator and manifests[m] is not None:
            scores = ("generator",) if m == section.verifier else ()
            passes.append((m, m in present, "served" if m == served else None, scores))
    if served is not None:
        passes.append((section.generator, False, None, ("served",)))
    greedy_rows: list[dict] = []
    pools: dict[str, list[dict]] = {}
    scored: dict[tuple[str, str], list] = {}
    for artifact, greedy, sample, scores in passes:
        with timings.step(f"engine {artifact}" + (" (served pool)" if not greedy and scores == ("served",) else "")):
            out = ray.get(model_task.options(**options).remote(
                run, artifact, examples, section, greedy=greedy, sample=sample,
                pools={name: pools[name] for name in scores}, engine=engine, cache_dir=cache_dir))
        greedy_rows += [{**r, "model": artifact} for r in out["greedy"]]
        pools.update(out["pools"])
        scored.update({(artifact, name): logprobs for name, logprobs in out["logprobs"].items()})

    def scored_pool(name: str) -> list[dict]:
        policy = scored[section.verifier, name] if has_verifier else None
        return pool_rows(pools[name], scored[section.generator, name], policy, beta)

    pool = scored_pool("generator")
    served_pool = scored_pool("served") if served is not None else []
    by_id = {ex["id"]: ex for ex in examples}
    with timings.step("curves"):
        accuracy, curve_rows, comparisons = summarise(greedy_rows, pool, section, has_verifier, by_id)
        served_curves, served_comparisons = [], {}
        if served_pool:
            _, served_curves, served_comparisons = summarise([], served_pool, section, has_verifier, by_id)
    for name, rows in (("greedy", greedy_rows), ("pool", pool), ("accuracy", accuracy), ("curves", curve_rows),
                       ("served_pool", served_pool), ("served_curves", served_curves)):
        if rows:
            run.write_part(f"{ARTIFACT}/{name}", "part-00000", pa.Table.from_pylist(rows))
    record = {"split": section.split, "questions": len(examples), "beta": beta, "generator": section.generator,
              "verifier": section.verifier if has_verifier else None, "accuracy": accuracy, "curves": curve_rows,
              "comparisons": comparisons, "served_generator": served, "served_curves": served_curves,
              "served_comparisons": served_comparisons, "config": to_dict(section)}
    run.write_json(record, ARTIFACT, "eval.json")
    run.finish(ARTIFACT, stage=STAGE, config=provenance, config_hash=digest,
               counts=StageCounts(in_=len(ids), out=len(examples)), seed=section.seed, timings=timings,
               extra={"pool": len(pool), "served_pool": len(served_pool), "greedy_answers": len(greedy_rows)})
    say("%s", format_results(accuracy, curve_rows, comparisons))


def _served_generator(config: RunConfig, has_verifier: bool) -> str | None:
    """The served app's default generator (``serve.generator``) where its pool differs from the
    paper's (the evaluation's generator) and the verifier is that model; else None."""
    section = config.evaluate
    served = config.serve.generator
    if not section.served_pool or served == section.generator:
        return None
    if not has_verifier or served != section.verifier:
        say("evaluate: the served generator %s is not the verifier %s: its pool is not evaluated", served,
            section.verifier)
        return None
    return served


def format_results(accuracy: list[dict], curve_rows: list[dict], comparisons: dict[str, Any]) -> str:
    """The terminal's account: overall greedy accuracy per model and mode, the curves, DPO vs SFT."""
    from jobs._console import format_table

    overall = [r for r in accuracy if r["source"] == "overall"]
    lines = [format_table(["model", "mode", "questions", "accuracy"],
                          [[r["model"], r["mode"], r["questions"], f"{r['accuracy']:.3f}"] for r in overall])]
    ns = sorted({r["n"] for r in curve_rows})
    table = defaultdict(dict)
    for r in curve_rows:
        table[r["strategy"]][r["n"]] = f"{r['accuracy']:.3f}"
    lines.append(format_table(["strategy", *[f"N={n}" for n in ns]],
                              [[s, *[table[s].get(n) for n in ns]] for s in table]))
    for key, value in comparisons.items():
        if key.startswith("dpo_vs_sft"):
            lines.append(f"{key}: {value['estimate']:+.3f} [{value['low']:+.3f}, {value['high']:+.3f}] "
                         f"on {value['questions']} questions")
    return "\n\n".join(lines)


if __name__ == "__main__":
    run_job(STAGE, main, __doc__, sections=("evaluate", "engine", "ray"))
