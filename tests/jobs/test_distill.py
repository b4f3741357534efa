"""jobs.distill on a local Ray cluster with the ground-truth teacher and with a teacher over HTTP."""

from __future__ import annotations

import pytest

from jobs import distill
from reasoner.rundir import RunDir
from tests.jobs.conftest import run_config

pytestmark = pytest.mark.integration


def test_ground_truth_teacher_keeps_every_rationale(fresh_run) -> None:
    config = run_config(fresh_run, "distill.examples_per_part=8")
    distill.main(config)
    run = RunDir(config.run_dir)
    examples = run.read_table("examples").to_pylist()
    train = {e["id"]: e for e in examples if e["split"] == "train"}
    rows = run.read_table("sft_data", schema_name="sft_data").to_pylist()
    assert {(r["id"], r["mode"]) for r in rows} == {(i, m) for i in train for m in ("cot", "direct", "caption")}
    for row in rows:
        example = train[row["id"]]
        assert row["image"] == example["image"]
        if row["mode"] == "cot":
            assert row["completion"] == example["rationale"]
            assert row["prompt"].endswith("Generate a reason first and then output a "
                                          + ("letter answer." if example["choices"] else "short answer."))
        elif row["mode"] == "caption":
            assert (row["prompt"], row["completion"]) == ("Describe the image.", example["caption"])
        else:
            assert row["completion"] == example["answers"][0]
    manifest = run.manifest("sft_data")
    assert manifest["counts"] == {"in": len(train), "out": len(train), "rejected": 0, "pending": 0}
    assert manifest["rows"] == {"cot": len(train), "direct": len(train), "caption": len(train)}


def test_teacher_over_http_rejects_wrong_answers_and_budget_resumes(fresh_run) -> None:
    from reasoner.answers import extract_answer, is_correct, score
    from tests.support.openai_servers import GroundTruthChatServer

    run = RunDir(str(fresh_run))
    train = [e for e in run.read_table("examples").to_pylist() if e["split"] == "train"]
    wrong = {train[0]["question"], train[1]["question"]}
    with GroundTruthChatServer({e["question"]: e["rationale"] for e in train}, wrong=wrong) as server:
        base = ["distill.teacher=openai", f"distill.base_url={server.url}/v1", "distill.model=teacher",
                "distill.examples_per_part=10"]
        # A budget of 5 requests: the stage stops cleanly, incomplete, with 5 examples handled and
        # the rest counted as pending.
        distill.main(run_config(fresh_run, *base, "distill.max_requests=5"))
        assert run.manifest("sft_data") is None
        assert len(run.done_ids("sft_data", "distill")) == 5 and len(server.requests) == 5
        assert run.progress("sft_data")["counts"]["pending"] == len(train) - 5
        # A budget is how the work runs, not what it makes: the rerun without one finishes the rest.
        distill.main(run_config(fresh_run, *base))
        replies = {e["id"]: server.reply_for(e["question"]) for e in train}
    # The job kept exactly the rationales whose answer is right, and rejected the others with the reason.
    expected_kept = {e["id"] for e in train if is_correct(
        score(extract_answer(replies[e["id"]]), e["answers"], e["metric"], e["choices"]), e["metric"])}
    assert len(expected_kept) < len(train)  # some answers were wrong on purpose
    rows = run.read_table("sft_data", schema_name="sft_data").to_pylist()
    assert {r["id"] for r in rows if r["mode"] == "cot"} == expected_kept
    assert {r["id"] for r in rows if r["mode"] == "direct"} == {e["id"] for e in train}
    rejected = run.read_table("rejected/distill", require_complete=False).to_pylist()
    assert {r["id"] for r in rejected} == {e["id"] for e in train} - expected_kept
    assert all(r["reason"].startswith("teacher answer wrong") for r in rejected)
    assert run.manifest("sft_data")["counts"] == {"in": len(train), "out": len(expected_kept),
                                                  "rejected": len(train) - len(expected_kept), "pending": 0}
    assert run.progress("sft_data") is None
