"""The one engine section: what it hands vLLM and Ray, and the settings it refuses."""

from __future__ import annotations

import pytest

from reasoner.config import ConfigError, load_run_config
from reasoner.models.engine import EngineConfig, engine_env, engine_kwargs, ray_options
from reasoner.options import from_dict


def test_defaults_ask_vllm_for_nothing_beyond_its_own_defaults() -> None:
    config = EngineConfig()
    assert engine_kwargs(config) == {}
    assert ray_options(config) == {"num_cpus": 1.0, "num_gpus": 0.0, "runtime_env": {"env_vars": {}}}


def test_gpu_engine_arguments_and_resources() -> None:
    config = EngineConfig(gpus_per_engine=2, cpus_per_engine=8, tensor_parallel_size=2, dtype="bfloat16",
                          max_model_len=4096, gpu_memory_utilization=0.8, args={"enable_prefix_caching": True})
    assert engine_kwargs(config) == {"tensor_parallel_size": 2, "dtype": "bfloat16", "max_model_len": 4096,
                                     "gpu_memory_utilization": 0.8, "enable_prefix_caching": True}
    assert ray_options(config)["num_gpus"] == 2 and ray_options(config)["num_cpus"] == 8


def test_cpu_kv_cache_goes_to_the_environment() -> None:
    config = EngineConfig(kv_cache_gib=2, env={"VLLM_CPU_OMP_THREADS_BIND": "0-1", "OMP_NUM_THREADS": 2})
    assert engine_env(config) == {"VLLM_CPU_OMP_THREADS_BIND": "0-1", "OMP_NUM_THREADS": "2",
                                  "VLLM_CPU_KVCACHE_SPACE": "2"}


@pytest.mark.parametrize(("data", "message"), [
    ({"tensor_parallel_size": 2}, "tensor parallelism needs GPUs"),
    ({"gpus_per_engine": 1, "tensor_parallel_size": 4}, "set engine.gpus_per_engine=4"),
    ({"dtype": "fp8"}, "engine.dtype='fp8'"),
    ({"args": {"dtype": "float16"}}, "set engine.dtype instead"),
    ({"args": {"model": "/x"}}, "the model is chosen by the stage"),
    ({"kv_cache_gib": 0}, "engine.kv_cache_gib=0"),
    ({"gpu_memory_utilization": 1.5}, "engine.gpu_memory_utilization=1.5"),
])
def test_refuses_what_cannot_run(data, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        from_dict(EngineConfig, data, prefix="engine.")


def test_every_vllm_stage_reads_the_one_section() -> None:
    """No stage section carries engine settings of its own any more: an old key is refused by name."""
    with pytest.raises(ConfigError, match="unknown config key sample.'engine_env'"):
        load_run_config(None, ["sample.engine_env={A: '1'}"])
    config = load_run_config("jobs/configs/h100.yaml")
    assert config.engine.gpus_per_engine == 1 and config.engine.dtype == "bfloat16"
    assert config.sample.num_engines == 8
