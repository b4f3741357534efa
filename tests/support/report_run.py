"""A tiny finished run for the report's tests: manifests, training metrics and an ``eval/`` with
2 models x 2 modes x 2 sources of greedy accuracy, curves of 3 strategies at N = 1, 2, 4, and a
pool of 2 questions x 4 candidates. Numbers are chosen so their 3-decimal forms are unambiguous."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from reasoner.rundir import RunDir, StageCounts

ACCURACY = {("models/sft", "direct"): (0.1234, 0.2345), ("models/sft", "cot"): (0.3456, 0.4567),
            ("models/dpo", "direct"): (0.1111, 0.2222), ("models/dpo", "cot"): (0.5678, 0.6789)}
"""(model, mode) -> accuracy on source a, source b (8 questions each); overall is their mean."""
COMPARISONS = {"dpo_vs_sft_cot": {"estimate": 0.0612, "low": 0.0451, "high": 0.0789, "questions": 16},
               "majority_vs_single@2": {"estimate": -0.0204, "low": -0.0391, "high": 0.0102, "questions": 2}}
SERVED_COMPARISON = {"estimate": 0.0432, "low": 0.0101, "high": 0.0771, "questions": 2}
"""The served generator's pool: its curves are the paper pool's plus 0.0123 (3-decimal distinct)."""
COMPARISON_TEXT = {"dpo_vs_sft_cot": "+0.061 [0.045, 0.079]", "majority_vs_single@2": "-0.020 [-0.039, 0.010]"}


def _finish(run: RunDir, artifact: str, stage: str, **extra) -> None:
    run.finish(artifact, stage=stage, config={"stage": stage}, config_hash=f"hash-{stage}", counts=StageCounts(2, 2),
               timings={"work": 1.5}, extra=extra or None)


def make_report_run(root: str | Path, *, dpo: bool = True, token_rewards: bool = False) -> RunDir:
    """A finished run at ``root``; ``dpo=False``: no DPO model, so no verifier, rewards or DPO metrics.
    ``token_rewards``: the pool also carries ``tokens`` and ``token_rewards`` per candidate."""
    run = RunDir(str(root))
    _finish(run, "examples", "make_examples")
    models = ["models/sft", "models/dpo"] if dpo else ["models/base", "models/sft"]
    for model in models:
        _finish(run, model, {"models/base": "init_model", "models/sft": "train_sft", "models/dpo": "train_dpo"}[model])
    metrics = {"models/sft": [{"step": s, "loss": 3.0 / s, "learning_rate": 1e-4, "grad_norm": 1.0,
                               "steps_per_second": 2.0} for s in range(1, 6)]}
    if dpo:
        metrics["models/dpo"] = [{"step": s, "loss": 0.69 - 0.05 * s, "rewards/margins": 0.1 * s,
                                  "rewards/accuracies": 0.5 + 0.1 * s, "learning_rate": 1e-5} for s in range(1, 5)]
    for model, records in metrics.items():
        Path(run.path(model, "metrics.jsonl")).write_text("".join(json.dumps(r) + "\n" for r in records))
    accuracy = []
    for (model, mode), (a, b) in ACCURACY.items():
        model = model if dpo else {"models/sft": "models/base", "models/dpo": "models/sft"}[model]
        accuracy += [{"model": model, "mode": mode, "source": s, "questions": 8, "accuracy": v}
                     for s, v in (("synthetic/a", a), ("synthetic/b", b))]
        accuracy.append({"model": model, "mode": mode, "source": "overall", "questions": 16, "accuracy": (a + b) / 2})
    strategies = ("single", "majority", "best_of_n") if dpo else ("single", "majority", "oracle")
    curves = [{"strategy": s, "n": n, "accuracy": 0.3 + 0.05 * i * k, "low": 0.2 + 0.05 * i * k,
               "high": 0.4 + 0.05 * i * k, "questions": 2} for i, s in enumerate(strategies) for k, n in enumerate((1, 2, 4))]
    pool = []
    for q, prompt in enumerate(["What is the red bar?", "How many squares?"]):
        for i in range(4):
            correct = q == 0 and i in (1, 2)  # question 0 has right and wrong candidates, question 1 only wrong
            text = f"The red bar is {i + 3}.\n### Answer: {i + 3}"
            row = {"id": f"q{q}", "sample_index": i, "prompt": prompt, "text": text, "answer": str(i + 3),
                   "score": float(correct), "correct": correct, "num_tokens": 8, "cumulative_logprob": -4.0 - i,
                   "reference_logp": -4.0 - i, "control": -0.5 - 0.1 * i,
                   "policy_logp": -3.5 - i if dpo else None, "reward": 0.05 * (1 - i) if dpo else None}
            if token_rewards:
                row["tokens"] = ["The", " red", " bar", " is", f" {i + 3}", ".\n", "### Answer:", f" {i + 3}"]
                row["token_rewards"] = [0.01 * (t - 3) * (1 if correct else -1) for t in range(8)]
            pool.append(row)
    comparisons = {**(COMPARISONS if dpo else {k: v for k, v in COMPARISONS.items() if not k.startswith("dpo")}),
                   "questions_for_2_points": {"dpo_vs_sft_cot": 955} if dpo else {}}
    served = [{**c, "accuracy": c["accuracy"] + 0.0123, "low": c["low"] + 0.0123, "high": c["high"] + 0.0123}
              for c in curves] if dpo else []
    served_comparisons = {"best_of_n_vs_majority@4": SERVED_COMPARISON} if dpo else {}
    for name, rows in (("pool", pool), ("accuracy", accuracy), ("curves", curves), ("served_curves", served)):
        if rows:
            run.write_part(f"eval/{name}", "part-00000", pa.Table.from_pylist(rows))
    run.write_json({"split": "test", "questions": 16, "beta": 0.1 if dpo else None, "generator": "models/sft",
                    "verifier": "models/dpo" if dpo else None, "accuracy": accuracy, "curves": curves,
                    "comparisons": comparisons, "served_generator": "models/dpo" if dpo else None,
                    "served_curves": served, "served_comparisons": served_comparisons,
                    "config": {"pool_size": 4, "ns": [1, 2, 4]}}, "eval", "eval.json")
    _finish(run, "eval", "evaluate", pool=len(pool))
    return run
