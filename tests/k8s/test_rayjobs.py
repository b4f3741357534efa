"""The RayJobs: one per stage and one for the pipeline, each naming a job module and a run config that
exist and load, all on the overlay's one run, each bringing a cluster its stage fits."""

from __future__ import annotations

import pytest
import yaml

from reasoner.config import STAGES, load_run_config
from tests.k8s.manifests import (
    CLUSTER,
    REPO,
    Bundle,
    cluster_spec,
    entrypoint_bundle,
    fits,
    parse_entrypoint,
    stage_phases,
    worker_pods,
)

OBJECT_STORES = ("s3://", "gs://", "gcs://", "abfs://", "hdfs://")


def entrypoints(overlay) -> dict[str, object]:
    return {job["metadata"]["name"]: parse_entrypoint(job["spec"]["entrypoint"]) for job in overlay.rayjobs}


def test_a_rayjob_per_stage_and_one_for_the_pipeline(overlay) -> None:
    modules = sorted(e.module for e in entrypoints(overlay).values())
    assert modules == sorted([f"jobs.{s}" for s in STAGES] + ["jobs.pipeline"])


def test_entrypoints_name_a_job_and_a_config_that_exist(overlay) -> None:
    for name, entry in entrypoints(overlay).items():
        assert entry.module.startswith("jobs.") and "." not in entry.stage, name
        assert (REPO / "jobs" / f"{entry.stage}.py").is_file(), f"{name}: no job module jobs/{entry.stage}.py"
        assert (REPO / entry.config).is_file(), f"{name}: no config {entry.config} (relative to the project)"
        load_run_config(str(REPO / entry.config), list(entry.overrides))  # the overrides are valid keys and values


def test_the_jobs_of_an_overlay_work_on_one_run_in_a_bucket(overlay) -> None:
    runs = {e.run_dir for e in entrypoints(overlay).values()}
    configs = {e.config for e in entrypoints(overlay).values()}
    assert len(runs) == 1 and len(configs) == 1, f"{overlay.name}: runs {runs}, configs {configs}"
    run = runs.pop()
    assert run and run.startswith(OBJECT_STORES), f"{run!r}: pods share a run only through an object store"
    expected = {"dev": "jobs/configs/default.yaml", "h100": "jobs/configs/h100.yaml"}.get(overlay.name)
    assert expected in (None, *configs), f"{overlay.name} runs {configs}, not {expected}"


def test_the_pipeline_runs_every_stage(overlay) -> None:
    entry = next(e for e in entrypoints(overlay).values() if e.stage == "pipeline")
    config = load_run_config(str(REPO / entry.config), list(entry.overrides))
    assert tuple(config.stages) == STAGES


def test_a_job_brings_its_cluster_and_cleans_up(overlay) -> None:
    for job in overlay.rayjobs:
        spec, name = job["spec"], job["metadata"]["name"]
        assert "clusterSelector" not in spec and spec["rayClusterSpec"], f"{name} brings its own cluster"
        assert spec["shutdownAfterJobFinishes"] is True, f"{name}: its cluster would outlive the job"
        assert 0 < spec["ttlSecondsAfterFinished"] <= 3600, name
        assert spec["backoffLimit"] >= 1, f"{name}: a failed job is retried (stages resume)"
        assert spec.get("submissionMode", "K8sJobMode") == "K8sJobMode", name


def test_jobs_run_with_the_runtime_env_of_cluster(overlay) -> None:
    expected = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    expected["env_vars"].pop("REASONER_RUN_DIR")  # the jobs name their run in the entrypoint
    for job in overlay.rayjobs:
        assert yaml.safe_load(job["spec"]["runtimeEnvYAML"]) == expected, job["metadata"]["name"]


def _demand(phases: list[list[Bundle]], driver: Bundle | None) -> str:
    return "; ".join("+".join(f"({b.cpus:g} CPU, {b.gpus:g} GPU)" for b in p + ([driver] if driver else []))
                     for p in phases) or "nothing"


def test_each_job_fits_its_cluster(overlay) -> None:
    """Every phase of the stage, with the driver's own reservation (entrypointNumCpus/Gpus), fits the
    worker pods of the job's cluster at once: GPUs the entrypoint takes are GPUs the Train workers or
    engines cannot have, and an actor of 4 GPUs needs a pod of 4."""
    for job in overlay.rayjobs:
        entry = parse_entrypoint(job["spec"]["entrypoint"])
        config = load_run_config(str(REPO / entry.config), list(entry.overrides))
        spec = cluster_spec(job)
        pods, driver = worker_pods(spec), entrypoint_bundle(job)
        phases = stage_phases(entry.stage, config)
        for phase in phases or [[]]:
            bundles = phase + ([driver] if driver else [])
            assert fits(bundles, pods), (f"{job['metadata']['name']}: {entry.stage} asks for {_demand([phase], driver)}"
                                         f"; its workers are {pods}")
        if driver is None:
            assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"  # the driver runs on the head
        gpus_asked = max((sum(b.gpus for b in p) for p in phases), default=0.0) + (driver.gpus if driver else 0.0)
        if gpus_asked == 0:
            held = [g for g in spec.get("workerGroupSpecs", []) if g["minReplicas"] > 0 and worker_pods(
                {"workerGroupSpecs": [g]})[0].gpus > 0]
            assert not held, f"{job['metadata']['name']}: GPU nodes held by a stage that uses none"


def test_the_pipeline_scales_from_zero(overlay) -> None:
    job = next(j for j in overlay.rayjobs if parse_entrypoint(j["spec"]["entrypoint"]).stage == "pipeline")
    spec = cluster_spec(job)
    assert spec["enableInTreeAutoscaling"] is True
    if overlay.name == "h100":
        assert all(g["minReplicas"] == 0 for g in spec["workerGroupSpecs"]), "idle nodes between stages go away"


@pytest.mark.parametrize("command", [
    "python -m jobs.sample --config jobs/configs/h100.yaml run_dir=s3://b/r?endpoint_override=h:9000&scheme=http",
    "python -m jobs.sample --config jobs/configs/h100.yaml run_dir=s3://b/r; rm -rf /",
    "python -m jobs.sample run_dir=s3://b/r",
    "python -m jobs.sample --config jobs/configs/h100.yaml --verbose",
])
def test_an_entrypoint_that_is_not_one_plain_command_is_refused(command: str) -> None:
    with pytest.raises(ValueError):
        parse_entrypoint(command)
