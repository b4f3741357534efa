"""The greedy evaluation that ends the training stages (``sft.eval``, ``dpo.eval``).

The exported model answers a fixed slice of a split greedily, direct and CoT, in a Ray task that
builds its vLLM engine as the run's ``engine`` section says; the
accuracy per source, per number of steps and overall is logged as a table and written, with
every reply, to ``eval.json`` beside the model (``reasoner.evaluation``).
"""

from __future__ import annotations

import logging
import os

import ray

from reasoner.config import RunConfig, to_dict
from reasoner.evaluation import EVAL_FILE, GreedyEvalConfig, format_gain, format_summary, summarise, summarise_gain
from reasoner.models.engine import engine_kwargs, ray_options
from reasoner.rundir import RunDir

from jobs._common import read_artifact_rows, say, select_ids

logger = logging.getLogger("jobs.eval")


def eval_ids(run: RunDir, key: str, config: GreedyEvalConfig) -> list[str] | None:
    """The slice ``config`` names (None when ``questions`` is 0). Call before training: a split
    the run's examples do not have fails there, not after hours of training."""
    if not config.questions:
        return None
    ids = select_ids(run, config.split, config.questions)
    if not ids:
        raise ValueError(f"{key}: the run's examples have no {config.split!r} split to evaluate on; set "
                         f"{key}.split to one they have, or {key}.questions=0 to skip the evaluation")
    return ids


@ray.remote
def evaluate_task(run: RunDir, artifact: str, examples: list[dict], config: GreedyEvalConfig, engine: dict,
                  cache_dir: str) -> tuple[list[dict], list[dict]]:
    """Greedy direct and CoT replies of the model ``artifact`` (a LoRA adapter is merged first), and
    the image gain rows (empty unless ``config.image_gain``)."""
    from reasoner.evaluation import GreedyEvaluator
    from reasoner.training.export import engine_model_dir

    with engine_model_dir(run, artifact, cache_dir) as model_dir:
        evaluator = GreedyEvaluator(model_dir, config, engine)
        try:
            return evaluator.evaluate(examples), evaluator.image_gain(examples) if config.image_gain else []
        finally:
            evaluator.close()


def usable_examples(run: RunDir, ids: list[str]) -> tuple[list[dict], list[dict]]:
    """The examples ``ids`` a model can be asked about, and the others as ``{"id", "reason"}``."""
    from reasoner.data.examples import as_python, example_problem

    examples, unusable = [], []
    for example in read_artifact_rows(run, "examples", ids).take_all():
        problem = example_problem(example)
        if problem is None:
            examples.append(as_python(example))
        else:
            unusable.append({"id": example["id"], "reason": problem})
    return examples, unusable


def evaluate_model(run: RunDir, config: RunConfig, artifact: str, eval_config: GreedyEvalConfig,
                   ids: list[str]) -> dict:
    """Evaluate the model ``artifact`` on the examples ``ids``, write ``eval.json`` beside it; the summary."""
    examples, unusable = usable_examples(run, ids)
    task = evaluate_task.options(**ray_options(config.engine))
    rows, gain_rows = ray.get(task.remote(run, artifact, examples, eval_config, engine_kwargs(config.engine),
                                          os.path.expanduser(config.cache_dir)))
    summary = summarise(rows)
    if eval_config.image_gain:
        summary["image_gain"] = summarise_gain(gain_rows)
    record = {"split": eval_config.split, "questions": len(examples), "unusable": unusable,
              "config": to_dict(eval_config), "summary": summary, "rows": rows, "image_gain_rows": gain_rows}
    run.write_json(record, artifact, EVAL_FILE)
    say("greedy accuracy of %s on %d %s questions%s:\n%s", run.path(artifact), len(examples),
        eval_config.split, f" ({len(unusable)} unusable, listed in {EVAL_FILE})" if unusable else "",
        format_summary(summary) if rows else "(no usable question)")
    if eval_config.image_gain:
        say("%s", format_gain(summary["image_gain"]))
    return summary
