"""Driver of the multi-node tests (``tests/jobs/test_multinode.py``): stages on a local Ray cluster
of a head and worker nodes (``ray.cluster_utils.Cluster``), each losing a worker node mid-stage.

    python -m tests.support.multinode --work DIR --model TINY_MODEL_DIR

It runs in a process of its own (a process joins one Ray cluster, and the test session has its
own), starts the cluster, points the jobs at it (``ray.address``) and runs two scenarios on one run
directory, ``DIR/run``. In each, a thread removes a worker node (``Cluster.remove_node``) once the
stage has shown progress in the run directory, while the job's ``main`` runs. It writes
``DIR/report.json``: the nodes, the driver's node, and per scenario what the thread removed and
when, the stage's actors (class, state, node, restarts) just before the removal and at the end, the
nodes alive after it, the stage's time and its error (a traceback) if it failed. The test checks
the report and the run directory; this script asserts nothing.

The cluster (one machine: the CPUs are logical; every node runs a raylet of its own): a head of 1
CPU and workers ``a`` and ``b`` of 3 CPUs, labelled ``reasoner-test/role=worker``.

1. ``distill``: the Ray Data stage is steered onto the workers (``DataContext``'s
   ``label_selector``), where its pool of 2 actors spreads (Ray Data schedules with SPREAD). Once
   the first part is written, the worker hosting an actor (``a`` if both do) is removed. 3 CPUs a
   worker leave the survivor room for both actors and a read task: with 2, the restarted actor
   takes the last CPU, and a read task that must run again (its block was on the lost node) waits
   forever. The teacher is the ground-truth chat server over HTTP, ``TEACHER_DELAY_S`` a request, so
   a batch of 2 examples takes about that and the stage outlasts the removal.
2. ``train_sft`` (on the run's sft_data, with the tiny model as ``models/base``): a worker ``c``
   of 1 CPU joins first, as an autoscaler would replace the lost node. Ray Train packs its 2
   one-CPU workers (PACK) on the worker left by step 1, the only node with room for both; that node
   is removed once the checkpoint of step 6 is in storage, and the worker group restarts
   (``sft.max_failures``) on the nodes left, one worker on the head and one on ``c``: the
   training then runs across two nodes (gloo, DeepSpeed ZeRO-2).

   Why step 6, with a checkpoint every 2 steps: Ray Train 2.60 registers a checkpoint when its
   controller reads the workers' reports (it polls every 2 s), and a worker holds at most one
   unread report, so the report of step 4 waits until the one of step 2 is read. While only
   checkpoint 4 is in storage, report 2 may still sit in the worker and die with it: removed then,
   the training restarted from step 0 (seen here). Checkpoint 6 in storage means report 4 went in,
   so report 2 was read: step 2 is registered. A lost node resumes from the last checkpoint whose
   report was read, which may be the one before the newest in storage (here it resumes from 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("tests.multinode")

ROLE = "reasoner-test/role"
TEACHER_DELAY_S = 0.5
HEAD_CPUS, WORKER_CPUS, REPLACEMENT_CPUS = 1, 3, 1
SFT_STEPS, SFT_SAVE_STEPS, REMOVE_AT_CHECKPOINT = 12, 2, 6


def add_worker(cluster, name: str, num_cpus: int):
    """A worker node labelled as one, with a custom resource naming it."""
    return cluster.add_node(num_cpus=num_cpus, labels={ROLE: "worker"}, resources={f"reasoner-test-node-{name}": 1})


def start_cluster():
    """A ``Cluster`` of the head and workers ``a`` and ``b``; (cluster, {name: node})."""
    from ray.cluster_utils import Cluster

    # No dashboard on the head: the test session's cluster may hold its port; nothing here needs it.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": HEAD_CPUS, "labels": {ROLE: "head"}, "include_dashboard": False})
    nodes = {"head": cluster.head_node}
    for name in ("a", "b"):
        nodes[name] = add_worker(cluster, name, WORKER_CPUS)
    cluster.wait_for_nodes()
    return cluster, nodes


def actors(class_part: str) -> list[dict[str, Any]]:
    """The cluster's actors whose class name holds ``class_part``: id, class, state, node, restarts."""
    import ray

    rows = []
    for actor_id, info in ray._private.state.actors().items():
        if class_part in info.get("ActorClassName", ""):
            rows.append({"id": actor_id, "class": info["ActorClassName"], "state": info["State"],
                         "node": (info.get("Address") or {}).get("NodeID"), "restarts": info.get("NumRestarts", 0)})
    return rows


def live_nodes() -> list[str]:
    import ray

    return sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])


class NodeRemover(threading.Thread):
    """Once ``ready()`` returns something true, removes the first worker node (in ``nodes``' order,
    the head never) hosting a live actor of ``class_part``; records what it did in ``self.record``."""

    def __init__(self, cluster, nodes: dict, class_part: str, ready: Callable[[], Any],
                 timeout_s: float = 240.0) -> None:
        super().__init__(name="node-remover", daemon=True)
        self.cluster, self.nodes, self.class_part, self.ready = cluster, nodes, class_part, ready
        self.timeout_s, self.start_time = timeout_s, time.monotonic()
        self.record: dict[str, Any] = {"removed": None}
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = self.start_time + self.timeout_s
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                progress = self.ready()
                if progress:
                    before = actors(self.class_part)
                    alive = {a["node"] for a in before if a["state"] == "ALIVE"}
                    target = next((n for n, node in self.nodes.items() if n != "head" and node.node_id in alive), None)
                    if target is not None:
                        self.remove(target, progress, before)
                        return
                time.sleep(0.05)
            self.record["why_not"] = "stopped" if self.stop.is_set() else "timed out"
        except BaseException:  # noqa: BLE001 - reported in the report
            self.record["error"] = traceback.format_exc()

    def remove(self, name: str, progress: Any, before: list[dict]) -> None:
        node = self.nodes[name]
        at = time.monotonic()
        self.record.update(progress_at_removal=progress, actors_before=before, removed=name, removed_node=node.node_id,
                           removed_at_s=round(at - self.start_time, 2))
        logger.info("removing node %s (%s) at %s", name, node.node_id, progress)
        self.cluster.remove_node(node)
        del self.nodes[name]
        self.record["removal_took_s"] = round(time.monotonic() - at, 2)
        logger.info("node %s removed", name)


def run_scenario(cluster, nodes: dict, class_part: str, ready: Callable[[], Any], stage: Callable[[], None]) -> dict:
    """Run ``stage`` while a ``NodeRemover`` waits for ``ready``; the scenario's part of the report."""
    section: dict[str, Any] = {"error": None}
    remover = NodeRemover(cluster, nodes, class_part, ready)
    remover.start()
    try:
        stage()
    except BaseException:  # noqa: BLE001 - reported in the report
        section["error"] = traceback.format_exc()
        logger.error("stage failed:\n%s", section["error"])
    finally:
        section["stage_s"] = round(time.monotonic() - remover.start_time, 2)
        remover.stop.set()
        remover.join(timeout=60)
        section["removal"] = remover.record
        section["actors_after"] = actors(class_part)
        section["live_nodes"] = live_nodes()
    return section


def scenario_distill(cluster, nodes: dict, root: Path) -> dict:
    """Distill with the HTTP teacher on the worker nodes; a worker leaves after the first part."""
    from ray.data import DataContext

    from jobs import distill, make_examples
    from reasoner.rundir import RunDir
    from tests.jobs.conftest import run_config
    from tests.support.openai_servers import GroundTruthChatServer

    base = [f"ray.address={cluster.address}"]
    make_examples.main(run_config(root, *base))
    run = RunDir(str(root))
    train = [e for e in run.read_table("examples").to_pylist() if e["split"] == "train"]
    context = DataContext.get_current()
    context.execution_options.label_selector = {ROLE: "worker"}  # every task and actor of the stage
    with GroundTruthChatServer({e["question"]: e["rationale"] for e in train}, delay_s=TEACHER_DELAY_S) as server:
        config = run_config(root, *base, "distill.teacher=openai", f"distill.base_url={server.url}/v1",
                            "distill.model=teacher", "distill.examples_per_part=2", "distill.num_workers=2")
        section = run_scenario(cluster, nodes, "DistillWorker", lambda: len(run.parts("sft_data")),
                               lambda: distill.main(config))
        section["teacher_requests"] = len(server.requests)
    context.execution_options.label_selector = None
    section["train_examples"] = len(train)
    return section


def scenario_train_sft(cluster, nodes: dict, root: Path, model_dir: str) -> dict:
    """SFT on 2 workers packed on one worker node, which leaves once the step-6 checkpoint is stored
    (the run's sft_data, the tiny model as models/base); they restart on the head and ``c``."""
    from jobs import train_sft
    from reasoner.rundir import RunDir
    from tests.jobs.conftest import install_model, run_config
    from tests.jobs.training_support import stage_overrides

    install_model(RunDir(str(root)), model_dir, "models/base")
    config = run_config(root, f"ray.address={cluster.address}", *stage_overrides(
        "sft", f"sft.max_steps={SFT_STEPS}", f"sft.save_steps={SFT_SAVE_STEPS}", "sft.max_failures=1"))
    marker = f"checkpoint_{REMOVE_AT_CHECKPOINT:08d}"

    def ready() -> str | None:
        found = sorted(Path(root, "checkpoints").glob(f"*/{marker}"))
        return found[0].name if found else None

    section = run_scenario(cluster, nodes, "RayTrainWorker", ready, lambda: train_sft.main(config))
    section["sft"] = {"max_steps": SFT_STEPS, "save_steps": SFT_SAVE_STEPS,
                      "remove_at_checkpoint": REMOVE_AT_CHECKPOINT}
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.multinode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="directory for the run (work/run) and work/report.json")
    parser.add_argument("--model", required=True, help="the tiny model's directory (models/base of train_sft)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def terminate(signum, frame):  # a test's timeout: unwind, so the cluster is shut down below
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    root = work / "run"
    os.environ.pop("RAY_ADDRESS", None)
    start = time.monotonic()
    report: dict[str, Any] = {"error": None, "scenarios": {}}
    cluster = None
    try:
        import ray

        from jobs._common import init_ray
        from tests.jobs.conftest import run_config

        cluster, nodes = start_cluster()
        report["nodes"] = {name: node.node_id for name, node in nodes.items()}
        report["cluster_start_s"] = round(time.monotonic() - start, 2)
        init_ray(run_config(root, f"ray.address={cluster.address}"))  # as a job does, given ray.address
        report["driver_node"] = ray.get_runtime_context().get_node_id()
        report["scenarios"]["distill"] = scenario_distill(cluster, nodes, root)
        if report["scenarios"]["distill"]["error"] is None:
            nodes["c"] = add_worker(cluster, "c", REPLACEMENT_CPUS)  # as an autoscaler replaces a lost node
            cluster.wait_for_nodes()
            report["nodes"]["c"] = nodes["c"].node_id
            report["scenarios"]["train_sft"] = scenario_train_sft(cluster, nodes, root, args.model)
        else:
            report["scenarios"]["train_sft"] = {"error": "not run: the distill scenario failed, so no sft_data"}
    except BaseException:  # noqa: BLE001 - the report carries it to the test
        report["error"] = traceback.format_exc()
        logger.error("failed:\n%s", report["error"])
    finally:
        report["total_s"] = round(time.monotonic() - start, 2)
        (work / "report.json").write_text(json.dumps(report, indent=2, default=str))
        try:
            import ray

            ray.shutdown()
        finally:
            if cluster is not None:
                cluster.shutdown()
                if cluster.head_node is not None:
                    cluster.remove_node(cluster.head_node)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
