"""DeepSpeed ZeRO configs for the HF Trainer (``TrainingArguments(deepspeed=<dict>)``).

The HF Trainer owns the optimizer and the schedule (no ``optimizer`` or ``scheduler`` section):
a DeepSpeed-side optimizer would build fused Adam, a 70 s compile on CPU, for nothing here.
``"auto"`` values are filled by transformers from the training arguments, so batch sizes,
clipping and precision have one source. ZeRO-3 gathers the 16-bit weights when the model is
saved, so a checkpoint and the exported model hold full ``model.safetensors``.
"""

from __future__ import annotations

from typing import Any


def zero_config(stage: int, *, bf16: bool = False) -> dict[str, Any]:
    """The DeepSpeed config of ZeRO ``stage`` (2 or 3), bf16 or fp32.

    >>> zero_config(2)["zero_optimization"]["stage"]
    2
    """
    if stage not in (2, 3):
        raise ValueError(f"ZeRO stage must be 2 or 3, got {stage!r}")
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": False,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 3:
        zero.update({
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_gather_16bit_weights_on_model_save": True,
        })
    else:
        zero.update({"allgather_partitions": True, "allgather_bucket_size": 2e8, "reduce_scatter": True})
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
