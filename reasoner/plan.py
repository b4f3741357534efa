"""The resource plan of a run config (``--plan`` on any job): what each stage asks of the cluster the
config declares, and what cannot run, before anything starts.

It reads the config only: no run directory, no weights, no Ray, no GPU. Per stage it gives the
workers or engines, the GPUs and CPUs each, the tensor parallel size, and an estimate of the
memory one GPU (or one node, on CPU) needs for the model at its dtype; and it refuses, naming the
key and the fix: a GPU cluster whose vLLM or training stage asks no GPU, a tensor parallel size
that does not divide a node's GPUs, more engines or workers than the cluster holds, and a model
that cannot fit.

Memory estimates (per GPU, weights and optimiser only; activations and the KV cache come on top):
- a vLLM engine: the weights at the engine's dtype over the tensor parallel size, against
  ``gpu_memory_utilization`` of a GPU (vLLM refuses to start otherwise);
- training with DeepSpeed ZeRO and AdamW: 2 bytes a parameter of bf16 weights (4 in fp32), as
  many of gradients, and 12 of fp32 master weights and Adam moments: ZeRO-2 shards the gradients
  and optimiser states over the workers, ZeRO-3 the weights too (the ZeRO paper's accounting,
  Rajbhandari et al. 2020, section 3); with LoRA only the base weights count.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reasoner.options import check, option

if TYPE_CHECKING:
    from reasoner.config import RunConfig

GIB = 1024**3
NOMINAL_VOCAB = 4096
"""The embedded default's tokenizer vocabulary, about (trained on the suite's text); only for estimates."""


@dataclass
class ClusterSection:
    """The cluster the run is planned for (``--plan``): a number of like nodes."""

    nodes: int = option(1, "nodes of the cluster (workers; a CPU-only head is not counted)")
    gpus_per_node: int = option(0, "GPUs of a node (H100 nodes: 8; 0: a CPU cluster)")
    gpu_memory_gib: float = option(80.0, "memory of one GPU in GiB (H100: 80)")
    cpus_per_node: int | None = option(None, "CPUs of a node (null: this machine's)")
    memory_gib_per_node: float | None = option(None, "memory of a node in GiB (null: this machine's)")

    def __post_init__(self) -> None:
        check(self.nodes >= 1, "cluster.nodes", self.nodes, "declare at least one node")
        check(self.gpus_per_node >= 0, "cluster.gpus_per_node", self.gpus_per_node, "use 0 (CPU) or more")
        check(self.gpu_memory_gib > 0, "cluster.gpu_memory_gib", self.gpu_memory_gib, "use e.g. 80 for an H100")
        check(self.cpus_per_node is None or self.cpus_per_node >= 1, "cluster.cpus_per_node", self.cpus_per_node,
              "use a positive number, or null for this machine's")
        check(self.memory_gib_per_node is None or self.memory_gib_per_node > 0, "cluster.memory_gib_per_node",
              self.memory_gib_per_node, "use a positive number, or null for this machine's")

    @property
    def cpus(self) -> int:
        return self.cpus_per_node if self.cpus_per_node is not None else (os.cpu_count() or 1)

    @property
    def memory_gib(self) -> float:
        if self.memory_gib_per_node is not None:
            return self.memory_gib_per_node
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


@dataclass
class StagePlan:
    """What one stage asks for: ``count`` units (workers, engines or tasks) of ``gpus`` and ``cpus`` each."""

    stage: str
    runs_as: str
    count: int
    gpus: float
    cpus: float
    tensor_parallel: int | None = None
    dtype: str | None = None
    memory_gib: float | None = None  # per GPU (per node on CPU) for the model: an estimate
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    stages: list[StagePlan]
    problems: list[str]
    parameters: float | None

    @property
    def ok(self) -> bool:
        return not self.problems


def count_parameters(config: dict[str, Any]) -> float:
    """Parameters of a LLaVA-family model from its config (``config.json``'s dict): the Llama text
    part, the CLIP vision tower and the 2-layer projector, counted from their sizes."""
    text, vision = config.get("text_config") or {}, config.get("vision_config") or {}
    h = text.get("hidden_size", 4096)
    layers = text.get("num_hidden_layers", 32)
    heads = text.get("num_attention_heads", 32)
    kv = text.get("num_key_value_heads", heads)
    inter = text.get("intermediate_size", 11008)
    vocab = text.get("vocab_size", config.get("vocab_size", 32000))
    head_dim = h // heads
    attention = 2 * h * h + 2 * h * kv * head_dim
    text_params = layers * (attention + 3 * h * inter + 2 * h) + h + 2 * vocab * h
    hv = vision.get("hidden_size", 1024)
    vlayers = vision.get("num_hidden_layers", 24)
    vinter = vision.get("intermediate_size", 4096)
    patch, size = vision.get("patch_size", 14), vision.get("image_size", 336)
    vision_params = (3 * patch * patch * hv + ((size // patch) ** 2 + 1) * hv
                     + vlayers * (4 * hv * hv + 4 * hv + 2 * hv * vinter + vinter + hv + 4 * hv) + 4 * hv)
    projector = hv * h + h + h * h + h
    return float(text_params + vision_params + projector)


def preset_config(name: str, image_size: int | None = None) -> dict[str, Any]:
    """The config dict of an embedded preset, with the nominal vocabulary (for estimates)."""
    from reasoner.models.presets import get_preset

    p = get_preset(name)
    return {"text_config": {"hidden_size": p.text_hidden_size, "num_hidden_layers": p.text_layers,
                            "num_attention_heads": p.text_heads, "num_key_value_heads": p.text_kv_heads,
                            "intermediate_size": p.text_intermediate_size, "vocab_size": NOMINAL_VOCAB},
            "vision_config": {"hidden_size": p.vision_hidden_size, "num_hidden_layers": p.vision_layers,
                              "intermediate_size": p.vision_intermediate_size, "patch_size": p.patch_size,
                              "image_size": image_size or p.image_size}}


def model_parameters(config: RunConfig) -> tuple[float | None, str]:
    """The base model's parameter count and where it came from: ``model.parameters`` (billions),
    a local ``model.path``'s ``config.json``, or the preset. None when none of those tells."""
    model = config.model
    if model.parameters is not None:
        return model.parameters * 1e9, "model.parameters"
    path = model.path
    if path:
        local = os.path.join(os.path.expanduser(path), "config.json")
        if "://" not in path and os.path.isfile(local):
            with open(local, encoding="utf-8") as f:
                return count_parameters(json.load(f)), f"{local}"
        return None, "model.path (set model.parameters to plan its memory)"
    return count_parameters(preset_config(model.preset, model.image_size)), f"preset {model.preset}"


def _bytes(dtype: str | None) -> int:
    return 4 if dtype in ("float32", "fp32") else 2


def _engine_dtype(config: RunConfig) -> str:
    dtype = config.engine.dtype
    if dtype == "auto":
        return "bfloat16" if config.cluster.gpus_per_node else "float32"
    return dtype


TRAIN_STAGES = {"train_sft": "sft", "train_dpo": "dpo"}


def _engine_problems(config: RunConfig, memory: float | None, dtype: str) -> list[str]:
    """What the engine section asks that its cluster cannot give, whichever stage runs the engine."""
    cluster, engine = config.cluster, config.engine
    tp, problems = engine.tensor_parallel_size, []
    if not cluster.gpus_per_node:
        if engine.gpus_per_engine > 0:
            problems.append(f"engine.gpus_per_engine={engine.gpus_per_engine} but the cluster declares no GPU "
                            "(cluster.gpus_per_node=0); set one of them")
        return problems
    if engine.gpus_per_engine == 0:
        problems.append(f"engine.gpus_per_engine=0 on a cluster of {cluster.gpus_per_node}-GPU nodes: vLLM would "
                        f"run on CPU; set engine.gpus_per_engine={tp} (= tensor_parallel_size)")
    elif engine.gpus_per_engine != tp:
        problems.append(f"engine.gpus_per_engine={engine.gpus_per_engine} but engine.tensor_parallel_size={tp}: an "
                        "engine shards over exactly its GPUs; make them equal")
    if cluster.gpus_per_node % tp:
        divisors = [d for d in range(1, cluster.gpus_per_node + 1) if cluster.gpus_per_node % d == 0]
        problems.append(f"engine.tensor_parallel_size={tp} does not divide a node's {cluster.gpus_per_node} GPUs; "
                        f"use one of {divisors}")
    budget = cluster.gpu_memory_gib * engine.gpu_memory_utilization
    if memory is not None and memory > budget:
        problems.append(f"the model's weights need {memory:.1f} GiB a GPU at {dtype} with tensor parallel {tp}, "
                        f"more than {budget:.1f} GiB (engine.gpu_memory_utilization={engine.gpu_memory_utilization} "
                        f"of {cluster.gpu_memory_gib} GiB); raise engine.tensor_parallel_size (and gpus_per_engine)")
    return problems


def plan(config: RunConfig, stages: list[str] | None = None) -> Plan:
    """The plan of ``stages`` (default: the config's ``stages``) on the config's cluster."""
    cluster, engine = config.cluster, config.engine
    stages = list(config.stages if stages is None else stages)
    gpus_total, cpus_total = cluster.nodes * cluster.gpus_per_node, cluster.nodes * cluster.cpus
    on_gpu = cluster.gpus_per_node > 0
    params, origin = model_parameters(config)
    problems: list[str] = []
    rows: list[StagePlan] = []

    # One engine section for every vLLM stage: its own problems are said once, for all of them.
    engine_dtype, tp = _engine_dtype(config), engine.tensor_parallel_size
    engine_memory = None if params is None else params * _bytes(engine_dtype) / tp / GIB
    engine_stages: list[str] = []

    def engine_row(stage: str, count: int, what: str) -> StagePlan:
        engine_stages.append(stage)
        row = StagePlan(stage, what, count, engine.gpus_per_engine, engine.cpus_per_engine, tp, engine_dtype,
                        engine_memory)
        if on_gpu and count * engine.gpus_per_engine > gpus_total:
            problems.append(f"{stage}: {count} engines x {engine.gpus_per_engine} GPUs > the cluster's "
                            f"{gpus_total}; lower the engine count or add nodes (cluster.nodes)")
        if count * engine.cpus_per_engine > cpus_total:
            problems.append(f"{stage}: {count} engines x {engine.cpus_per_engine} CPUs > the cluster's {cpus_total}; "
                            "lower engine.cpus_per_engine or the engine count")
        if not on_gpu and engine_memory is not None and engine_memory * count > cluster.memory_gib:
            problems.append(f"{stage}: {count} engines' weights ({engine_memory * count:.1f} GiB) exceed a node's "
                            f"{cluster.memory_gib:.1f} GiB")
        return row

    for stage in stages:
        if stage in TRAIN_STAGES:
            key = TRAIN_STAGES[stage]
            section = getattr(config, key)
            dtype = section.dtype
            memory = None
            if params is not None:
                n = section.num_workers
                weights = params * _bytes(dtype)
                if section.lora.enabled:
                    memory = weights / (n if section.zero_stage == 3 else 1)
                else:
                    sharded = params * (_bytes(dtype) + 12)  # gradients + fp32 master weights and Adam moments
                    memory = (weights + sharded) / n if section.zero_stage == 3 else weights + sharded / n
                memory /= GIB
            gpus = 1.0 if section.use_gpu else 0.0
            row = StagePlan(stage, f"Ray Train workers (ZeRO-{section.zero_stage})", section.num_workers, gpus,
                            section.cpus_per_worker, None, dtype, memory)
            rows.append(row)
            if on_gpu and not section.use_gpu:
                problems.append(f"{stage}: {key}.use_gpu=false on a cluster of GPUs: training would run on CPU; "
                                f"set {key}.use_gpu=true")
            if section.use_gpu and not on_gpu:
                problems.append(f"{stage}: {key}.use_gpu=true but the cluster declares no GPU "
                                "(cluster.gpus_per_node=0)")
            if section.use_gpu and section.num_workers > gpus_total:
                problems.append(f"{stage}: {key}.num_workers={section.num_workers} workers of one GPU each > the "
                                f"cluster's {gpus_total} GPUs; lower {key}.num_workers or add nodes")
            if section.use_gpu and section.dtype == "float32":
                row.notes.append("fp32 on GPUs: bfloat16 halves the memory")
            if not section.use_gpu and section.dtype == "bfloat16":
                row.notes.append("bf16 on CPU: 24x slower than fp32 on CPUs without AMX (README)")
            if section.num_workers * section.cpus_per_worker > cpus_total:
                problems.append(f"{stage}: {key}.num_workers x cpus_per_worker = {section.num_workers} x "
                                f"{section.cpus_per_worker} > the cluster's {cpus_total} CPUs; lower one of them")
            capacity = cluster.gpu_memory_gib if section.use_gpu else cluster.memory_gib
            if memory is not None and memory > capacity:
                problems.append(f"{stage}: the model's weights and optimiser need about {memory:.1f} GiB a "
                                f"{'GPU' if section.use_gpu else 'node'}, more than its {capacity:.1f} GiB; use "
                                f"{key}.zero_stage=3, more workers, {key}.dtype=bfloat16 or {key}.lora.enabled=true")
            if section.eval.questions:
                rows.append(engine_row(stage, 1, f"vLLM engine ({key}.eval after training)"))
            if key == "dpo" and section.reference_backend == "vllm":
                rows.append(engine_row(stage, 1, "vLLM engine (reference pass)"))
        elif stage == "sample":
            rows.append(engine_row(stage, config.sample.num_engines, "vLLM engines (Ray Data actor pool)"))
        elif stage == "evaluate":
            rows.append(engine_row(stage, 1, "vLLM engine, one model at a time"))
        elif stage == "distill":
            d = config.distill
            what = f"Ray Data workers ({d.max_concurrency} requests each to {d.teacher})"
            rows.append(StagePlan(stage, what, d.num_workers, 0.0, 1.0))
            if d.num_workers > cpus_total:
                problems.append(f"{stage}: distill.num_workers={d.num_workers} > the cluster's {cpus_total} CPUs")
        elif stage == "rerank":
            for what in ("generator", "verifier"):
                rows.append(engine_row(stage, config.rerank.num_engines, f"vLLM engines ({what} pass)"))
        elif stage == "serve":
            s = config.serve
            # Autoscaling may start up to <deployment>_max_replicas: the plan holds the most.
            generators = s.generator_max_replicas or s.generator_replicas
            verifiers = s.verifier_max_replicas or s.verifier_replicas
            scaling = " at most, autoscaled" if (generators, verifiers) != (s.generator_replicas,
                                                                           s.verifier_replicas) else ""
            rows.append(engine_row("serve", generators, f"Generator replicas (one engine each){scaling}"))
            verifier = engine_row("serve", verifiers, f"Verifier replicas (policy and reference engines){scaling}")
            verifier.count = 2 * verifiers
            rows.append(verifier)
            need = (generators + 2 * verifiers) * engine.gpus_per_engine
            if on_gpu and need > gpus_total:
                problems.append(f"serve: {generators} Generator and {verifiers} Verifier replicas{scaling} need "
                                f"{need:g} GPUs, more than the cluster's {gpus_total}")
        else:  # make_examples, init_model, build_pairs, report: Ray tasks on CPUs
            rows.append(StagePlan(stage, "Ray tasks (CPU)", 1, 0.0, 1.0))
    if engine_stages:
        users = ", ".join(dict.fromkeys(engine_stages))
        problems += [f"{users}: {p}" for p in _engine_problems(config, engine_memory, engine_dtype)]
    if params is None:
        problems_note = f"model size unknown: {origin}"
        for row in rows:
            if row.memory_gib is None and (row.gpus or "engine" in row.runs_as or "Train" in row.runs_as):
                row.notes.append(problems_note)
    return Plan(rows, problems, params)
