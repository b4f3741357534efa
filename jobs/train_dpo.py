"""Stage train_dpo (C3): DPO on ``<run>/pairs`` from the SFT model into ``<run>/models/dpo``.

    python -m jobs.train_dpo --config jobs/configs/default.yaml run_dir=runs/r1
    ray job submit --working-dir . -- python -m jobs.train_dpo --config jobs/configs/h100.yaml run_dir=s3://bucket/r1

Two steps. The reference pass scores every pair's chosen and rejected response under the
reference (``dpo.model``, the SFT model) once, with the shared log-prob scorer
(``dpo.reference_backend``), into ``<run>/dpo_ref`` (a Ray task reading the pairs a batch at a
time; resumable by parts). Then Ray Train runs TRL's ``DPOTrainer`` under DeepSpeed ZeRO
(``dpo.zero_stage``) on ``dpo.num_workers`` workers, reading the reference log-probs from the
batch and holding no reference model; full fine-tuning or LoRA (``dpo.lora.enabled``). No process
holds the pairs: the checks and each worker's dataset stream them (``reasoner.training.data``).
Checkpoints, recovery and a rerun behave as in train_sft. The model (or adapter, whose base is ``dpo.model``), with
``metrics.jsonl`` (loss, reward margin, chosen-over-rejected accuracy, steps/s per step), is
exported to ``<run>/models/dpo``. ``dpo.mdpo_weight > 0`` adds the image-conditioned mDPO term
(``reasoner.training.mdpo``): the reference pass then also scores each chosen response under a
corrupted image (column ``chosen_corrupt_ref_logp`` of ``dpo_ref``). Last, as in train_sft, the
greedy evaluation (``dpo.eval``) writes ``<run>/models/dpo/eval.json``.
"""

from __future__ import annotations

import logging
import os

import ray

from reasoner.config import RunConfig, config_hash, identity, to_dict
from reasoner.models.engine import engine_kwargs, ray_options
from reasoner.rundir import RunDir, StageCounts
from reasoner.training.config import DPOConfig

from jobs._common import Timings, begin_stage, progress, run_job, say, training_poll
from jobs._eval import eval_ids, evaluate_model

logger = logging.getLogger("jobs.train_dpo")
STAGE, ARTIFACT, REFERENCE = "train_dpo", "models/dpo", "dpo_ref"


@ray.remote
def reference_task(run: RunDir, model_dir: str, config: DPOConfig, engine: dict) -> int:
    """The reference pass (``reasoner.training.reference``) on one Ray worker; it reads the pairs
    from the run a batch at a time."""
    from reasoner.models.scorer import make_scorer
    from reasoner.training.dpo import mdpo_fraction
    from reasoner.training.reference import reference_pass

    scorer = make_scorer(model_dir, config.reference_backend, batch_size=config.reference_batch_size, engine=engine)
    return reference_pass(run, scorer, mdpo_fraction=mdpo_fraction(config))


def main(config: RunConfig) -> None:
    from reasoner.training.data import check_pairs
    from reasoner.training.dpo import train_dpo
    from reasoner.training.metrics import last_metrics
    from reasoner.training.raytrain import remove_checkpoints, train_run_name

    section, timings = config.dpo, Timings()
    run = RunDir(config.run_dir)
    inputs = {"model_config_hash": run.require(section.model)["config_hash"],
              "pairs_config_hash": run.require("pairs")["config_hash"]}
    provenance = {"dpo": identity(section), **inputs}
    digest = begin_stage(run, ARTIFACT, STAGE, provenance, config.overwrite)
    if digest is None:
        return
    with timings.step("check pairs"):
        num_pairs = check_pairs(run)
        evaluate_ids = eval_ids(run, "dpo.eval", section.eval)
    reference = {"reference_model": section.model, **inputs}
    if section.mdpo_weight > 0:  # the corrupted images are scored too
        reference["mdpo_mask_fraction"] = section.mdpo_mask_fraction
    if run.begin(REFERENCE, reference, config_hash(reference), stage=REFERENCE, overwrite=config.overwrite):
        with timings.step("reference"):
            model_dir = run.local_path(section.model, cache_dir=os.path.expanduser(config.cache_dir))
            # The vLLM backend is an engine like any other (the run's engine section); the
            # transformers one takes a GPU where training does.
            options = (ray_options(config.engine) if section.reference_backend == "vllm"
                       else {"num_cpus": 1, "num_gpus": 1 if section.use_gpu else 0})
            task = reference_task.options(**options)
            scored = ray.get(task.remote(run, model_dir, section, engine_kwargs(config.engine)))
        run.finish(REFERENCE, stage=STAGE, config=reference, config_hash=config_hash(reference),
                   counts=StageCounts(in_=num_pairs, out=num_pairs), timings={"reference": timings["reference"]},
                   extra={"scored_this_run": scored, "backend": section.reference_backend})
    with timings.step("train"), progress("train_dpo", training_poll(run, STAGE), unit="steps"):
        train_dpo(run, section, config.cache_dir, digest, ARTIFACT, num_pairs=num_pairs)
    evaluation = None
    if evaluate_ids is not None:
        with timings.step("evaluate"):
            evaluation = evaluate_model(run, config, ARTIFACT, section.eval, evaluate_ids)
    final = last_metrics(run, ARTIFACT)
    run.finish(ARTIFACT, stage=STAGE, config={**provenance, "dpo": to_dict(section)}, config_hash=digest,
               counts=StageCounts(in_=num_pairs, out=1), seed=section.seed, timings=timings,
               extra={"steps": final.get("step"), "final_loss": final.get("loss"),
                      "final_reward_margin": final.get("rewards/margins"),
                      "final_reward_accuracy": final.get("rewards/accuracies"), "base_model": section.model,
                      "beta": section.beta, "lora": section.lora.enabled,
                      "eval": None if evaluation is None else evaluation["overall"]})
    if not section.keep_checkpoints:
        remove_checkpoints(run, train_run_name(STAGE, digest))
    say("DPO: %s steps, final loss %s, reward margin %s -> %s", final.get("step"), final.get("loss"),
        final.get("rewards/margins"), run.path(ARTIFACT))


if __name__ == "__main__":
    run_job(STAGE, main, __doc__, sections=("dpo", "engine", "ray"))
