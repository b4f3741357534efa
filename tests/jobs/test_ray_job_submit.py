"""The jobs through `ray job submit`, as on a cluster: to a local head node's job server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from reasoner.rundir import RunDir
from tests.conftest import VLLM_CPU_ENV
from tests.jobs.conftest import REPO, install_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: each socket stays bound until all are chosen (one at a time,
    the kernel may give a just-closed port again: CI once got the same port twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


@pytest.fixture(scope="module")
def head_node(tmp_path_factory):
    """A separate Ray head node with the job server (dashboard) on 127.0.0.1; stopped at the end."""
    temp = tmp_path_factory.mktemp("ray-head")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    # Every port of its own: the test session's cluster (and any other) holds Ray's default ones.
    names = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
             "metrics-export-port", "ray-client-server-port", "object-manager-port", "node-manager-port")
    port, dashboard, *others = _free_ports(2 + len(names))
    own_ports = [f"--{name}={number}" for name, number in zip(names, others)]
    start = [RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--node-ip-address=127.0.0.1",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
             f"--temp-dir={temp}", "--disable-usage-stats", *own_ports]
    subprocess.run(start, check=True, capture_output=True, text=True, timeout=180, env=env)
    url = f"http://127.0.0.1:{dashboard}"
    yield url, f"127.0.0.1:{port}"
    # Stop only this head node's processes (not the session's own cluster, as `ray stop` would): they
    # all name its temp dir or GCS address. gcs_server ignores SIGTERM at times, so then SIGKILL.
    for signal in ("-TERM", "-KILL"):
        for pattern in (str(temp), f"127.0.0.1:{port}"):
            subprocess.run(["pkill", signal, "-f", pattern], capture_output=True)
        time.sleep(2)


def submit(url: str, *entrypoint: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`ray job submit` (retried while the job agent is still starting), waiting for the job to end."""
    runtime_env = json.dumps({"excludes": [".venv", ".git", "runs", "**/__pycache__", ".pytest_cache"]})
    cmd = [RAY, "job", "submit", "--address", url, "--working-dir", REPO, "--runtime-env-json", runtime_env,
           "--", *entrypoint]
    # The head node enables Ray's token authentication (its default); the CLI must use the token.
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if "No available agent" not in done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(2)


def test_data_stages_as_ray_jobs(head_node, tiny_model_dir, tmp_path) -> None:
    """make_examples, distill, sample and build_pairs, each submitted as a Ray job, on one run."""
    url, _ = head_node
    run_dir = tmp_path / "submitted"
    env = "{" + ", ".join(f"{k}: '{v}'" for k, v in VLLM_CPU_ENV.items()) + "}"
    common = [f"run_dir={run_dir}", "examples.synthetic.num_items=30", "sample.model=models/base",
              "sample.num_samples=4", "sample.max_tokens=8", "sample.max_questions=4", f"engine.env={env}",
              "engine.max_model_len=512", "pairs.max_response_tokens=null"]
    run = RunDir(str(run_dir))
    for stage in ("make_examples", "distill", "sample", "build_pairs"):
        if stage == "sample":  # the base model stands in for SFT (training has its own tests)
            install_model(run, tiny_model_dir, "models/base")
        done = submit(url, sys.executable, "-m", f"jobs.{stage}", "--config", "jobs/configs/default.yaml", *common)
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        assert "succeeded" in done.stdout + done.stderr
    assert run.manifest("examples")["counts"]["out"] == 30
    assert run.manifest("sft_data")["counts"]["out"] == run.manifest("examples")["splits"]["train"]
    assert run.read_table("candidates").num_rows == 16
    stats = run.read_json("pairs", "_stats.json")
    assert stats["questions"] == 4 and sum(stats["histogram"]) == 4
    shutil.rmtree(run_dir)
