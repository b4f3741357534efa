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
