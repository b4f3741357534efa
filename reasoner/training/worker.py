"""What every training worker does, SFT or DPO: load the starting model, build the TRL trainer,
train (resuming from Ray Train's latest checkpoint), export, and close the process group.

``run_worker`` is the body of a Ray Train training function; the stage supplies
``make_trainer(model=, processor=, args=, dataset=, peft_config=, callbacks=) -> Trainer`` and
the dataset.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

from reasoner.rundir import RunDir
from reasoner.training.config import TrainConfig
from reasoner.training.raytrain import (
    local_output_dir,
    report_checkpoint_callback,
    train_and_resume,
    training_arguments,
    worker_setup,
    worker_teardown,
)

logger = logging.getLogger(__name__)

TRAINING_FILE = "training.json"
"""Written beside the exported model: steps, world size, and the step a restart resumed from."""


def quiet_printer(trainer) -> None:
    """Drop the HF Trainer's ``PrinterCallback`` (added when tqdm is off): it prints every log
    record as a raw dict beside ``StepMetrics``' one line per logging step."""
    from transformers import PrinterCallback

    while any(isinstance(cb, PrinterCallback) for cb in trainer.callback_handler.callbacks):
        trainer.remove_callback(PrinterCallback)


def lora_config(config: TrainConfig):
    """A peft ``LoraConfig`` on the language model's projections only (not the vision tower's), or None."""
    if not config.lora.enabled:
        return None
    from peft import LoraConfig

    names = "|".join(config.lora.target_modules)
    return LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                      target_modules=rf".*language_model.*\.({names})", task_type="CAUSAL_LM")


def load_policy(model_dir: str, config: TrainConfig):
    """The model to train, in ``config.dtype``. Call after the training arguments exist: under
    ZeRO-3 they make transformers build the model partitioned (``zero.Init``)."""
    from reasoner.models.checkpoint import load_model
    from reasoner.training.optim import freeze_vision_tower

    model = load_model(model_dir, dtype=config.dtype).train()
    if config.vision_tower_lr == 0:
        freeze_vision_tower(model)
    return model


def run_worker(loop: dict[str, Any], args_cls_name: str, dataset: Any,
               make_trainer: Callable[..., Any], args_extra: dict[str, Any] | None = None) -> None:
    """Train ``loop["config"]`` on ``dataset`` with the trainer ``make_trainer`` builds; export to
    ``<run>/<loop["artifact"]>``. ``args_cls_name``: "SFTConfig" or "DPOConfig" (of TRL)."""
    import trl

    from reasoner.models.checkpoint import load_processor
    from reasoner.training.export import export_trained
    from reasoner.training.progress import StepMetrics

    config: TrainConfig = loop["config"]
    run: RunDir = loop["run"]
    worker_setup(config)
    model_dir = run.local_path(config.model, cache_dir=os.path.expanduser(loop["cache_dir"]))
    processor = load_processor(model_dir)
    args = training_arguments(getattr(trl, args_cls_name), config, local_output_dir(loop["artifact"]),
                              **(args_extra or {}))
    model = load_policy(model_dir, config)
    trainer = make_trainer(model=model, processor=processor, args=args, dataset=dataset,
                           peft_config=lora_config(config), callbacks=[StepMetrics(run, loop.get("stage")), report_checkpoint_callback()])
    quiet_printer(trainer)
    trainer.vision_tower_lr = config.vision_tower_lr or None
    with train_and_resume(trainer) as (resumed_from, finished_checkpoint):
        record = {"resumed_from_step": resumed_from, "global_step": trainer.state.global_step,
                  "world_size": trainer.args.world_size, "base_model": config.model}
        export_trained(trainer, processor, run, loop["artifact"], base_artifact=config.model, base_dir=model_dir,
                       extra_files={TRAINING_FILE: record}, finished_checkpoint=finished_checkpoint)
    worker_teardown()
    shutil.rmtree(args.output_dir, ignore_errors=True)  # the local checkpoints; Ray's storage keeps its own
