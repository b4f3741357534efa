"""Candidate sampling (recipe step C1): many CoT rationales per question from the SFT model.

The paper (section 3.3) samples 32 candidates per question at temperature 1.0 (1.2 for multiple
choice) with the CoT prompt, and marks each right or wrong against the short answer. Here:

- :class:`Sampler` holds one vLLM engine (built by an injected factory, so the same code runs
  vLLM on a GPU, vLLM's CPU build, or anything with ``vllm.LLM``'s ``generate``) and turns
  examples into rows of the ``candidates`` artifact;
- :class:`SampleWorker` is the Ray Data actor around it: it samples a batch of questions, writes
  them as one Parquet part of ``<run>/candidates`` named by the batch's question ids (so a rerun
  skips the questions already done) and their unusable rows to ``<run>/rejected/sample``, the two
  committed together (``RunDir.write_batch``).

Why not ``ray.data.llm``'s vLLM processor: with vLLM 0.32 it keeps only the first output of a
request with ``n > 1`` (32 candidates per question would cost 32 prefills of the same prompt and
image instead of one), its chat-template and image stages fail against vLLM 0.32's moved modules,
and it does not return the per-candidate token counts and cumulative log-probs the artifact
holds. The actor pool here is the same shape (Ray Data ``map_batches`` over actors, one engine
each) with those three fixed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from reasoner.answers import correct_threshold_field, extract_answer, is_correct, score
from reasoner.options import check, option
from reasoner.prompts import build_prompt

if TYPE_CHECKING:
    from vllm import LLM

logger = logging.getLogger(__name__)


@dataclass
class SampleConfig:
    """Stage sample: candidates from ``model`` for the questions of ``split``."""

    # How the work is run, not what it makes: a rerun may change these and resume the artifact.
    OPERATIONAL: ClassVar[tuple[str, ...]] = ("questions_per_part", "num_engines")

    model: str = option("models/sft", "model artifact of the run to sample from (models/sft; models/base for a dry run)")
    split: Literal["train", "val", "test"] = option("train", "split whose questions are sampled (paper: train)")
    max_questions: int | None = option(None, "sample at most this many questions, a fixed subset mixing families (null: all)")
    num_samples: int = option(32, "candidates per question (paper: 32)")
    temperature: float = option(1.0, "sampling temperature for short-answer questions (paper: 1.0)")
    mc_temperature: float = option(1.2, "sampling temperature for multiple-choice questions (paper: 1.2)")
    top_p: float = option(1.0, "nucleus sampling mass")
    max_tokens: int = option(256, "most tokens a candidate may have")
    seed: int = option(0, "sampling seed (each question's seed derives from it and the question id)")
    correct_threshold: float = correct_threshold_field("a candidate is correct")
    questions_per_part: int = option(64, "questions per batch and Parquet part (the unit of resumable work)")
    num_engines: int = option(1, "vLLM engines, one Ray actor each, built as the run's engine section says "
                                 "(GPU: the cluster's GPUs / engine.gpus_per_engine)")

    def __post_init__(self) -> None:
        check(self.num_samples >= 1, "num_samples", self.num_samples, "sample at least 1 candidate")
        check(self.temperature >= 0, "temperature", self.temperature, "use 0 (greedy) or more")
        check(self.mc_temperature >= 0, "mc_temperature", self.mc_temperature, "use 0 (greedy) or more")
        check(0 < self.top_p <= 1, "top_p", self.top_p, "use a value in (0, 1]")
        check(self.max_tokens >= 1, "max_tokens", self.max_tokens, "allow at least 1 token")
        check(self.max_questions is None or self.max_questions >= 1, "max_questions", self.max_questions,
              "use a positive number or null for all")
        check(0 < self.correct_threshold <= 1, "correct_threshold", self.correct_threshold, "use a value in (0, 1]")
        check(self.questions_per_part >= 1, "questions_per_part", self.questions_per_part, "use e.g. 64")
        check(self.num_engines >= 1, "num_engines", self.num_engines, "run at least one engine")


def question_seed(seed: int, question_id: str) -> int:
    """A per-question sampling seed: stable across runs, batchings and Python hash salts."""
    digest = hashlib.sha256(f"{seed}/{question_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def candidate_rows(example: dict, prompt: str, completions: Sequence[Any], threshold: float) -> list[dict]:
    """Rows of the candidates artifact for one question's completions (vLLM ``CompletionOutput``s).

    ``completions`` need ``text``, ``token_ids`` and ``cumulative_logprob`` (None unless the
    request asked for log-probs; stored as NaN then).
    """
    rows = []
    for i, out in enumerate(completions):
        answer = extract_answer(out.text)
        value = score(answer, list(example["answers"]), example["metric"], example.get("choices"))
        logprob = out.cumulative_logprob
        rows.append({
            "id": example["id"], "sample_index": i, "prompt": prompt, "text": out.text, "answer": answer,
            "score": float(value), "correct": is_correct(value, example["metric"], threshold),
            "num_tokens": len(out.token_ids), "cumulative_logprob": float("nan") if logprob is None else float(logprob),
        })
    return rows


class Sampler:
    """One engine sampling CoT candidates for examples (rows of the examples artifact).

    ``engine_factory(model_dir, **engine)`` builds the engine (default
    :func:`reasoner.models.make_vllm_engine`; ``engine``: vLLM arguments, from the run's engine
    section through ``reasoner.models.engine.engine_kwargs``); the sampler owns it until :meth:`close`.
    """

    def __init__(self, model_dir: str, config: SampleConfig, engine: dict[str, Any] | None = None,
                 engine_factory: Callable[..., LLM] | None = None) -> None:
        from reasoner.models import load_processor, make_vllm_engine, shutdown_vllm_engine

        self.config = config
        self.processor = load_processor(model_dir)
        # Held, not imported in close(): an actor's __del__ may run at interpreter exit, when
        # imports fail ("sys.meta_path is None").
        self._shutdown = shutdown_vllm_engine
        self.llm = (engine_factory or make_vllm_engine)(model_dir, **(engine or {}))

    def sampling_params(self, example: dict):
        from vllm import SamplingParams

        c = self.config
        return SamplingParams(
            n=c.num_samples, temperature=c.mc_temperature if example["metric"] == "mc" else c.temperature,
            top_p=c.top_p, max_tokens=c.max_tokens, seed=question_seed(c.seed, example["id"]), logprobs=0,
        )

    def requests(self, examples: Sequence[dict]) -> tuple[list[str], list[dict], list]:
        """The CoT prompts, ``generate`` inputs and sampling params :meth:`sample` sends for ``examples``."""
        from reasoner.models.inputs import load_image
        from reasoner.models.inputs import generation_input

        prompts = [build_prompt(ex["question"], ex.get("choices"), "cot") for ex in examples]
        inputs = [generation_input(self.processor, prompt, load_image(ex["image"]))
                  for ex, prompt in zip(examples, prompts)]
        return prompts, inputs, [self.sampling_params(ex) for ex in examples]

    def sample(self, examples: Sequence[dict]) -> list[dict]:
        """Candidate rows for ``examples`` (usable ones: ``reasoner.data.examples.example_problem``)."""
        if not examples:
            return []
        prompts, inputs, params = self.requests(examples)
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        rows = []
        for ex, prompt, out in zip(examples, prompts, outputs):
            rows.extend(candidate_rows(ex, prompt, out.outputs, self.config.correct_threshold))
        return rows

    def close(self) -> None:
        """Stop the engine; a second call does nothing."""
        llm, self.llm = self.llm, None
        if llm is not None:
            self._shutdown(llm)


class SampleWorker:
    """Ray Data actor: sample a batch of questions and write it as one part of ``<run>/candidates``.

    Returns one summary row per batch (part, questions, candidates, correct, rejected), which the
    driver adds up; the candidates themselves never travel back through Ray.
    """

    def __init__(self, run, model_dir: str, config: SampleConfig, engine: dict[str, Any] | None = None,
                 engine_factory: Callable[..., LLM] | None = None, artifact: str = "candidates",
                 stage: str = "sample") -> None:
        self.run, self.artifact, self.stage = run, artifact, stage
        self.sampler = Sampler(model_dir, config, engine, engine_factory)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from reasoner.data.examples import example_problem, rows_from_batch
        from reasoner.schema import rejected_row

        examples = rows_from_batch(batch)
        rejected, usable = [], []
        for ex in examples:
            problem = example_problem(ex)
            if problem is None:
                usable.append(ex)
            else:
                rejected.append(rejected_row(ex, self.stage, problem))
        rows = self.sampler.sample(usable)
        part = self.run.write_batch(self.artifact, self.stage, [ex["id"] for ex in examples], rows, rejected,
                                    schema_name="candidates")
        return {"part": [part], "questions": [len(usable)], "candidates": [len(rows)],
                "correct": [sum(r["correct"] for r in rows)], "rejected": [len(rejected)]}

    def __del__(self) -> None:
        sampler = getattr(self, "sampler", None)
        if sampler is not None:
            sampler.close()
