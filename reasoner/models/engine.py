"""The one ``engine`` section: how every stage that runs vLLM builds its engines.

Sampling (C1), checkpoint selection, the reference pass on the vLLM backend, the greedy
evaluations and the served generator and verifier all read this section of the run config, so a
tensor-parallel setting or a KV-cache size is given once and no stage borrows another's. What
truly differs by stage stays in that stage's section (``sample.num_engines``; the replicas of a
served deployment).

:func:`engine_kwargs` turns the section into ``vllm.LLM`` / ``AsyncEngineArgs`` arguments (on top
of ``reasoner.models.vllm_backend.engine_defaults``); :func:`ray_options` into the Ray resources
and ``runtime_env`` of the actor, task or replica that holds one engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from reasoner.options import check, option

# Engine arguments that have a field of their own (or are set per model): refused in ``args``.
_OWN_FIELDS = {"tensor_parallel_size": "tensor_parallel_size", "dtype": "dtype", "max_model_len": "max_model_len",
               "gpu_memory_utilization": "gpu_memory_utilization", "model": None, "tokenizer": None}


@dataclass
class EngineConfig:
    """vLLM engines of every stage: resources, parallelism, precision, memory and environment."""

    # How engines run, never what a stage makes: a rerun may change any of these and resume.
    OPERATIONAL: ClassVar[tuple[str, ...]] = ("gpus_per_engine", "cpus_per_engine", "tensor_parallel_size",
                                              "max_model_len", "gpu_memory_utilization", "kv_cache_gib", "env",
                                              "args")

    gpus_per_engine: float = option(
        0.0, "GPUs each engine's actor reserves: 0 runs vLLM's CPU build; on GPUs at least tensor_parallel_size")
    cpus_per_engine: float = option(1.0, "CPUs each engine's actor reserves")
    tensor_parallel_size: int = option(1, "GPUs one engine shards the model over (divides a node's GPUs)")
    dtype: str = option(
        "auto", "weights and activations: 'auto' (fp32 on CPU, the checkpoint's dtype on GPU), 'bfloat16', "
        "'float16' or 'float32'")
    max_model_len: int | None = option(None, "longest prompt + response in tokens (null: the model's, capped at 4096)")
    gpu_memory_utilization: float = option(0.9, "share of each GPU's memory vLLM may take (weights + KV cache)")
    kv_cache_gib: int | None = option(
        None, "KV cache of an engine on vLLM's CPU build, in GiB (VLLM_CPU_KVCACHE_SPACE; null: vLLM's default)")
    env: dict[str, str] = option(
        {}, "environment of the engines' processes, e.g. {VLLM_CPU_OMP_THREADS_BIND: '0-1'} for the CPU build")
    args: dict[str, Any] = option({}, "further vLLM engine arguments, e.g. {enable_prefix_caching: true}")

    def __post_init__(self) -> None:
        check(self.gpus_per_engine >= 0, "engine.gpus_per_engine", self.gpus_per_engine,
              "use 0 (CPU) or the GPUs an engine holds")
        check(self.cpus_per_engine >= 0, "engine.cpus_per_engine", self.cpus_per_engine, "use 0 or more")
        check(self.tensor_parallel_size >= 1, "engine.tensor_parallel_size", self.tensor_parallel_size,
              "use 1 or more")
        check(self.gpus_per_engine == 0 or self.gpus_per_engine >= self.tensor_parallel_size,
              "engine.gpus_per_engine", self.gpus_per_engine,
              f"an engine with tensor_parallel_size={self.tensor_parallel_size} needs that many GPUs: set "
              f"engine.gpus_per_engine={self.tensor_parallel_size}")
        check(self.gpus_per_engine > 0 or self.tensor_parallel_size == 1, "engine.tensor_parallel_size",
              self.tensor_parallel_size, "tensor parallelism needs GPUs: set engine.gpus_per_engine, or use 1 on CPU")
        check(self.dtype in ("auto", "bfloat16", "float16", "float32"), "engine.dtype", self.dtype,
              "use auto, bfloat16, float16 or float32")
        check(self.max_model_len is None or self.max_model_len >= 16, "engine.max_model_len", self.max_model_len,
              "use null (the model's own) or at least 16 tokens")
        check(0 < self.gpu_memory_utilization <= 1, "engine.gpu_memory_utilization", self.gpu_memory_utilization,
              "use a share in (0, 1]")
        check(self.kv_cache_gib is None or self.kv_cache_gib >= 1, "engine.kv_cache_gib", self.kv_cache_gib,
              "use null or a whole number of GiB, at least 1")
        for key in self.args:
            own = _OWN_FIELDS.get(key)
            check(key not in _OWN_FIELDS, f"engine.args.{key}", self.args[key],
                  f"set engine.{own} instead" if own else "the model is chosen by the stage, not the engine")

    @property
    def on_gpu(self) -> bool:
        return self.gpus_per_engine > 0


def engine_kwargs(config: EngineConfig) -> dict[str, Any]:
    """The vLLM engine arguments the section sets (the caller adds the model and its defaults)."""
    kwargs: dict[str, Any] = {}
    if config.tensor_parallel_size > 1:
        kwargs["tensor_parallel_size"] = config.tensor_parallel_size
    if config.dtype != "auto":
        kwargs["dtype"] = config.dtype
    if config.max_model_len is not None:
        kwargs["max_model_len"] = config.max_model_len
    if config.on_gpu:
        kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
    return {**kwargs, **config.args}


def engine_env(config: EngineConfig) -> dict[str, str]:
    """The environment of an engine's process: ``env`` plus the CPU KV cache size."""
    env = {str(k): str(v) for k, v in config.env.items()}
    if config.kv_cache_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(config.kv_cache_gib)
    return env


def ray_options(config: EngineConfig) -> dict[str, Any]:
    """Ray options of an actor, task or replica that holds one engine: its CPUs, GPUs and environment."""
    return {"num_cpus": config.cpus_per_engine, "num_gpus": config.gpus_per_engine,
            "runtime_env": {"env_vars": engine_env(config)}}
