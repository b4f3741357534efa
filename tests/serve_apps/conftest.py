"""One served app for the session: a tiny finished run (the tiny model as SFT, a perturbed copy of
it as DPO, beta 0.1) behind ``serve_apps.reason:build_app`` on a local Ray cluster, on 127.0.0.1.

Starting it costs three vLLM engines (the generator, and the verifier's policy and reference);
every serving test shares them. The tests of limits need other settings (API keys, small caps, a
short timeout, one-request queues): they share one more app, ``limited_url`` (the bare tiny model:
one vLLM engine and a transformers verifier), started only when such a test runs.
"""

from __future__ import annotations

import shutil
import socket

import pytest
from PIL import Image

from reasoner.config import config_hash
from reasoner.data.images import encode_png, to_data_url
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


# A request's one user message: a 32 px image and a question.
MESSAGES = [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": to_data_url(encode_png(Image.new("RGB", (32, 32), (255, 255, 255))))}},
    {"type": "text", "text": "What is the sum of the red bar and the blue bar?"}]}]
LIMITED_KEYS = ("key-a", "key-b")
# The limited app's settings: small caps (the fuzz run's), a key rate of 20/s in bursts of 20, a 3 s
# timeout (a normal request takes 0.1-0.3 s here on an idle machine, up to 2 s on a loaded one; 64 x
# 480 tokens, the caps, 3-7 s by the machine), and a Generator that works on one request and queues one more (per
# ingress replica).
LIMITED = {
    "serve.n": "2", "serve.max_tokens": "16", "serve.beam_width": "2", "serve.expansions": "2", "serve.max_steps": "3",
    "serve.max_ongoing_requests": "1", "serve.target_ongoing_requests": "1",
    "serve.limits.max_body_bytes": "65536", "serve.limits.max_image_pixels": "4096",
    "serve.limits.max_text_chars": "200", "serve.limits.max_n": "64", "serve.limits.max_tokens": "480",
    "serve.limits.max_beam_width": "2", "serve.limits.max_expansions": "2", "serve.limits.max_steps": "3",
    "serve.limits.max_candidates": "4", "serve.limits.requests_per_minute": "1200", "serve.limits.burst": "20",
    "serve.limits.request_timeout_s": "3.0", "serve.limits.max_queued_requests": "1",
    "serve.limits.retry_after_s": "1",
}


def limited_app(model_dir: str):
    """The limited app over a bare model (``LIMITED`` settings, ``LIMITED_KEYS`` accepted)."""
    from serve_apps.reason import build_app

    app = build_app({"model": model_dir, "engine.max_model_len": "512", "engine.cpus_per_engine": "0",
                     "serve.verifier_backend": "transformers", **LIMITED})
    # REASONER_API_KEYS reaches the ingress's process through its runtime_env (the session's Ray
    # cluster started without it); Serve has no public way to change a bound deployment's options.
    ingress = app._bound_deployment
    options = dict(ingress.ray_actor_options or {})
    options["runtime_env"] = {"env_vars": {"REASONER_API_KEYS": ",".join(LIMITED_KEYS)}}
    return ingress.options(ray_actor_options=options).bind(*ingress.init_args, **ingress.init_kwargs)


@pytest.fixture(scope="session")
def limited_url(reason_url, tiny_model_dir):
    """The base URL of the limited app (``<reason_url>/limited``), for the session."""
    import time

    import requests
    from ray import serve

    serve.run(limited_app(str(tiny_model_dir)), name="limited", route_prefix="/limited", blocking=False)
    url = f"{reason_url}/limited"
    # Warm up (the first requests pay one-off costs that a 3 s timeout could cut short).
    body = {"messages": MESSAGES, "strategy": "best_of_n", "n": 2, "max_tokens": 8}
    deadline = time.monotonic() + 120
    while requests.post(f"{url}/v1/reason", json=body, headers={"Authorization": f"Bearer {LIMITED_KEYS[0]}"},
                        timeout=60).status_code != 200 and time.monotonic() < deadline:
        time.sleep(1.0)
    yield url
    serve.delete("limited")
