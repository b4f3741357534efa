"""Every shipped serve config: valid for Ray Serve, importing our builder, naming our deployments."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

SERVE_CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("serve_apps").rglob("*.yaml"))


def test_there_is_a_serve_config() -> None:
    assert SERVE_CONFIGS


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_serve_config_is_valid(path: Path) -> None:
    from ray.serve.schema import ServeDeploySchema

    from reasoner.config import load_run_config
    from serve_apps import reason

    config = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    names = {reason.Generator.name, reason.Verifier.name, reason.ReasonAPI.name}
    assert names == {"Generator", "Verifier", "ReasonAPI"}
    for app in config.applications:
        module, _, attr = app.import_path.partition(":")
        assert callable(getattr(importlib.import_module(module), attr))
        assert {d.name for d in app.deployments} <= names
        args = dict(app.args)
        assert ("run_dir" in args) != ("model" in args)
        overrides = [f"{k}={v}" for k, v in args.items() if k not in ("run_dir", "model", "config")]
        load_run_config(args.get("config"), overrides)  # the run config and overrides it names load


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_engines_autoscale_explicitly(path: Path) -> None:
    """The Generator and Verifier scale on an explicit target (Ray's LLM server defaults its target to a value
    that never scales), which a replica can reach (target <= max_ongoing_requests), and queue boundedly."""
    for app in yaml.safe_load(path.read_text())["applications"]:
        deployments = {d["name"]: d for d in app["deployments"]}
        for name in ("Generator", "Verifier"):
            deployment = deployments[name]
            scaling = deployment["autoscaling_config"]
            assert deployment["num_replicas"] == "auto"
            assert 1 <= scaling["min_replicas"] < scaling["max_replicas"]
            assert 0 < scaling["target_ongoing_requests"] <= deployment["max_ongoing_requests"]
            assert {"upscale_delay_s", "downscale_delay_s"} <= set(scaling)
            assert deployment["max_queued_requests"] >= 1


def test_build_app_takes_replicas_and_limits_from_the_serve_section() -> None:
    from reasoner.options import from_dict
    from reasoner.serving.config import ServeConfig

    fixed = ServeConfig(generator_replicas=2).replica_options("generator")
    assert fixed == {"num_replicas": 2, "max_ongoing_requests": 16, "max_queued_requests": 64}
    scaled = from_dict(ServeConfig, {"verifier_replicas": 1, "verifier_max_replicas": 3, "target_ongoing_requests": 4,
                                     "upscale_delay_s": 1, "downscale_delay_s": 5,
                                     "limits": {"max_queued_requests": 8}}).replica_options("verifier")
    assert scaled["num_replicas"] == "auto" and scaled["max_queued_requests"] == 8
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3, "initial_replicas": 1,
                                            "target_ongoing_requests": 4, "upscale_delay_s": 1,
                                            "downscale_delay_s": 5}
