"""The config sections of the training stages: ``sft`` (stage B) and ``dpo`` (stage C3).

Both share :class:`TrainConfig`: the optimisation (learning rate, batch sizes, steps), the
DeepSpeed ZeRO stage, the Ray Train workers, LoRA, checkpoints and recovery. Batch sizes are
checked at construction: the global batch must split evenly over workers and per-device batches
(the rest is gradient accumulation), so a bad combination fails before any worker starts.

The paper's settings (Zhang et al. 2024, section 3.2 and 4) for an 8B LLaVA-NeXT on 8 H100 live
in ``jobs/configs/h100.yaml``; the defaults here are the embedded default's (the ``small`` model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from reasoner.evaluation import GreedyEvalConfig
from reasoner.options import check, option, section
from reasoner.training.select import SelectConfig

SFT_MIXES = ("format", "direct", "cot", "both")


@dataclass
class LoraConfig:
    """LoRA (peft) instead of full fine-tuning: the adapter is exported as a peft adapter."""

    enabled: bool = option(False, "train a LoRA adapter instead of every weight")
    r: int = option(8, "LoRA rank")
    alpha: int = option(16, "LoRA alpha (scale alpha / r)")
    dropout: float = option(0.0, "dropout on the LoRA input")
    target_modules: list[str] = option(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "module names to adapt: the language model's attention and MLP projections (not lm_head: "
        "TRL's DPO and vLLM's prompt log-probs both ignore an adapter there)")

    def __post_init__(self) -> None:
        check(self.r >= 1, "r", self.r, "use a positive rank, e.g. 8")
        check(self.alpha >= 1, "alpha", self.alpha, "use a positive alpha, e.g. 16")
        check(0 <= self.dropout < 1, "dropout", self.dropout, "use a value in [0, 1)")
        check(bool(self.target_modules) and "lm_head" not in self.target_modules, "target_modules",
              self.target_modules, "list the projections to adapt, without lm_head")


@dataclass
class TrainConfig:
    """What every training stage shares: optimisation, batch sizes, ZeRO, workers, checkpoints."""

    # How the work is run, not what it makes: a rerun may change these and resume the same stage.
    # (The evaluation reads the exported model; it does not change it.)
    OPERATIONAL: ClassVar[tuple[str, ...]] = ("cpus_per_worker", "max_failures", "logging_steps", "keep_checkpoints",
                                              "eval")

    model: str = option("models/base", "model artifact of the run to start from")
    learning_rate: float = option(1e-3, "peak learning rate")
    vision_tower_lr: float | None = option(
        None, "learning rate of the vision tower (paper SFT: 5e-7, a tenth of the rest); null: learning_rate; "
        "0 freezes it")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = option(
        "cosine", "learning-rate schedule after warm-up")
    warmup_ratio: float = option(0.03, "fraction of the steps spent warming the learning rate up")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm")
    epochs: float = option(1.0, "passes over the data (paper: 1); ignored when max_steps is set")
    max_steps: int | None = option(None, "optimizer steps to run (null: epochs)")
    global_batch_size: int = option(32, "examples per optimizer step over all workers (paper: 32)")
    per_device_batch_size: int = option(8, "examples per forward pass on one worker; the rest of the global "
                                           "batch is gradient accumulation")
    max_length: int | None = option(None, "longest sequence in tokens (image tokens included); must not cut into "
                                          "the prompt's image tokens (null: no limit)")
    dtype: Literal["float32", "bfloat16"] = option("float32", "training precision (bfloat16 on GPUs)")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (saves memory)")
    zero_stage: Literal[2, 3] = option(2, "DeepSpeed ZeRO stage: 2 shards optimizer states and gradients, 3 also "
                                           "the weights")
    num_workers: int = option(2, "Ray Train workers (one per GPU on GPU nodes)")
    use_gpu: bool = option(False, "one GPU per worker, NCCL (false: CPU workers, gloo)")
    cpus_per_worker: int = option(1, "CPUs each worker reserves")
    seed: int = option(0, "seed of data order and initialisation")
    save_steps: int = option(50, "checkpoint every this many optimizer steps (the unit of recovery)")
    save_total_limit: int = option(2, "checkpoints kept on the run's storage while the stage runs")
    keep_checkpoints: bool = option(False, "keep the stage's checkpoints (<run>/checkpoints/<stage>-<hash>) once its "
                                           "model is exported; false deletes them when the stage finishes")
    max_failures: int = option(2, "times a failed worker group restarts from the last checkpoint")
    logging_steps: int = option(1, "log metrics every this many steps")
    lora: LoraConfig = section(LoraConfig, "LoRA instead of full fine-tuning")
    eval: GreedyEvalConfig = section(GreedyEvalConfig, "after training, greedy direct and CoT accuracy of the "
                                                        "exported model on validation questions, per source "
                                                        "(eval.json beside the model)")

    def __post_init__(self) -> None:
        check(self.learning_rate > 0, "learning_rate", self.learning_rate, "use a positive learning rate")
        check(self.vision_tower_lr is None or self.vision_tower_lr >= 0, "vision_tower_lr", self.vision_tower_lr,
              "use 0 (frozen), a positive rate, or null")
        check(0 <= self.warmup_ratio < 1, "warmup_ratio", self.warmup_ratio, "use a value in [0, 1)")
        check(self.epochs > 0, "epochs", self.epochs, "use a positive number of epochs")
        check(self.max_steps is None or self.max_steps >= 1, "max_steps", self.max_steps, "use a positive number or null")
        check(self.max_length is None or self.max_length >= 8, "max_length", self.max_length,
              "use null or a length that holds the prompt, its image tokens and a response")
        check(self.num_workers >= 1, "num_workers", self.num_workers, "run at least one worker")
        check(self.cpus_per_worker >= 1, "cpus_per_worker", self.cpus_per_worker, "reserve at least one CPU")
        check(self.per_device_batch_size >= 1, "per_device_batch_size", self.per_device_batch_size,
              "use a positive batch size")
        check(self.global_batch_size >= 1, "global_batch_size", self.global_batch_size,
              "use a positive number of examples per optimizer step (paper: 32)")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "use 0 or a positive decay")
        check(self.max_grad_norm >= 0, "max_grad_norm", self.max_grad_norm, "use a positive norm, or 0 for no clipping")
        check(self.seed >= 0, "seed", self.seed, "use a non-negative seed (numpy takes no negative one)")
        per_step = self.per_device_batch_size * self.num_workers
        check(self.global_batch_size % per_step == 0, "global_batch_size", self.global_batch_size,
              f"make it a multiple of per_device_batch_size x num_workers = {self.per_device_batch_size} x "
              f"{self.num_workers} = {per_step} (the rest is gradient accumulation)")
        check(self.save_steps >= 1, "save_steps", self.save_steps, "use a positive number of steps")
        check(self.save_total_limit >= 1, "save_total_limit", self.save_total_limit, "keep at least one checkpoint")
        check(self.max_failures >= 0, "max_failures", self.max_failures, "use 0 (no restarts) or more")
        check(self.logging_steps >= 1, "logging_steps", self.logging_steps, "use a positive number of steps")

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.global_batch_size // (self.per_device_batch_size * self.num_workers)


@dataclass
class SFTConfig(TrainConfig):
    """Stage train_sft (B): supervised fine-tuning on ``<run>/sft_data`` into ``<run>/models/sft``.

    ``mix`` picks the paper's variants (its figure 5 and Table 2): ``format`` (format alignment
    only), ``direct`` (direct data plus CoT format alignment), ``cot`` (CoT data plus direct format
    alignment), ``both``. Format alignment is ``format_examples`` rows of each mode per source.
    ``captions`` adds the caption rows (image descriptions) to any mix.
    """

    learning_rate: float = option(5e-6, "peak learning rate (paper: 5e-6)")
    vision_tower_lr: float | None = option(
        5e-7, "learning rate of the vision tower (paper: 5e-7, a tenth of the rest); null: learning_rate; 0 freezes it")
    mix: Literal["format", "direct", "cot", "both"] = option(
        "both", "the SFT data: 'format' (format alignment only), 'direct' or 'cot' (that mode's data plus format "
        "alignment of the other), 'both' (paper's LLaVA-Reasoner-SFT)")
    format_examples: int = option(
        50, "format-alignment rows per mode and source, so the model follows both prompt styles (paper: 50)")
    captions: bool = option(
        True, "also train on sft_data's caption rows, whatever the mix (image-text alignment: a random base model "
        "learns to read the image from them; a pretrained one has seen such data)")
    select: SelectConfig = section(SelectConfig, "hand on the kept checkpoint whose sampled validation accuracy "
                                                 "leaves most questions uncertain (so DPO has pairs to learn from)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.format_examples >= 0, "format_examples", self.format_examples, "use 0 or more")
        check(isinstance(self.captions, bool), "captions", self.captions, "use true or false")
        check(not (self.select.enabled and self.lora.enabled), "select.enabled", self.select.enabled,
              "checkpoint selection needs full fine-tuning: turn lora.enabled off or select.enabled off")


@dataclass
class DPOConfig(TrainConfig):
    """Stage train_dpo (C3): DPO on ``<run>/pairs`` from the SFT model into ``<run>/models/dpo``.

    The reference (the starting model) is scored once into ``<run>/dpo_ref``; training then holds
    no reference model.
    """

    OPERATIONAL: ClassVar[tuple[str, ...]] = (*TrainConfig.OPERATIONAL, "reference_batch_size",
                                              "reference_backend")

    model: str = option("models/sft", "model artifact to start from and to use as the reference")
    learning_rate: float = option(5e-7, "peak learning rate (paper: 5e-7)")
    warmup_ratio: float = option(0.1, "fraction of the steps spent warming the learning rate up")
    beta: float = option(0.1, "DPO beta: the strength of the pull towards the reference (paper: 0.1)")
    reference_backend: Literal["transformers", "vllm"] = option(
        "transformers", "engine of the reference pass into <run>/dpo_ref (the shared log-prob scorer)")
    reference_batch_size: int = option(16, "pairs per batch of the reference pass")
    mdpo_weight: float = option(
        0.0, "weight of an image-conditioned preference term in the manner of mDPO: the chosen response under a "
        "corrupted image as the rejected side (0: off, plain DPO)")
    mdpo_mask_fraction: float = option(0.5, "share of the image blanked to corrupt it for the mDPO term")
    sft_weight: float = option(
        0.0, "weight of a negative log-likelihood term on the chosen response beside the DPO loss, as in "
        "RPO (Pang et al. 2024; TRL's loss_type ['sigmoid', 'sft']): it keeps DPO from lowering the "
        "likelihood of correct rationales (0: off, plain DPO)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, "beta", self.beta, "use a positive beta, e.g. 0.1")
        check(self.reference_batch_size >= 1, "reference_batch_size", self.reference_batch_size,
              "use a positive batch size")
        check(self.mdpo_weight >= 0, "mdpo_weight", self.mdpo_weight, "use 0 (off) or a positive weight")
        check(0 < self.mdpo_mask_fraction < 1, "mdpo_mask_fraction", self.mdpo_mask_fraction, "use a value in (0, 1)")
        check(self.sft_weight >= 0, "sft_weight", self.sft_weight, "use 0 (off) or a positive weight")
