"""The run config: one YAML file drives every job of a run, with a typed section per stage.

A config file is a serialised :class:`RunConfig`; ``key=value`` overrides on the command line
address any field with dots (``examples.synthetic.num_items=500``). Unknown keys are refused with
the list of valid ones; bad values with the key, the value and the fix.

Stages get their section here as they are built; the ones the pipeline can run so far are
:data:`IMPLEMENTED_STAGES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reasoner.options import (
    ConfigError,
    apply_overrides,
    check,
    config_hash,
    derived_fields,
    from_dict,
    identity,
    load_yaml,
    option,
    section,
    to_dict,
)
from reasoner.answers import CORRECT_THRESHOLD
from reasoner.data.readers import DATASETS
from reasoner.data.synthetic import SuiteConfig
from reasoner.models.engine import EngineConfig
from reasoner.models.presets import get_preset
from reasoner.distill import DistillConfig
from reasoner.eval_pool import EvaluateConfig
from reasoner.pairs import PairConfig
from reasoner.plan import ClusterSection
from reasoner.rerank import RerankConfig
from reasoner.sampling import SampleConfig
from reasoner.serving.config import ServeConfig
from reasoner.training.config import DPOConfig, SFTConfig

__all__ = ["STAGES", "IMPLEMENTED_STAGES", "DEFAULT_STAGES", "ConfigError", "RunConfig", "load_run_config",
           "config_hash", "identity", "to_dict"]

STAGES = ("make_examples", "init_model", "distill", "train_sft", "sample", "build_pairs", "train_dpo",
          "evaluate", "report")
"""Every stage of the recipe, in order (DESIGN.md)."""

IMPLEMENTED_STAGES = ("make_examples", "init_model", "distill", "train_sft", "sample", "build_pairs", "train_dpo",
                      "evaluate", "report")
"""The stages that exist so far."""

DEFAULT_STAGES = IMPLEMENTED_STAGES
"""The stages ``jobs.pipeline`` runs by default: the whole recipe built so far."""


@dataclass
class RaySection:
    """Where the jobs' Ray work runs."""

    address: str | None = option(
        None, "Ray cluster to join ('auto', 'ray://head:10001'); null: RAY_ADDRESS if set (as `ray job "
        "submit` does), else start a local cluster")
    num_cpus: int | None = option(None, "CPUs of a local cluster the job starts (null: all of this machine's)")

    def __post_init__(self) -> None:
        check(self.num_cpus is None or self.num_cpus >= 1, "ray.num_cpus", self.num_cpus,
              "give a positive number of CPUs, or null for all")


@dataclass
class DatasetSource:
    """One real dataset to read, in its native release layout (``reasoner.data.readers``)."""

    name: str = option("chartqa", f"dataset: one of {', '.join(DATASETS)}")
    path: str = option("", "root of the dataset's release: a local path or a URI (s3://bucket/chartqa)")
    splits: list[str] = option(["train"], "the dataset's own split names to read (e.g. MathVista's testmini)")
    limit: int | None = option(None, "read at most this many records of each split (null: all)")
    options: dict[str, Any] = option({}, "the reader's own options, e.g. {subset: human} for ChartQA")

    def __post_init__(self) -> None:
        check(self.name in DATASETS, "name", self.name, f"use one of {', '.join(DATASETS)}")
        check(bool(self.path), "path", self.path, "give the root of the dataset's release")
        check(bool(self.splits), "splits", self.splits, "name at least one split")
        check(self.limit is None or self.limit >= 1, "limit", self.limit, "use a positive number or null")


@dataclass
class ExamplesSection:
    """Stage make_examples: the examples of the run, into ``<run>/examples``."""

    source: Literal["synthetic", "datasets"] = option(
        "synthetic", "'synthetic' (the embedded suite) or 'datasets' (the real datasets listed in examples.datasets)")
    items_per_part: int = option(
        1000, "examples per Parquet part; each part is one Ray task, and a rerun makes only missing parts")
    synthetic: SuiteConfig = section(SuiteConfig, "the synthetic reasoning suite (source: synthetic)")
    datasets: list[DatasetSource] = option([], "the real datasets to read (source: datasets)")

    def __post_init__(self) -> None:
        check(self.items_per_part >= 1, "items_per_part", self.items_per_part, "use a positive number, e.g. 1000")
        check(self.source != "datasets" or bool(self.datasets), "datasets", self.datasets,
              "list at least one dataset, e.g. [{name: chartqa, path: /data/chartqa, splits: [train]}]")


@dataclass
class ModelSection:
    """Stage init_model: the tokenizer and randomly initialised base model, into ``<run>/models/base``."""

    preset: str = option("small", "model preset: 'tiny' (tests), 'small' (the main job), 'tiny-next' (LLaVA-NeXT)")
    path: str | None = option(
        None, "a pretrained Hugging Face LLaVA or LLaVA-NeXT checkpoint to start from instead of a preset: a local "
        "directory, a bucket URI (s3://...), or a hub id (fetched where the network allows)")
    parameters: float | None = option(
        None, "the model's size in billions of parameters, for --plan when it cannot be read (a hub id or bucket "
        "model.path); null: counted from the preset or a local model.path's config.json")
    image_size: int | None = option(
        None, "image side the vision tower takes, a multiple of its patch size (null: the suite's image_size)")
    seed: int = option(0, "seed of the random initial weights")

    def __post_init__(self) -> None:
        try:
            get_preset(self.preset)
        except ValueError as e:
            raise ConfigError(f"preset={self.preset!r} is invalid: {e}") from None
        check(self.image_size is None or self.image_size > 0, "image_size", self.image_size,
              "give a positive multiple of the preset's patch size, or null")
        check(self.path is None or (isinstance(self.path, str) and bool(self.path.strip())), "model.path", self.path,
              "give a local directory, a bucket URI or a hub id, or null for the preset")
        check(self.parameters is None or self.parameters > 0, "model.parameters", self.parameters,
              "give the size in billions, e.g. 8.4, or null")


@dataclass
class RunConfig:
    """One run of the recipe: where it lives, and a section per stage."""

    run_dir: str = option("runs/default", "the run directory: a local path or a URI (s3://bucket/runs/r1)")
    cache_dir: str = option("~/.cache/reasoner", "where engines get local copies of models from a cloud run_dir")
    overwrite: bool = option(
        False, "rebuild an artifact that was made with another config (default: refuse, naming the artifact)")
    stages: list[str] = option(list(DEFAULT_STAGES), "the stages jobs.pipeline runs, in recipe order")
    correct_threshold: float = option(
        CORRECT_THRESHOLD, "the one definition of a correct answer: its score (reasoner.answers.score) is >= "
        "this; used by distillation's filter, sampling's marks (so pairs), checkpoint selection and every evaluation")
    ray: RaySection = section(RaySection, "Ray cluster")
    cluster: ClusterSection = section(ClusterSection, "the cluster --plan plans the run for")
    examples: ExamplesSection = section(ExamplesSection, "stage make_examples")
    model: ModelSection = section(ModelSection, "stage init_model")
    engine: EngineConfig = section(
        EngineConfig, "the vLLM engines of every stage that runs one (sample, checkpoint selection, the vLLM "
        "reference pass, the evaluations, serving)")
    distill: DistillConfig = section(DistillConfig, "stage distill (A)")
    sample: SampleConfig = section(SampleConfig, "stage sample (C1)")
    pairs: PairConfig = section(PairConfig, "stage build_pairs (C2)")
    sft: SFTConfig = section(SFTConfig, "stage train_sft (B)")
    dpo: DPOConfig = section(DPOConfig, "stage train_dpo (C3)")
    evaluate: EvaluateConfig = section(EvaluateConfig, "stage evaluate: greedy accuracy and reranking curves")
    serve: ServeConfig = section(ServeConfig, "serving (D): serve_apps.reason")
    rerank: RerankConfig = section(RerankConfig, "job rerank: batch reranking of any questions (not a pipeline stage)")

    def __post_init__(self) -> None:
        check(bool(self.run_dir), "run_dir", self.run_dir, "give a local path or a URI such as s3://bucket/runs/r1")
        for stage in self.stages:
            if stage not in STAGES:
                raise ConfigError(f"stages: {stage!r} is not a stage; the stages are {', '.join(STAGES)}")
            if stage not in IMPLEMENTED_STAGES:
                raise ConfigError(f"stages: {stage!r} is not implemented yet; available: {', '.join(IMPLEMENTED_STAGES)}")
        check(isinstance(self.correct_threshold, (int, float)) and 0 < self.correct_threshold <= 1,
              "correct_threshold", self.correct_threshold, "use a score in (0, 1]; 0.5 is the recipe's")
        for owner, name, source in derived_fields(self):
            setattr(owner, name, getattr(self, source))
        order = [STAGES.index(s) for s in self.stages]
        check(order == sorted(set(order)), "stages", self.stages, f"list each stage once, in recipe order: {STAGES}")


def load_run_config(path: str | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read the run config at ``path`` (None: all defaults) and apply ``key=value`` overrides."""
    data = load_yaml(path) if path else {}
    return from_dict(RunConfig, apply_overrides(data, overrides))
