"""Stage B: supervised fine-tuning with TRL's ``SFTTrainer`` on Ray Train workers.

``train_sft(run, config, cache_dir, digest)`` (driver) checks the data, then runs ``sft_worker``
on ``config.num_workers`` workers under DeepSpeed ZeRO; the model is exported to
``<run>/models/sft`` with ``metrics.jsonl`` beside it. The data is TRL's conversational
prompt/completion form, so the loss is on the completion tokens only (the chat template has no
``{% generation %}`` markers for an assistant-only mask).
"""

from __future__ import annotations

import logging
from typing import Any

from reasoner.rundir import RunDir
from reasoner.training.config import SFTConfig
from reasoner.training.data import check_batch, load_sft_rows, sft_dataset
from reasoner.training.raytrain import fit, train_run_name
from reasoner.training.worker import run_worker

logger = logging.getLogger(__name__)

ARTIFACT = "models/sft"
STAGE = "train_sft"


def make_sft_trainer(*, model, processor, args, dataset, peft_config, callbacks):
    """TRL's ``SFTTrainer`` with the vision tower's own learning rate (``VisionTowerLR``)."""
    import trl

    from reasoner.training.optim import VisionTowerLR

    class SFTTrainer(VisionTowerLR, trl.SFTTrainer):
        pass

    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                      peft_config=peft_config, callbacks=callbacks)


def sft_worker(loop: dict[str, Any]) -> None:
    """The Ray Train training function of stage B (one call per worker)."""
    config: SFTConfig = loop["config"]
    rows = load_sft_rows(loop["run"], config.mix, config.format_examples, config.seed, captions=config.captions,
                         check=False)
    run_worker(loop, "SFTConfig", sft_dataset(rows), make_sft_trainer, args_extra={"completion_only_loss": True})


def train_sft(run: RunDir, config: SFTConfig, cache_dir: str, digest: str, artifact: str = ARTIFACT):
    """Check the data (a clear error before any worker starts), then train; the ``ray.train.Result``.

    ``digest`` (the stage's config hash) names the Ray Train run, so only a run with this config
    resumes its checkpoints.
    """
    rows = load_sft_rows(run, config.mix, config.format_examples, config.seed, captions=config.captions, check=True)
    logger.info("SFT on %d rows: %d steps of %d examples", len(rows), expected_steps(len(rows), config),
                config.global_batch_size)
    check_batch(len(rows), config.per_device_batch_size, config.num_workers, "sft_data")
    loop = {"config": config, "run": run, "cache_dir": cache_dir, "artifact": artifact, "stage": STAGE}
    return fit(sft_worker, loop, config, run, train_run_name("train_sft", digest))


def expected_steps(num_rows: int, config: SFTConfig) -> int:
    """Optimizer steps of a run over ``num_rows`` rows (``max_steps``, else epochs of full batches)."""
    if config.max_steps is not None:
        return config.max_steps
    per_epoch = max(1, num_rows // config.global_batch_size)
    return max(1, int(per_epoch * config.epochs))
