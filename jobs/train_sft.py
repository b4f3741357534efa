"""Stage train_sft (B): supervised fine-tuning on ``<run>/sft_data`` into ``<run>/models/sft``.

    python -m jobs.train_sft --config jobs/configs/default.yaml run_dir=runs/r1
    ray job submit --working-dir . -- python -m jobs.train_sft --config jobs/configs/h100.yaml run_dir=s3://bucket/r1

Ray Train's ``TorchTrainer`` runs TRL's ``SFTTrainer`` under DeepSpeed ZeRO (``sft.zero_stage``)
on ``sft.num_workers`` workers (CPU with gloo, or one GPU each with NCCL). Checkpoints go to
``<run>/checkpoints/train_sft-<config hash>``: a killed worker resumes from the last one
(``sft.max_failures``), and so does a rerun of an interrupted stage; a rerun of a finished one
does nothing. Once the stage has finished its checkpoints are deleted, unless
``sft.keep_checkpoints``. ``sft.mix`` picks the paper's variants (format, direct, cot, both). The model,
with ``metrics.jsonl``, is exported to ``<run>/models/sft`` in the layout transformers and vLLM
load. With ``sft.select.enabled``, each kept checkpoint is sampled on a validation slice (a Ray
task each, vLLM) and the one leaving most questions uncertain replaces the export
(``reasoner.training.select``; scores in ``<run>/models/sft/selection.json``). Last, unless
``sft.eval.questions=0``, the exported model answers a fixed slice of the validation split
greedily, direct and CoT (``jobs._eval``): the accuracy per source, per number of steps and
overall is logged as a table and written with every reply to ``<run>/models/sft/eval.json``.
"""

from __future__ import annotations

import logging

import ray

from reasoner.config import RunConfig, identity, to_dict
from reasoner.rundir import RunDir, StageCounts
from reasoner.training.config import SFTConfig

from jobs._common import (Timings, begin_stage, progress, read_artifact_rows, run_job, say, select_ids,
                          training_poll)
from jobs._eval import eval_ids, evaluate_model

logger = logging.getLogger("jobs.train_sft")
STAGE, ARTIFACT = "train_sft", "models/sft"


@ray.remote
def score_task(checkpoint, examples: list[dict], config: SFTConfig, engine: dict) -> dict:
    """Sample a checkpoint on the validation slice (``reasoner.training.select``)."""
    import shutil

    from reasoner.training.select import score_checkpoint

    result = score_checkpoint(checkpoint, examples, config.select, engine)
    shutil.rmtree(result.pop("model_dir"), ignore_errors=True)
    return result


@ray.remote
def export_task(run: RunDir, checkpoint, selection: dict) -> None:
    """Replace the exported model with the chosen checkpoint's and write the scores beside it."""
    import os
    import shutil

    from reasoner.training.raytrain import CHECKPOINT_NAME
    from reasoner.training.select import SELECTION_FILE, model_of_checkpoint

    with checkpoint.as_directory() as directory:
        model_dir = model_of_checkpoint(os.path.join(directory, CHECKPOINT_NAME))
    run.upload(model_dir, ARTIFACT)
    run.write_json(selection, ARTIFACT, SELECTION_FILE)
    shutil.rmtree(model_dir, ignore_errors=True)


def select_checkpoint(run: RunDir, result, config: RunConfig) -> dict:
    """Score every kept checkpoint on the validation slice and export the chosen one. The engines
    are built as the run's ``engine`` section says."""
    from reasoner.models.engine import engine_kwargs, ray_options
    from reasoner.training.select import choose

    section = config.sft
    ids = select_ids(run, "val", section.select.questions)
    examples = read_artifact_rows(run, "examples", ids).take_all()
    task = score_task.options(**ray_options(config.engine))
    checkpoints = [c for c, _ in result.best_checkpoints or []]
    scores = [ray.get(task.remote(c, examples, section, engine_kwargs(config.engine))) for c in checkpoints]
    chosen = choose(scores)
    selection = {"chosen_step": chosen["step"], "scores": scores, "questions": len(examples)}
    ray.get(export_task.remote(run, checkpoints[scores.index(chosen)], selection))
    say("selected the checkpoint of step %d (uncertain share %.3f) of %s", chosen["step"],
        chosen["uncertain_share"], [s["step"] for s in scores])
    return selection


def main(config: RunConfig) -> None:
    from reasoner.training.metrics import last_metrics
    from reasoner.training.raytrain import remove_checkpoints, train_run_name
    from reasoner.training.sft import train_sft

    section, timings = config.sft, Timings()
    run = RunDir(config.run_dir)
    provenance = {"sft": identity(section), "model_config_hash": run.require(section.model)["config_hash"],
                  "sft_data_config_hash": run.require("sft_data")["config_hash"]}
    digest = begin_stage(run, ARTIFACT, STAGE, provenance, config.overwrite)
    if digest is None:
        return
    evaluate_ids = eval_ids(run, "sft.eval", section.eval)
    with timings.step("train"), progress("train_sft", training_poll(run, STAGE), unit="steps"):
        result = train_sft(run, section, config.cache_dir, digest, ARTIFACT)
    selection = None
    if section.select.enabled:
        with timings.step("select"):
            selection = select_checkpoint(run, result, config)
    evaluation = None
    if evaluate_ids is not None:
        with timings.step("evaluate"):
            evaluation = evaluate_model(run, config, ARTIFACT, section.eval, evaluate_ids)
    final = last_metrics(run, ARTIFACT)
    run.finish(ARTIFACT, stage=STAGE, config={**provenance, "sft": to_dict(section)}, config_hash=digest,
               counts=StageCounts(in_=final.get("step", 0), out=1), seed=section.seed, timings=timings,
               extra={"steps": final.get("step"), "final_loss": final.get("loss"), "base_model": section.model,
                      "selected_step": None if selection is None else selection["chosen_step"],
                      "eval": None if evaluation is None else evaluation["overall"]})
    if not section.keep_checkpoints:
        remove_checkpoints(run, train_run_name(STAGE, digest))
    say("SFT: %s steps, final loss %s -> %s", final.get("step"), final.get("loss"), run.path(ARTIFACT))


if __name__ == "__main__":
    run_job(STAGE, main, __doc__, sections=("sft", "engine", "ray"))
