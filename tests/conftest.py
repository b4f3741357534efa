"""Session fixtures shared by the whole test suite.

- ``model_texts``: a few sentences in the synthetic suite's style, to train tokenizers on;
- ``tiny_model_dir`` / ``tiny_next_model_dir``: the ``tiny`` LLaVA and ``tiny-next`` LLaVA-NeXT
  models (random weights, locally trained tokenizer), built once per session. Treat them as
  read-only: copy a directory before changing it;
- ``vllm_cpu_env``: the environment vLLM's CPU build needs here (KV cache of 1 GiB, both cores);
- ``tiny_vllm_engine``: one vLLM engine over the tiny model for the session (started on first
  use, about 20-30 s; shut down at the end of the session);
- ``ray_local``: one local Ray cluster (2 CPUs, no dashboard) for the session.

Tests that start a real engine or a Ray cluster are marked ``@pytest.mark.integration``.
"""

from __future__ import annotations

import pytest

MODEL_TEXTS = [
    "What is the value of the red bar?\nThe red bar is 4.\n### Answer: 4",
    "What is the sum of the red bar and the blue bar?\nThe red bar is 4.\nThe blue bar is 7.\n"
    "4 + 7 = 11.\n### Answer: 11",
    "What is the difference between the green bar and the blue bar?\nThe green bar is 12.\n"
    "The blue bar is 5.\n12 - 5 = 7.\n### Answer: 7",
    "How many red squares are there?\nA. 2\nB. 3\nC. 5\nD. 4\nThere are 3 red squares.\n"
    "Option B is 3.\n### Answer: B",
    "What is the perimeter of the square?\nA. 49\nB. 50\nC. 47\nD. 48\nThe side is 12.\n"
    "4 * 12 = 48.\nOption D is 48.\n### Answer: D",
    "How many shapes are there in total?\nThe number of red shapes is 3.\nThe number of blue shapes "
    "is 2.\n3 + 2 = 5.\n### Answer: 5",
    "What is the total of all fields?\nField A is 18.\nField B is 6.\n18 + 6 = 24.\n### Answer: 24",
    "Which bar is the tallest?\nThe tallest bar is the blue bar.\n### Answer: blue",
] * 3

VLLM_CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "0-1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
}


@pytest.fixture(scope="session")
def model_texts() -> list[str]:
    """Training text for tokenizers: sentences in the synthetic suite's style."""
    return list(MODEL_TEXTS)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, model_texts):
    """The ``tiny`` preset (LLaVA, 32 px images, 16 image tokens), built once per session."""
    from reasoner.models import build_base_model

    return build_base_model(tmp_path_factory.mktemp("models") / "tiny", "tiny", texts=model_texts, seed=0)


@pytest.fixture(scope="session")
def tiny_next_model_dir(tmp_path_factory, model_texts):
    """The ``tiny-next`` preset (LLaVA-NeXT, 32 px tiles), built once per session."""
    from reasoner.models import build_base_model

    return build_base_model(tmp_path_factory.mktemp("models") / "tiny-next", "tiny-next", texts=model_texts, seed=0)


@pytest.fixture(scope="session")
def vllm_cpu_env():
    """vLLM's CPU settings for this machine, in this process's environment for the session.

    Engine processes inherit them. Values already set in the environment win.
    """
    import os

    with pytest.MonkeyPatch.context() as patch:
        for key, value in VLLM_CPU_ENV.items():
            patch.setenv(key, os.environ.get(key, value))
        yield dict(os.environ)


@pytest.fixture(scope="session")
def tiny_vllm_engine(vllm_cpu_env, tiny_model_dir):
    """One ``vllm.LLM`` over the tiny model (fp32, eager) for the whole session."""
    pytest.importorskip("vllm")
    from reasoner.models import make_vllm_engine, shutdown_vllm_engine

    llm = make_vllm_engine(tiny_model_dir)
    yield llm
    shutdown_vllm_engine(llm)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster for the session, started as the jobs start theirs (``init_ray``), with
    2 CPUs. Yields the ``ray`` module.

    If something in the test process already started Ray, that cluster is used (and left alone).
    """
    import ray

    if ray.is_initialized():
        yield ray
        return
    from jobs._common import init_ray
    from reasoner.config import RaySection, RunConfig

    init_ray(RunConfig(ray=RaySection(num_cpus=2)))
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items) -> None:
    """Skip (never fake) the tests marked ``gpu`` where there is no CUDA GPU."""
    gpu_tests = [item for item in items if "gpu" in item.keywords]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none here")
    for item in gpu_tests:
        item.add_marker(skip)
