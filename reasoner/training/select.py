"""Pick the SFT checkpoint to hand on by its sampled accuracy on a validation slice.

DPO learns from questions the model answers right only sometimes (pairs keep questions whose
sampled accuracy lies in ``[pairs.min_accuracy, pairs.max_accuracy]``); a converged SFT model
leaves none (ENVIRONMENT.md: 54-64% of questions in the window at steps 250-300, 0% once
converged). With ``sft.select.enabled``, every checkpoint Ray Train kept is sampled on a fixed subset of
``select.questions`` validation questions mixing families (``select.samples`` CoT candidates each, as stage
sample does) and scored; the checkpoint with the largest share of questions inside the window is
exported (ties: the later one). ``<run>/models/sft/selection.json`` records every score.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reasoner.answers import correct_threshold_field
from reasoner.options import check, option

logger = logging.getLogger(__name__)

SELECTION_FILE = "selection.json"


@dataclass
class SelectConfig:
    """Checkpoint selection by sampled validation accuracy (full fine-tuning only)."""

    enabled: bool = option(False, "pick the kept checkpoint with most validation questions of uncertain accuracy")
    questions: int = option(64, "validation questions sampled per checkpoint (a fixed subset mixing families)")
    samples: int = option(8, "CoT candidates per question")
    temperature: float = option(1.0, "sampling temperature")
    max_tokens: int = option(256, "most tokens a candidate may have")
    min_accuracy: float = option(0.25, "a question is uncertain from this sampled accuracy (as pairs.min_accuracy)")
    max_accuracy: float = option(0.85, "up to this sampled accuracy (as pairs.max_accuracy)")
    correct_threshold: float = correct_threshold_field("a sampled candidate is correct")

    def __post_init__(self) -> None:
        check(self.questions >= 1 and self.samples >= 2, "questions/samples", (self.questions, self.samples),
              "sample at least 1 question and 2 candidates each")
        check(self.temperature >= 0, "temperature", self.temperature, "use 0 (greedy) or more")
        check(self.max_tokens >= 1, "max_tokens", self.max_tokens, "allow at least 1 token")
        check(0 <= self.min_accuracy <= self.max_accuracy <= 1, "min_accuracy/max_accuracy",
              (self.min_accuracy, self.max_accuracy), "use 0 <= min_accuracy <= max_accuracy <= 1")


def uncertainty(candidates: Sequence[dict[str, Any]], low: float, high: float) -> dict[str, float]:
    """Mean accuracy of the candidates and the share of questions whose accuracy is in [low, high]."""
    by_question: dict[str, list[bool]] = defaultdict(list)
    for row in candidates:
        by_question[row["id"]].append(bool(row["correct"]))
    accuracies = [sum(v) / len(v) for v in by_question.values()]
    if not accuracies:
        return {"mean_accuracy": 0.0, "uncertain_share": 0.0, "questions": 0}
    return {"mean_accuracy": sum(accuracies) / len(accuracies),
            "uncertain_share": sum(low <= a <= high for a in accuracies) / len(accuracies),
            "questions": len(accuracies)}


def choose(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The score record with the largest ``uncertain_share`` (ties: the latest ``step``)."""
    return max(scores, key=lambda s: (s["uncertain_share"], s["step"]))


def model_of_checkpoint(checkpoint_dir: str) -> str:
    """A local model directory (vLLM layout) copied from an HF checkpoint, without optimizer states."""
    from reasoner.models.checkpoint import check_model_dir, to_vllm_layout
    from reasoner.training.export import copy_model_files

    target = copy_model_files(checkpoint_dir, tempfile.mkdtemp(prefix="reasoner-select-"))
    to_vllm_layout(target)
    return str(check_model_dir(target))


def score_checkpoint(checkpoint, examples: Sequence[dict[str, Any]], config: SelectConfig,
                     engine: dict[str, Any]) -> dict[str, Any]:
    """Sample ``examples`` with the model of a Ray Train ``checkpoint``; its :func:`uncertainty` and step."""
    from reasoner.sampling import SampleConfig, Sampler
    from reasoner.training.raytrain import CHECKPOINT_NAME

    with checkpoint.as_directory() as directory:
        hf_dir = os.path.join(directory, CHECKPOINT_NAME)
        step = json.load(open(os.path.join(hf_dir, "trainer_state.json"), encoding="utf-8"))["global_step"]
        model_dir = model_of_checkpoint(hf_dir)
    sample = SampleConfig(num_samples=config.samples, temperature=config.temperature,
                          mc_temperature=config.temperature, max_tokens=config.max_tokens,
                          correct_threshold=config.correct_threshold)
    sampler = Sampler(model_dir, sample, engine)
    try:
        candidates = sampler.sample(list(examples))
    finally:
        sampler.close()
    result = {"step": step, "model_dir": model_dir, **uncertainty(candidates, config.min_accuracy, config.max_accuracy)}
    logger.info("checkpoint at step %d: mean accuracy %.3f, uncertain share %.3f", step, result["mean_accuracy"],
                result["uncertain_share"])
    return result
