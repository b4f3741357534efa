"""Stage C3: DPO with TRL's ``DPOTrainer`` on Ray Train workers, reference log-probs precomputed.

TRL 1.16 refuses ``precompute_ref_log_probs`` for vision datasets and otherwise keeps a whole
reference model in memory, running its forward every step. Here the reference log-probs come
from ``<run>/dpo_ref`` (``reasoner.training.reference``) as dataset columns, and
``PrecomputedRefDPOTrainer`` makes TRL read them from the batch:

- its collator (``RefLogpsCollator``) wraps TRL's vision collator and adds ``ref_chosen_logps``
  / ``ref_rejected_logps`` tensors, which TRL's ``_compute_loss`` reads when
  ``precompute_ref_logps`` is set;
- the flag ``args.precompute_ref_log_probs`` is raised once ``Trainer.__init__`` builds the
  accelerator: after TRL's vision check, before TRL decides whether to build a reference model
  (it does not, then) and before its own precompute (a no-op here: the columns are there).

The driver checks the pairs, and that the reference covers them, streaming them; each worker
copies the pairs with their reference log-probs (and corrupted images for mDPO) a batch at a time
into a memory-mapped dataset (``reasoner.training.data``).

With ``dpo.mdpo_weight > 0`` each batch also carries the mDPO conditional pair
(``reasoner.training.mdpo``) under ``"conditional"``; the trainer adds its TRL loss, weighted, and
logs it as ``mdpo/loss``, ``mdpo/margins``, ``mdpo/accuracies``. With ``dpo.sft_weight > 0`` TRL
adds its ``"sft"`` loss, the chosen responses' mean token NLL, weighted (RPO); the conditional
pair, whose chosen side is the same response, does not add it a second time.

LoRA trains a peft adapter over the SFT model; full fine-tuning trains every weight.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from reasoner.rundir import RunDir
from reasoner.training.config import DPOConfig
from reasoner.training.data import (check_batch, check_pairs, check_reference, preference_training_dataset,
                                    read_reference)
from reasoner.training.mdpo import CORRUPT_IMAGE, conditional_batch
from reasoner.training.raytrain import fit, train_run_name
from reasoner.training.stream import scratch_directory
from reasoner.training.worker import run_worker

logger = logging.getLogger(__name__)

ARTIFACT = "models/dpo"
STAGE = "train_dpo"
REF_KEYS = ("ref_chosen_logps", "ref_rejected_logps")


@dataclass
class RefLogpsCollator:
    """TRL's vision preference collator plus the rows' reference log-probs as float tensors, and
    the mDPO conditional batch when the rows carry a corrupted image."""

    inner: Any

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        def column(key: str) -> torch.Tensor:
            return torch.tensor([e.pop(key) for e in examples], dtype=torch.float32)

        conditional = None
        if CORRUPT_IMAGE in examples[0]:
            corrupt, ref_corrupt = [e.pop(CORRUPT_IMAGE) for e in examples], column("ref_chosen_corrupt_logps")
            conditional = conditional_batch(self.inner, examples, corrupt)
        refs = {k: column(k) for k in REF_KEYS}
        batch = {**self.inner(examples), **refs}
        if conditional is not None:
            batch["conditional"] = {**conditional, "ref_chosen_logps": refs["ref_chosen_logps"],
                                    "ref_rejected_logps": ref_corrupt}
        return batch


def precomputed_ref_trainer_class():
    """``PrecomputedRefDPOTrainer``: TRL's DPOTrainer reading reference log-probs from the batch
    (see the module docstring), with the vision tower's own learning rate."""
    import trl

    from reasoner.training.optim import VisionTowerLR

    class PrecomputedRefDPOTrainer(VisionTowerLR, trl.DPOTrainer):
        mdpo_weight: float = 0.0

        def create_accelerator_and_postprocess(self) -> None:
            super().create_accelerator_and_postprocess()
            self.args.precompute_ref_log_probs = True

        def _precompute_ref_logps(self, dataset, name, batch_size):
            return dataset  # the columns come from <run>/dpo_ref

        def _compute_loss(self, model, inputs, return_outputs):
            conditional = inputs.pop("conditional", None)
            loss = super()._compute_loss(model, inputs, return_outputs)
            if conditional is None or not self.mdpo_weight:
                return loss
            mode = "train" if self.model.training else "eval"
            metrics, tokens = self._metrics[mode], self._total_train_tokens
            before = {k: len(v) for k, v in metrics.items()}
            losses = self.loss_types, self.loss_weights
            self.loss_types, self.loss_weights = ["sigmoid"], [1.0]  # the SFT term counts once
            try:
                term = super()._compute_loss(model, conditional, False)
            finally:
                self.loss_types, self.loss_weights = losses
            self._total_train_tokens = tokens
            for key in list(metrics):  # keep the DPO metrics; the conditional pair's under mdpo/
                added = metrics[key][before.get(key, 0):]
                del metrics[key][before.get(key, 0):]
                if not metrics[key]:
                    del metrics[key]
                if key in ("rewards/margins", "rewards/accuracies"):
                    metrics[f"mdpo/{key.split('/')[1]}"].extend(added)
            if "num_tokens" in metrics:
                metrics["num_tokens"] = [tokens]
            metrics["mdpo/loss"].append(term.detach().item())
            if return_outputs:
                return loss[0] + self.mdpo_weight * term, loss[1]
            return loss + self.mdpo_weight * term

    return PrecomputedRefDPOTrainer


def make_dpo_trainer(*, model, processor, args, dataset, peft_config, callbacks, mdpo_weight: float = 0.0):
    """A ``PrecomputedRefDPOTrainer`` over ``dataset`` (rows with reference log-probs); refuses to
    return one that holds a reference model."""
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    collator = RefLogpsCollator(DataCollatorForVisionPreference(processor=processor, max_length=args.max_length))
    trainer = precomputed_ref_trainer_class()(
        model=model, args=args, train_dataset=dataset, processing_class=processor, data_collator=collator,
        peft_config=peft_config, callbacks=callbacks)
    trainer.precompute_ref_logps = True
    trainer.mdpo_weight = mdpo_weight
    if getattr(trainer, "ref_model", None) is not None:
        raise RuntimeError("TRL built a reference model although the reference log-probs are precomputed")
    return trainer


def dpo_arguments(config: DPOConfig) -> dict[str, Any]:
    """The DPO-specific TRL arguments of ``config``: the sigmoid loss, plus TRL's ``"sft"`` term
    on the chosen responses when ``sft_weight`` is set (RPO)."""
    losses = {"loss_type": ["sigmoid"], "loss_weights": [1.0]}
    if config.sft_weight > 0:
        losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, config.sft_weight]}
    return {"beta": config.beta, **losses, "precompute_ref_log_probs": False}


def mdpo_fraction(config: DPOConfig) -> float | None:
    """The share of each image the mDPO term blanks, or None when the term is off."""
    return config.mdpo_mask_fraction if config.mdpo_weight > 0 else None


def dpo_worker(loop: dict[str, Any]) -> None:
    """The Ray Train training function of stage C3 (one call per worker)."""
    config: DPOConfig = loop["config"]
    run: RunDir = loop["run"]
    make_trainer = functools.partial(make_dpo_trainer, mdpo_weight=config.mdpo_weight)
    with scratch_directory(loop["cache_dir"], "dpo") as directory:
        dataset = preference_training_dataset(run, read_reference(run), directory, mdpo_fraction(config))
        run_worker(loop, "DPOConfig", dataset, make_trainer, args_extra=dpo_arguments(config))


def train_dpo(run: RunDir, config: DPOConfig, cache_dir: str, digest: str, artifact: str = ARTIFACT, *,
              num_pairs: int | None = None):
    """Check the pairs and that the reference covers them (a clear error before any worker starts),
    then train; the ``ray.train.Result``. ``num_pairs``: what :func:`reasoner.training.data.check_pairs`
    returned, if the caller already checked the pairs (the coverage is checked here in any case)."""
    if num_pairs is None:
        num_pairs = check_pairs(run)
    check_reference(run, read_reference(run), mdpo=config.mdpo_weight > 0)
    logger.info("DPO on %d pairs, beta %s, %s", num_pairs, config.beta, "LoRA" if config.lora.enabled else "full")
    check_batch(num_pairs, config.per_device_batch_size, config.num_workers, "pairs")
    loop = {"config": config, "run": run, "cache_dir": cache_dir, "artifact": artifact, "stage": STAGE}
    return fit(dpo_worker, loop, config, run, train_run_name("train_dpo", digest))
