"""Shared fixtures of the training job tests: a run with examples, sft_data, the tiny base model
(and pairs), made once per session; tests copy it (``copy_run``) before changing it."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pytest

from reasoner.config import config_hash
from reasoner.rundir import RunDir, StageCounts
from tests.jobs.conftest import install_model, run_config

# A few steps on the tiny model, 2 workers: small batches, a checkpoint every 2 steps.
TRAIN_OVERRIDES = ("num_workers=2", "cpus_per_worker=1", "per_device_batch_size=2", "global_batch_size=4", "max_steps=4",
                   "save_steps=2", "learning_rate=0.001", "warmup_ratio=0.0", "logging_steps=1",
                   "max_failures=0")
# The greedy evaluation after training is off, but where a test turns it on.
TRAIN_OVERRIDES += ("eval.questions=0",)


def stage_overrides(section: str, *extra: str) -> list[str]:
    return [f"{section}.{o}" for o in TRAIN_OVERRIDES] + list(extra)


def make_training_run(root, tiny_model_dir) -> str:
    """A run with 40 examples, their sft_data (ground-truth teacher) and the tiny model as models/base."""
    from jobs import distill, make_examples

    config = run_config(root, "distill.examples_per_part=16")
    make_examples.main(config)
    distill.main(config)
    install_model(RunDir(str(root)), tiny_model_dir, "models/base")
    return str(root)


def write_pairs(run: RunDir, limit: int = 16) -> list[dict]:
    """Pairs from the CoT rows of sft_data: chosen the rationale, rejected it with a wrong answer."""
    rows = [r for r in run.read_table("sft_data").to_pylist() if r["mode"] == "cot"][:limit]
    pairs = [{"id": r["id"], "pair_index": 0, "prompt": r["prompt"], "image": r["image"], "chosen": r["completion"],
              "rejected": r["completion"].rsplit("### Answer:", 1)[0] + "### Answer: 99", "accuracy": 0.5}
             for r in rows]
    run.write_part("pairs", "part-00000", pa.Table.from_pylist(pairs), schema_name="pairs")
    run.finish("pairs", stage="test", config={"pairs": len(pairs)}, config_hash=config_hash(len(pairs)),
               counts=StageCounts(len(pairs), len(pairs)))
    return pairs


def copy_run(source: str, target) -> str:
    shutil.copytree(source, target)
    return str(target)


def check_greedy_evaluation(run: RunDir, artifact: str, questions: int, max_tokens: int) -> None:
    """eval.json beside an exported model: every reply of both modes, scored as the metric says."""
    import json

    from reasoner.answers import is_correct, score
    from reasoner.data.examples import subset
    from reasoner.evaluation import prediction_of, summarise, summarise_gain

    record = json.loads(open(run.path(artifact, "eval.json")).read())
    examples = {e["id"]: e for e in run.read_table("examples").to_pylist()}
    ids = subset([i for i, e in examples.items() if e["split"] == "val"], questions)
    assert record["questions"] == questions and record["unusable"] == []
    rows = record["rows"]
    modes = ("direct", "cot", "direct_blind", "cot_blind")
    assert sorted((r["mode"], r["id"]) for r in rows) == sorted((m, i) for m in modes for i in ids)
    for r in rows:
        example = examples[r["id"]]
        assert r["source"] == example["source"] and 1 <= r["num_tokens"] <= max_tokens
        assert r["answer"] == prediction_of(r["text"], r["mode"])
        assert r["score"] == score(r["answer"], example["answers"], example["metric"], example["choices"])
        assert r["correct"] == is_correct(r["score"], example["metric"])
    gain_rows = record["image_gain_rows"]  # the reference rationale scored with the real and a blank image
    assert sorted(r["id"] for r in gain_rows) == sorted(i for i in ids if examples[i]["rationale"])
    assert all(r["gain"] == pytest.approx(r["logp"] - r["logp_blank"]) and r["tokens"] > 0 for r in gain_rows)
    assert record["summary"] == {**summarise(rows), "image_gain": summarise_gain(gain_rows)}
    assert run.manifest(artifact)["eval"] == record["summary"]["overall"]
