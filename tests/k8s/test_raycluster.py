"""The interactive RayCluster (for ``ray job submit``): a head that runs no work, worker groups the
autoscaler starts from zero and removes when idle, and room for every stage of the overlay's run."""

from __future__ import annotations

from reasoner.config import STAGES, load_run_config
from tests.k8s.manifests import (
    REPO,
    cluster_spec,
    fits,
    parse_entrypoint,
    pod_resources,
    stage_phases,
    worker_pods,
)


def test_the_head_runs_no_work_and_idle_workers_go(overlay) -> None:
    spec = cluster_spec(overlay.one("RayCluster"))
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    assert all(g["minReplicas"] == 0 for g in spec["workerGroupSpecs"]), "an idle cluster is its head alone"


def test_the_production_cluster_adds_h100_nodes(h100) -> None:
    groups = {g["groupName"]: g for g in cluster_spec(h100.one("RayCluster"))["workerGroupSpecs"]}
    assert pod_resources(groups["h100"]).gpus == 8 and groups["h100"]["maxReplicas"] >= 1


def test_every_stage_of_the_run_fits_the_cluster(overlay) -> None:
    """Whatever stage one submits (with the run config the overlay's jobs use), the autoscaler can
    add the nodes it asks for."""
    entry = parse_entrypoint(overlay.rayjobs[0]["spec"]["entrypoint"])
    config = load_run_config(str(REPO / entry.config), list(entry.overrides))
    pods = worker_pods(cluster_spec(overlay.one("RayCluster")))
    for stage in STAGES:
        for phase in stage_phases(stage, config):
            assert fits(phase, pods), f"{overlay.name}: {stage} asks for {phase}, the cluster can have {pods}"
