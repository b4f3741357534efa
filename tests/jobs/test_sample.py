"""jobs.sample: an actor pool of vLLM engines (CPU build) sampling candidates with Ray Data."""

from __future__ import annotations

import math

import pytest

from jobs import sample
from reasoner.answers import extract_answer
from reasoner.data.examples import subset
from reasoner.rundir import RunDir
from tests.conftest import VLLM_CPU_ENV
from tests.jobs.conftest import install_model, run_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_candidates_resume_and_schema(fresh_run, tiny_model_dir) -> None:
    run = RunDir(str(fresh_run))
    install_model(run, tiny_model_dir, "models/base")
    env = "{" + ", ".join(f"{k}: '{v}'" for k, v in VLLM_CPU_ENV.items()) + "}"
    overrides = ["sample.model=models/base", "sample.num_samples=3", "sample.max_tokens=12",
                 "sample.max_questions=6", "sample.questions_per_part=3", f"engine.env={env}",
                 "engine.max_model_len=512"]
    config = run_config(fresh_run, *overrides)
    sample.main(config)
    table = run.read_table("candidates", schema_name="candidates")
    rows = table.to_pylist()
    examples = {e["id"]: e for e in run.read_table("examples").to_pylist()}
    ids = subset([i for i, e in examples.items() if e["split"] == "train"], 6)
    assert sorted({r["id"] for r in rows}) == ids
    assert sorted((r["id"], r["sample_index"]) for r in rows) == [(i, k) for i in ids for k in range(3)]
    for r in rows:
        example = examples[r["id"]]
        assert r["prompt"].startswith(example["question"])
        assert 1 <= r["num_tokens"] <= 12
        assert r["answer"] == extract_answer(r["text"])
        assert math.isfinite(r["cumulative_logprob"]) and r["cumulative_logprob"] <= 0
        assert r["correct"] == (r["score"] >= 0.5)
    manifest = run.manifest("candidates")
    assert manifest["counts"] == {"in": 6, "out": 6, "rejected": 0, "pending": 0}
    assert len(run.parts("candidates")) == 2

    # Sampling is seeded per question: the same config makes the same candidates. A rerun with a
    # part lost makes only that part again, with the same rows.
    lost = run.parts("candidates")[0]
    before = {(r["id"], r["sample_index"]): r["text"] for r in rows}
    run.fs.delete_file(run.path("candidates", lost))
    run.fs.delete_file(run.path("candidates", "_manifest.json"))
    sample.main(run_config(fresh_run, *overrides, "sample.questions_per_part=2"))  # operational: allowed
    again = run.read_table("candidates").to_pylist()
    assert {(r["id"], r["sample_index"]): r["text"] for r in again} == before
