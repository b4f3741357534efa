"""Nothing lost: the data stages failed or killed at every commit point by the fault switch
(``REASONER_FAULT``, ``reasoner.faults``), a flaky teacher, and a budget that survives a killed worker.

Every test ends with the same check: each input id exactly once in the rows or the final
rejections, nothing duplicated, and the manifest's counts equal to the data.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time

import pytest

from jobs import distill
from reasoner.faults import ENV
from reasoner.rundir import RunDir, RunDirError
from tests.jobs.conftest import run_config
from tests.support.openai_servers import Fault, FaultProxy, GroundTruthChatServer

pytestmark = pytest.mark.integration

EXAMPLES = 12  # distill.max_examples: four parts of three
BASE = [f"distill.max_examples={EXAMPLES}", "distill.examples_per_part=3", "distill.teacher=openai",
        "distill.model=teacher", "distill.max_retries=0", "distill.timeout_s=5"]


def _text_only(record: logging.LogRecord) -> bool:
    """A log filter keeping a record's traceback and arguments as text only (see ``release``)."""
    if record.exc_info:
        record.exc_text = record.exc_text or logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
    record.msg, record.args = record.getMessage(), None
    return True


@pytest.fixture(autouse=True)
def idle_cluster(ray_local):
    """Every CPU of the test cluster free before a test, and a failed run's logs kept as text."""
    handlers = list(logging.getLogger().handlers)  # pytest's log capture among them
    for handler in handlers:
        handler.addFilter(_text_only)
    release(ray_local)
    yield
    for handler in handlers:
        handler.removeFilter(_text_only)


def release(ray) -> None:
    """Wait until the actors of a failed Ray Data run are gone. They live while anything holds the
    exception's traceback (pytest's log capture would keep it to the end of the test); a job's
    process ends there, but a test goes on, and its next run on the 2-CPU cluster would wait
    forever for the CPU the dead run's actor holds."""
    gc.collect()
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0):
        assert time.monotonic() < deadline, f"CPUs still held: {ray.available_resources()}"
        time.sleep(0.2)


def fail(main, config) -> None:
    """Run a stage's ``main``, which an injected fault makes raise; then free what the failed run holds."""
    import ray

    with pytest.raises(Exception, match="injected fault"):
        main(config)
    release(ray)


def train_ids(run: RunDir) -> list[str]:
    from jobs._common import select_ids

    return select_ids(run, "train", EXAMPLES)


@contextlib.contextmanager
def teacher(run: RunDir, proxy: dict | None = None):
    """The ground-truth teacher, wrong on every other question (so many examples have both a
    rejection and rows), optionally behind a ``FaultProxy(**proxy)``; yields (server, base URL)."""
    examples = [e for e in run.read_table("examples").to_pylist() if e["split"] == "train"]
    rationales = {e["question"]: e["rationale"] for e in examples}
    with GroundTruthChatServer(rationales, wrong=sorted(rationales)[::2]) as server:
        if proxy is None:
            yield server, server.url
        else:
            with FaultProxy(server.url, **proxy) as faulty:
                yield server, faulty.url


def config(run_dir, url: str, *overrides: str):
    return run_config(run_dir, *BASE, f"distill.base_url={url}/v1", *overrides)


def check_whole_parts(run: RunDir) -> set[str]:
    """After a failure: every id a committed part holds has all it produces (its CoT row or its
    rejection, and its direct and caption rows); returns those ids."""
    done = run.done_ids("sft_data", "distill")
    rows = run.read_table("sft_data", require_complete=False).to_pylist() if run.parts("sft_data") else []
    rejected = {r["id"] for r in run.read_table("rejected/distill", require_complete=False).to_pylist()} \
        if run.parts("rejected/distill") else set()
    for mode in ("direct", "caption"):
        assert {r["id"] for r in rows if r["mode"] == mode} == done, f"{mode} rows lost or orphaned"
    cot = {r["id"] for r in rows if r["mode"] == "cot"}
    assert cot.isdisjoint(rejected) and cot | rejected == done
    return done


def check_exactly_once(run: RunDir, ids: list[str]) -> dict:
    """The finished stage: every id once in CoT rows or final rejections, its direct and caption
    rows once, no leftovers, and the manifest's counts equal to the data. Returns the manifest."""
    rows = run.read_table("sft_data", schema_name="sft_data").to_pylist()
    rejected = run.read_table("rejected/distill", require_complete=False).to_pylist() \
        if run.parts("rejected/distill") else []
    keys = [(r["id"], r["mode"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicated rows"
    refused = [r["id"] for r in rejected]
    assert len(refused) == len(set(refused)), "duplicated rejections"
    cot = {r["id"] for r in rows if r["mode"] == "cot"}
    assert cot.isdisjoint(refused) and cot | set(refused) == set(ids)
    for mode in ("direct", "caption"):
        assert sorted(r["id"] for r in rows if r["mode"] == mode) == sorted(ids)
    manifest = run.manifest("sft_data")
    assert manifest["counts"] == {"in": len(ids), "out": len(cot), "rejected": len(refused), "pending": 0}
    assert manifest["rows"] == {"cot": len(cot), "direct": len(ids), "caption": len(ids)}
    assert not run.exists("sft_data", "_staging") and run.progress("sft_data") is None
    return manifest


@pytest.mark.parametrize("fault", [
    "rundir.write_batch:after_rejected:2",  # between the rejections and the rows
    "rundir.write_batch:after_rows:2",  # mid-part: staged, not committed
    "rundir.write_batch:after_commit:2",  # committed, not in place
    "rundir.write_batch:mid_publish:2",  # one file in place, the other not
    "rundir.write_batch:after_publish:2",  # after a part
    "rundir.finish:before_manifest:1",  # during the manifest
])
def test_distill_failed_at_a_commit_point_loses_nothing_on_a_rerun(fresh_run, monkeypatch, fault) -> None:
    run = RunDir(str(fresh_run))
    ids = train_ids(run)
    with teacher(run) as (server, url):
        monkeypatch.setenv(ENV, fault)
        fail(distill.main, config(fresh_run, url))
        monkeypatch.delenv(ENV)
        assert run.manifest("sft_data") is None
        done = check_whole_parts(run)
        assert (len(done) == EXAMPLES) == fault.startswith("rundir.finish")
        asked = len(server.requests)
        distill.main(config(fresh_run, url))
        assert len(server.requests) == asked + EXAMPLES - len(done), "the rerun asks only what is not done"
    check_exactly_once(run, ids)
    assert run.exists("_faults")  # the fault did fire, once


def test_a_killed_worker_is_restarted_and_its_part_made_once(fresh_run, monkeypatch) -> None:
    run = RunDir(str(fresh_run))
    with teacher(run) as (server, url):
        # The worker dies (os._exit) with its first part committed and half in place; Ray restarts
        # it and runs the batch again, which puts the first attempt's part in place, then replaces it.
        monkeypatch.setenv(ENV, "rundir.write_batch:mid_publish:1:exit")
        distill.main(config(fresh_run, url))
    check_exactly_once(run, train_ids(run))
    assert len(server.requests) == EXAMPLES + 3, "the killed batch was asked again, nothing else"


def test_the_budget_survives_a_killed_worker_and_reruns(fresh_run, monkeypatch) -> None:
    run = RunDir(str(fresh_run))
    ids = train_ids(run)
    with teacher(run) as (server, url):
        budget = ["distill.max_requests=8"]
        # The worker dies after staging its 2nd part: the 3 requests of that batch were spent, and
        # the restarted worker (a fresh process) asks them again from what is left of the budget.
        monkeypatch.setenv(ENV, "rundir.write_batch:after_rows:2:exit")
        distill.main(config(fresh_run, url, *budget))
        monkeypatch.delenv(ENV)
        assert len(server.requests) == 8, "never more requests than the budget, across the restart"
        assert run.read_json("_budget", "distill.json")["requests"] == 8
        done = check_whole_parts(run)
        assert len(done) == 5
        progress = run.progress("sft_data")
        assert run.manifest("sft_data") is None and progress["complete"] is False
        counts = progress["counts"]
        assert counts["pending"] == EXAMPLES - 5 and counts["in"] == counts["out"] + counts["rejected"] + 7
        with pytest.raises(RunDirError, match=r"7 of 12 examples pending \(7 not sent: the teacher budget is spent "
                                              r"\(8 requests of distill.max_requests=8.*give_up_pending=true"):
            run.require("sft_data")
        # A rerun spends from the same budget: nothing left, nothing sent.
        distill.main(config(fresh_run, url, *budget))
        assert len(server.requests) == 8 and run.progress("sft_data")["counts"]["pending"] == 7
        # A higher budget (an operational setting: the artifact resumes) sends the difference.
        distill.main(config(fresh_run, url, "distill.max_requests=15"))
        assert len(server.requests) == 15 and run.read_json("_budget", "distill.json")["requests"] == 15
    manifest = check_exactly_once(run, ids)
    assert manifest["budget"]["requests"] == 15


def test_a_teacher_failing_30_percent_of_requests_ends_with_every_example_settled(fresh_run) -> None:
    run = RunDir(str(fresh_run))
    ids = train_ids(run)
    pool = [Fault.rate_limit(retry_after=1), Fault.error(500), Fault.stall(1.5)]
    flaky = {"rate": 0.3, "pool": pool, "seed": 3}
    overrides = ["distill.max_retries=1", "distill.timeout_s=1", "distill.max_concurrency=1"]
    runs, pending = 0, []
    with teacher(run, flaky) as (_, url):
        while run.manifest("sft_data") is None:
            assert runs < 6, f"still pending after {runs} runs: {pending}"
            distill.main(config(fresh_run, url, *overrides))
            runs += 1
            progress = run.progress("sft_data")
            if progress is not None:
                counts = progress["counts"]
                assert counts["in"] == counts["out"] + counts["rejected"] + counts["pending"]
                pending.append(counts["pending"])
                check_whole_parts(run)
    assert pending and runs == len(pending) + 1, "the first run left examples pending; reruns finished them"
    check_exactly_once(run, ids)
    reasons = {r["reason"].split(":")[0] for r in run.read_table("rejected/distill", require_complete=False).to_pylist()}
    assert reasons == {"teacher answer wrong"}, "transport failures are never rejections"


def test_give_up_pending_rejects_what_the_transport_lost(fresh_run) -> None:
    run = RunDir(str(fresh_run))
    ids = train_ids(run)
    with teacher(run, {"rate": 1.0, "pool": [Fault.error(503)]}) as (_, url):
        distill.main(config(fresh_run, url))
        assert run.progress("sft_data")["counts"] == {"in": EXAMPLES, "out": 0, "rejected": 0, "pending": EXAMPLES}
        with pytest.raises(RunDirError, match="12 after transport failures"):
            run.require("sft_data")
        distill.main(config(fresh_run, url, "distill.give_up_pending=true"))
    manifest = check_exactly_once(run, ids)
    assert manifest["counts"]["rejected"] == EXAMPLES
    rejected = run.read_table("rejected/distill", require_complete=False).to_pylist()
    assert all(r["reason"].startswith("transport: InternalServerError (HTTP 503)") for r in rejected)


@pytest.mark.slow
def test_sample_failed_mid_part_loses_nothing_on_a_rerun(fresh_run, tiny_model_dir, monkeypatch) -> None:
    from jobs import sample
    from tests.conftest import VLLM_CPU_ENV
    from tests.jobs.conftest import install_model

    run = RunDir(str(fresh_run))
    install_model(run, tiny_model_dir, "models/base")
    env = "{" + ", ".join(f"{k}: '{v}'" for k, v in VLLM_CPU_ENV.items()) + "}"
    sampling = run_config(fresh_run, "sample.model=models/base", "sample.num_samples=2", "sample.max_tokens=8",
                          "sample.max_questions=4", "sample.questions_per_part=2", f"engine.env={env}",
                          "engine.max_model_len=512")
    monkeypatch.setenv(ENV, "rundir.write_batch:after_rows:2")  # the 2nd part staged, not committed
    fail(sample.main, sampling)
    monkeypatch.delenv(ENV)
    assert len(run.done_ids("candidates", "sample")) == 2 and run.manifest("candidates") is None
    sample.main(sampling)
    ids = sorted(run.done_ids("candidates", "sample"))
    rows = run.read_table("candidates", schema_name="candidates").to_pylist()
    assert len(ids) == 4 and sorted((r["id"], r["sample_index"]) for r in rows) == [(i, k) for i in ids for k in (0, 1)]
    manifest = run.manifest("candidates")
    assert manifest["counts"] == {"in": 4, "out": 4, "rejected": 0, "pending": 0} and manifest["candidates"] == 8
    assert not run.exists("candidates", "_staging")
