"""One served app for the session: a tiny finished run (the tiny model as SFT, a perturbed copy of
it as DPO, beta 0.1) behind ``serve_apps.reason:build_app`` on a local Ray cluster, on 127.0.0.1.

Starting it costs three vLLM engines (the generator, and the verifier's policy and reference);
every serving test shares them.
"""

from __future__ import annotations

import shutil
import socket

import pytest

from reasoner.config import config_hash
from reasoner.rundir import RunDir, StageCounts
from tests.support.models import perturbed_copy

BETA = 0.1


@pytest.fixture(scope="session")
def served_run(tmp_path_factory, tiny_model_dir):
    """A run directory with ``models/sft`` (the tiny model) and ``models/dpo`` (a perturbed copy,
    recorded as trained by train_dpo from models/sft with beta 0.1)."""
    root = tmp_path_factory.mktemp("served") / "run"
    run = RunDir(str(root))
    shutil.copytree(tiny_model_dir, run.path("models/sft"))
    run.finish("models/sft", stage="test", config={"source": "tiny"}, config_hash=config_hash("sft"),
               counts=StageCounts(1, 1))
    perturbed_copy(tiny_model_dir, root / "models" / "dpo")
    run.finish("models/dpo", stage="train_dpo", config={"dpo": {"beta": BETA}}, config_hash=config_hash("dpo"),
               counts=StageCounts(1, 1), extra={"beta": BETA, "base_model": "models/sft"})
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def reason_url(ray_local, served_run):
    """The base URL of the served run (``http://127.0.0.1:<port>``), for the session."""
    from ray import serve

    from serve_apps.reason import build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # No CPUs reserved, so the app leaves the session's 2-CPU cluster to the tests that follow.
    app = build_app({"run_dir": str(served_run), "engine.max_model_len": "512", "engine.cpus_per_engine": "0",
                     "serve.max_tokens": "24"})
    serve.run(app, name="reasoner", route_prefix="/", blocking=False)
    yield f"http://127.0.0.1:{port}"
    serve.delete("reasoner")
    serve.shutdown()
