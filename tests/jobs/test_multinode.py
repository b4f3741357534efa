"""Several nodes for real: stages on a local Ray cluster of a head and worker nodes
(``ray.cluster_utils.Cluster``), each losing a worker node mid-stage (``Cluster.remove_node``).

- distill (Ray Data, an actor pool of 2 over two worker nodes, the teacher over HTTP) finishes with
  every example exactly once after the node of one of its actors is removed;
- train_sft (Ray Train, 2 CPU workers on one worker node) resumes from its last registered
  checkpoint on the nodes left (one worker on each of two) after that node is removed.

Both scenarios run, one after the other on one cluster and one run directory, in a driver process
of their own (``tests/support/multinode.py``, which documents the cluster and the timing of the
removals): a process joins one Ray cluster, and this session has its own (``ray_local``), which
these tests leave alone. The driver writes ``report.json`` (nodes, removals, the stages' actors
before and after); each test checks its scenario's part of it and the run directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from reasoner.rundir import RunDir
from tests.jobs.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DRIVER_TIMEOUT_S = 420


def _tail(path: Path, lines: int = 80) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else ["(no log)"]
    return "\n".join(text[-lines:])


@pytest.fixture(scope="module")
def multinode(tmp_path_factory, tiny_model_dir) -> tuple[dict, RunDir, Path]:
    """The driver's report, the run it made, and its log. Fails every test of the file if the driver
    itself failed (the cluster did not start, say); a scenario's failure fails only its test."""
    work = tmp_path_factory.mktemp("multinode")
    log = work / "driver.log"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "REASONER_FAULT")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    cmd = [sys.executable, "-m", "tests.support.multinode", "--work", str(work), "--model", str(tiny_model_dir)]
    with open(log, "w") as out:
        # A session of its own: if the driver must be killed, its cluster's processes go with it.
        process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            process.wait(timeout=DRIVER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.terminate()  # the driver unwinds and shuts its cluster down
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            pytest.fail(f"the multi-node driver did not finish in {DRIVER_TIMEOUT_S} s:\n{_tail(log)}")
    report_file = work / "report.json"
    assert report_file.exists(), f"the driver wrote no report (exit {process.returncode}):\n{_tail(log)}"
    report = json.loads(report_file.read_text())
    assert report["error"] is None and process.returncode == 0, f"{report['error']}\n{_tail(log)}"
    return report, RunDir(str(work / "run")), log


def scenario(multinode, name: str) -> dict:
    """The scenario's part of the report, failing the test with its error and the log's tail."""
    report, _, log = multinode
    section = report["scenarios"][name]
    assert section["error"] is None, f"{section['error']}\n{_tail(log)}"
    return section


def _ids_by_part(run: RunDir, artifact: str) -> list[set[str]]:
    return [set(pq.read_table(run.path(artifact, p), columns=["id"], filesystem=run.fs).column("id").to_pylist())
            for p in run.parts(artifact)]


def _once_per_part(parts: list[set[str]]) -> set[str]:
    """The ids of ``parts``, checking that no id is in two of them."""
    counts = Counter(i for part in parts for i in part)
    assert not [i for i, n in counts.items() if n > 1], "ids in more than one part"
    return set(counts)


def test_distill_loses_a_worker_node_and_every_example_is_distilled_once(multinode) -> None:
    from reasoner.answers import extract_answer, is_correct, score

    section = scenario(multinode, "distill")
    report, run, _ = multinode
    nodes, removal = report["nodes"], section["removal"]
    assert report["driver_node"] == nodes["head"]
    # The stage's two actors ran on the two worker nodes, one each; the node of one of them was
    # removed after the first part was written, while parts were still to come.
    before = [a for a in removal["actors_before"] if a["state"] == "ALIVE"]
    assert sorted(a["node"] for a in before) == sorted([nodes["a"], nodes["b"]]), removal
    assert removal["removed"] in ("a", "b"), removal
    lost, left = nodes[removal["removed"]], nodes["b" if removal["removed"] == "a" else "a"]
    parts = _ids_by_part(run, "sft_data")
    assert 1 <= removal["progress_at_removal"] < len(parts), (removal, len(parts))
    assert section["live_nodes"] == sorted([nodes["head"], left])
    # Ray restarted the lost actor on the worker left (Ray Data: max_restarts=-1), and its batch ran
    # there again (max_task_retries=-1).
    after = {a["id"]: a for a in section["actors_after"]}
    moved = [after[a["id"]] for a in before if a["node"] == lost]
    assert len(moved) == 1 and moved[0]["restarts"] >= 1 and moved[0]["node"] == left, section["actors_after"]

    # Every example exactly once: its direct and caption rows once each, its CoT row or its
    # rejection (never both), each in one part; the manifest counts them all, nothing pending.
    train = [e for e in run.read_table("examples").to_pylist() if e["split"] == "train"]
    ids = {e["id"] for e in train}
    assert section["train_examples"] == len(train) and section["teacher_requests"] >= len(train)
    rows = run.read_table("sft_data", schema_name="sft_data").to_pylist()
    assert max(Counter((r["id"], r["mode"]) for r in rows).values()) == 1
    assert {r["id"] for r in rows if r["mode"] == "direct"} == ids
    assert {r["id"] for r in rows if r["mode"] == "caption"} == ids
    # The teacher answers a question with the rationale of its last example: where the suite
    # repeats a question, the other examples' answers are wrong and rejected.
    rationales = {e["question"]: e["rationale"] for e in train}
    kept = {r["id"] for r in rows if r["mode"] == "cot"}
    assert kept == {e["id"] for e in train if is_correct(score(
        extract_answer(rationales[e["question"]]), e["answers"], e["metric"], e["choices"]), e["metric"])}
    rejected = run.read_table("rejected/distill", require_complete=False).to_pylist()
    assert sorted(r["id"] for r in rejected) == sorted(ids - kept)
    assert all(r["reason"].startswith("teacher answer wrong") for r in rejected)
    assert _once_per_part(parts) == ids
    assert _once_per_part(_ids_by_part(run, "rejected/distill")) == ids - kept
    assert not run.exists("sft_data", "_staging")
    manifest = run.manifest("sft_data")
    counts = dict(manifest["counts"])
    assert counts.pop("pending", 0) == 0
    assert counts == {"in": len(ids), "out": len(kept), "rejected": len(ids) - len(kept)}
    assert manifest["rows"] == {"cot": len(kept), "direct": len(ids), "caption": len(ids)}


def test_train_sft_loses_its_worker_node_and_resumes_on_the_nodes_left(multinode) -> None:
    section = scenario(multinode, "train_sft")
    report, run, _ = multinode
    nodes, removal, sft = report["nodes"], section["removal"], section["sft"]
    # The 2 workers were packed on the worker node that distill left, the only one with room for
    # both; it was removed once the step-6 checkpoint was stored.
    left_by_distill = "b" if report["scenarios"]["distill"]["removal"]["removed"] == "a" else "a"
    before = [a for a in removal["actors_before"] if a["state"] == "ALIVE"]
    assert removal["removed"] == left_by_distill, removal
    assert [a["node"] for a in before] == [nodes[left_by_distill]] * 2, removal
    assert removal["progress_at_removal"] == f"checkpoint_{sft['remove_at_checkpoint']:08d}"
    # A new worker group ran on the nodes left, across two of them: one worker on the head, one on c.
    assert section["live_nodes"] == sorted([nodes["head"], nodes["c"]])
    restarted = [a for a in section["actors_after"] if a["id"] not in {b["id"] for b in before}]
    assert sorted(a["node"] for a in restarted) == sorted([nodes["head"], nodes["c"]]), section["actors_after"]

    # It resumed from a checkpoint of the first group (step > 0) and finished every step once.
    training = json.loads(Path(run.path("models/sft", "training.json")).read_text())
    assert training["global_step"] == sft["max_steps"] and training["world_size"] == 2
    resumed = training["resumed_from_step"]
    assert resumed is not None and 0 < resumed < sft["max_steps"] and resumed % sft["save_steps"] == 0, training
    metrics = Path(run.path("models/sft", "metrics.jsonl")).read_text().splitlines()
    steps = [json.loads(line)["step"] for line in metrics]
    assert steps == list(range(1, sft["max_steps"] + 1))
    manifest = run.manifest("models/sft")
    assert manifest["steps"] == sft["max_steps"] and manifest["counts"]["in"] == sft["max_steps"]
    assert run.exists("models/sft", "model.safetensors")
