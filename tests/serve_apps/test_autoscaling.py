"""Serve autoscaling of an engine deployment, for real: the Generator's replicas rise under load and
fall after it (``serve.generator_max_replicas``, the run config's keys that ``build_app`` turns into
Serve's ``autoscaling_config``; ``benchmarks/autoscaling.py`` shows both engine deployments, longer).

A third app of the session's Serve (``/scaling``): the bare tiny model, its Generator autoscaled 1..2
with a target of one ongoing request and short delays, its verifier the transformers scorer (no
engine). Serve averages the ongoing requests over its look-back period (30 s) before it scales down.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.serve_apps.conftest import MESSAGES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "scaling"


def generator_replicas() -> tuple[int, int]:
    """(RUNNING, STARTING) replicas of the scaling app's Generator, from ``serve.status()``."""
    from ray import serve

    states = serve.status().applications[APP].deployments["Generator"].replica_states
    states = {str(getattr(k, "value", k)): v for k, v in states.items()}
    return states.get("RUNNING", 0), states.get("STARTING", 0)


def wait_for(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting until {what}; Generator (running, starting) "
                                 f"= {generator_replicas()}")
        time.sleep(1.0)


def test_generator_replicas_rise_under_load_and_fall_after_it(reason_url, tiny_model_dir):
    from ray import serve

    from serve_apps.reason import build_app

    app = build_app({"model": str(tiny_model_dir), "engine.max_model_len": "512", "engine.cpus_per_engine": "0",
                     "serve.verifier_backend": "transformers", "serve.max_tokens": "32",
                     "serve.generator_replicas": "1", "serve.generator_max_replicas": "2",
                     "serve.max_ongoing_requests": "4", "serve.target_ongoing_requests": "1",
                     "serve.upscale_delay_s": "1", "serve.downscale_delay_s": "5",
                     "serve.limits.max_queued_requests": "64"})
    serve.run(app, name=APP, route_prefix=f"/{APP}", blocking=False)
    url = f"{reason_url}/{APP}/v1/chat/completions"
    body = {"messages": MESSAGES, "max_tokens": 32, "temperature": 1.0}
    try:
        wait_for(lambda: requests.post(url, json=body, timeout=60).status_code == 200, "the app answers", 300)
        assert generator_replicas() == (1, 0)

        statuses: list[int] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                statuses.append(requests.post(url, json=body, timeout=120).status_code)

        clients = [threading.Thread(target=client) for _ in range(6)]
        for thread in clients:
            thread.start()
        try:  # six clients keep six requests ongoing: over the target of one a replica
            wait_for(lambda: generator_replicas()[0] == 2, "a second Generator replica runs", 300)
        finally:
            stop.set()
            for thread in clients:
                thread.join()
        assert statuses and set(statuses) == {200}, sorted(set(statuses))  # nothing lost while it scaled

        wait_for(lambda: generator_replicas() == (1, 0), "the Generator is back to one replica", 180)
        assert requests.post(url, json=body, timeout=60).status_code == 200
    finally:
        serve.delete(APP)
