"""The RayService: a serve config Ray Serve accepts (no key it would ignore), importing our builder,
naming the deployments it makes, autoscaling the engines within the nodes the cluster can add, and
serving the run the jobs make."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from reasoner.config import load_run_config
from tests.k8s.manifests import (
    CLUSTER,
    REPO,
    Bundle,
    cluster_spec,
    engine_bundle,
    fits,
    parse_entrypoint,
    pod_resources,
    serve_deployments,
    worker_pods,
)

AUTOSCALING_KEYS = {"min_replicas", "max_replicas", "target_ongoing_requests", "upscale_delay_s", "downscale_delay_s"}


def serve_config(overlay) -> dict:
    return yaml.safe_load(overlay.one("RayService")["spec"]["serveConfigV2"])


def _unknown_keys(data: dict, model, where: str) -> list[str]:
    fields = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    return [f"{where}.{key}" for key in data if key not in fields]


def test_the_serve_config_is_one_ray_serve_accepts(overlay) -> None:
    """Valid for Ray Serve's schema, and with no key it would silently ignore (a misspelt
    autoscaling key would leave the defaults in place)."""
    from ray.serve.config import AutoscalingConfig, HTTPOptions
    from ray.serve.schema import (
        DeploymentSchema,
        ServeApplicationSchema,
        ServeDeploySchema,
    )

    config = serve_config(overlay)
    ServeDeploySchema.model_validate(config)
    unknown = _unknown_keys(config, ServeDeploySchema, "serveConfigV2")
    unknown += _unknown_keys(config.get("http_options", {}), HTTPOptions, "http_options")
    for app in config["applications"]:
        unknown += _unknown_keys(app, ServeApplicationSchema, app["name"])
        for deployment in app.get("deployments", []):
            where = f"{app['name']}.{deployment['name']}"
            unknown += _unknown_keys(deployment, DeploymentSchema, where)
            unknown += _unknown_keys(deployment.get("autoscaling_config", {}), AutoscalingConfig, where)
    assert not unknown, f"keys Ray Serve does not know: {unknown}"


def test_the_service_upgrades_as_kuberay_allows(overlay) -> None:
    strategy = overlay.one("RayService")["spec"].get("upgradeStrategy", {}).get("type", "NewCluster")
    assert strategy in ("NewCluster", "None", "NewClusterWithIncrementalUpgrade")


def test_the_import_path_is_our_builder_and_starts_nothing(overlay) -> None:
    # A fresh interpreter: another test of the session may have started Ray in this one.
    for app in serve_config(overlay)["applications"]:
        module, _, attr = app["import_path"].partition(":")
        assert (module, attr) == ("serve_apps.reason", "build_app")
        probe = (
            "import importlib, ray\n"
            f"assert callable(getattr(importlib.import_module({module!r}), {attr!r}))\n"
            "print(ray.is_initialized())\n"
        )
        done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "False", "importing the serve app started Ray"


def test_deployments_are_the_ones_build_app_makes(overlay) -> None:
    from serve_apps import reason

    made = {reason.Generator.name, reason.Verifier.name, reason.ReasonAPI.name}
    assert made == {"Generator", "Verifier", "ReasonAPI"}
    deployments = {d["name"]: d for d in serve_deployments(overlay.one("RayService"))}
    assert set(deployments) == made
    for name in ("Generator", "Verifier", "ReasonAPI"):
        deployment = deployments[name]
        scaling = deployment.get("autoscaling_config", {})
        if name != "ReasonAPI":
            assert AUTOSCALING_KEYS <= set(scaling), f"{name}: autoscaling given in full, not Serve's defaults"
        if scaling:
            assert deployment.get("num_replicas", "auto") == "auto", f"{name}: a fixed num_replicas stops autoscaling"
            assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"], name
            assert scaling["target_ongoing_requests"] <= deployment["max_ongoing_requests"], \
                f"{name}: replicas never see target_ongoing_requests requests, so Serve never scales up"
        # serve.limits: a full queue is a 503 with Retry-After, never a wait without bound (Serve's
        # default, -1, queues without limit).
        assert deployment.get("max_queued_requests", -1) >= 1, f"{name}: no max_queued_requests, an unbounded queue"


def _served_run(overlay) -> tuple[dict, object]:
    app = serve_config(overlay)["applications"][0]
    args = {str(k): str(v) for k, v in app["args"].items()}
    overrides = [f"{k}={v}" for k, v in args.items() if k not in ("run_dir", "model", "config")]
    return args, load_run_config(str(REPO / args["config"]), overrides + [f"run_dir={args['run_dir']}"])


def test_the_service_serves_the_run_the_jobs_make(overlay) -> None:
    args, _ = _served_run(overlay)
    jobs = {(e.run_dir, e.config) for e in (parse_entrypoint(j["spec"]["entrypoint"]) for j in overlay.rayjobs)}
    assert jobs == {(args.get("run_dir"), args.get("config"))}, \
        f"{overlay.name}: the RayService's run_dir and config differ from the RayJobs' {jobs}"
    runtime_env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    runtime_env["env_vars"].pop("REASONER_RUN_DIR")
    assert serve_config(overlay)["applications"][0]["runtime_env"] == runtime_env


@pytest.mark.parametrize("bound", ["min_replicas", "max_replicas"])
def test_the_replicas_fit_the_cluster(overlay, bound: str) -> None:
    """At their least, the engine replicas fit the pods the service keeps (minReplicas): it serves
    without waiting for nodes; at their most they fit the pods the autoscaler may add (maxReplicas).
    A replica holds one engine of the run config's ``engine`` section (build_app's ray_actor_options)."""
    service = overlay.one("RayService")
    _, config = _served_run(overlay)
    spec = cluster_spec(service)
    if bound == "min_replicas":
        pods = [pod_resources(g) for g in spec["workerGroupSpecs"] for _ in range(g["minReplicas"])]
    else:
        pods = worker_pods(spec)
    bundles: list[Bundle] = []
    for d in serve_deployments(service):
        if d["name"] in ("Generator", "Verifier"):
            bundles += [engine_bundle(config)] * d["autoscaling_config"][bound]
    assert fits(bundles, pods), f"{overlay.name}: {len(bundles)} engines of {engine_bundle(config)} on {pods}"


def test_a_misspelt_key_is_caught() -> None:
    from ray.serve.config import AutoscalingConfig

    unknown = _unknown_keys({"min_replica": 1, "max_replicas": 2}, AutoscalingConfig, "Generator")
    assert unknown == ["Generator.min_replica"]
