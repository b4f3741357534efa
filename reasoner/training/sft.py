"""Stage B: supervised fine-tuning with TRL's ``SFTTrainer`` on Ray Train workers.

``train_sft(run, config, cache_dir, digest)`` (driver) checks the data, streaming it
(``reasoner.training.data``), then runs ``sft_worker`` on ``config.num_workers`` workers under
DeepSpeed ZeRO; each worker trains on a memory-mapped copy of the rows the mix selects, under
``<cache_dir>/datasets`` while it runs. The model is exported to ``<run>/models/sft`` with
``metrics.jsonl`` beside it. The data is TRL's conversational prompt/completion form, so the
loss is on the completion tokens only (the chat template has no ``{% generation %}`` markers for
an assistant-only mask).
"""

from __future__ import annotations

import logging
from typing import Any

from reasoner.rundir import RunDir
from reasoner.training.config import SFTConfig
from reasoner.training.data import check_batch, check_sft_data, select_sft, sft_training_dataset
from reasoner.training.raytrain import fit, train_run_name
from reasoner.training.stream import scratch_directory
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
    run: RunDir = loop["run"]
    selection = select_sft(run, config.mix, config.format_examples, config.seed, captions=config.captions)
    with scratch_directory(loop["cache_dir"], "sft") as directory:
        dataset = sft_training_dataset(run, selection, directory)
        run_worker(loop, "SFTConfig", dataset, make_sft_trainer, args_extra={"completion_only_loss": True})


def train_sft(run: RunDir, config: SFTConfig, cache_dir: str, digest: str, artifact: str = ARTIFACT):
    """Check the data (a clear error before any worker starts), then train; the ``ray.train.Result``.

    ``digest`` (the stage's config hash) names the Ray Train run, so only a run with this config
    resumes its checkpoints.
    """
    data = check_sft_data(run, config.mix, config.format_examples, config.seed, captions=config.captions)
    logger.info("SFT on %d rows: %d steps of %d examples", data.selected, expected_steps(data.selected, config),
                config.global_batch_size)
    check_batch(data.selected, config.per_device_batch_size, config.num_workers, "sft_data")
    loop = {"config": config, "run": run, "cache_dir": cache_dir, "artifact": artifact, "stage": STAGE}
    return fit(sft_worker, loop, config, run, train_run_name("train_sft", digest))


def expected_steps(num_rows: int, config: SFTConfig) -> int:
    """Optimizer steps of a run over ``num_rows`` rows (``max_steps``, else epochs of full batches)."""
    if config.max_steps is not None:
        return config.max_steps
    per_epoch = max(1, num_rows // config.global_batch_size)
    return max(1, int(per_epoch * config.epochs))
