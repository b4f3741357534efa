"""Batch reranking (``jobs.rerank``): N candidates a question from a generator, the verifier's
rewards, and each strategy's chosen answer, for any Parquet of questions in the example schema.

The evaluation's pool without the curves: the same sampling settings, the same scoring of each
candidate under the generator (the reference half of the reward and the control's mean
likelihood) and the verifier (``reasoner.eval_pool.score_candidates`` and ``pool_rows``), and the
same choice functions the server uses (``reasoner.verify.select``). Two passes, each an actor pool
of one engine kind, so a cluster never holds both models' engines at once and each pass resumes
by part:

1. :class:`PoolWorker` (the generator): samples ``n`` candidates a question and scores them under
   itself, writing ``<output>/sampled`` (a question a row, its image kept for the next pass;
   unusable questions to ``rejected/rerank`` with the reason);
2. :class:`VerifyWorker` (the verifier): scores each sampled part under the verifier and writes
   ``<output>/answers``: a question a row with its candidates (text, answer, reward, control,
   log-probs) and, per strategy, the chosen candidate's index and answer, and whether it is right
   when the question has answers (a question with none is reranked, not graded).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from reasoner.answers import correct_threshold_field
from reasoner.options import check, option
from reasoner.verify import NEEDS_REWARDS, STRATEGIES

STAGE = "rerank"
SAMPLED, ANSWERS = "sampled", "answers"

_STR_LIST = pa.list_(pa.string())
_CANDIDATE = pa.struct([
    pa.field("sample_index", pa.int32()), pa.field("text", pa.string()), pa.field("answer", pa.string()),
    pa.field("score", pa.float64()), pa.field("correct", pa.bool_()), pa.field("num_tokens", pa.int32()),
    pa.field("reward", pa.float64()), pa.field("control", pa.float64()),
    pa.field("policy_logp", pa.float64()), pa.field("reference_logp", pa.float64()),
    pa.field("tokens", _STR_LIST), pa.field("token_rewards", pa.list_(pa.float64())),
])
_SCORED = pa.struct([
    pa.field("sample_index", pa.int32()), pa.field("text", pa.string()), pa.field("answer", pa.string()),
    pa.field("score", pa.float64()), pa.field("correct", pa.bool_()), pa.field("num_tokens", pa.int32()),
    pa.field("cumulative_logprob", pa.float64()), pa.field("tokens", _STR_LIST),
    pa.field("token_ids", pa.list_(pa.int32())), pa.field("logprobs", pa.list_(pa.float64())),
])
QUESTION_FIELDS = [pa.field("id", pa.string(), nullable=False), pa.field("source", pa.string()),
                   pa.field("split", pa.string()), pa.field("question", pa.string()),
                   pa.field("choices", _STR_LIST), pa.field("answers", _STR_LIST), pa.field("metric", pa.string())]
SAMPLED_SCHEMA = pa.schema([*QUESTION_FIELDS, pa.field("image", pa.binary()), pa.field("prompt", pa.string()),
                            pa.field("candidates", pa.list_(_SCORED))])
ANSWERS_SCHEMA = pa.schema([
    *QUESTION_FIELDS, pa.field("prompt", pa.string()), pa.field("verifier", pa.string()),
    pa.field("beta", pa.float64()), pa.field("candidates", pa.list_(_CANDIDATE)),
    *[f for s in STRATEGIES for f in (pa.field(f"index_{s}", pa.int32()), pa.field(f"answer_{s}", pa.string()),
                                      pa.field(f"correct_{s}", pa.bool_()))],
    pa.field("oracle", pa.bool_()),
])
"""``<output>/answers``: a question a row. ``index_<s>``/``answer_<s>``/``correct_<s>`` are strategy
``s``'s choice (null where it did not run: no verifier); ``correct_*`` and ``oracle`` (any
candidate right) are null for a question without answers."""

REQUIRED_COLUMNS = ("id", "image", "question", "metric")
"""Input columns a question must have; ``source``, ``split``, ``choices`` and ``answers`` may be absent."""


@dataclass
class RerankConfig:
    """Job rerank: N candidates a question from ``generator``, reranked by ``verifier``."""

    # How the work is run, not what it makes: a rerun may change these and resume the artifact.
    OPERATIONAL: ClassVar[tuple[str, ...]] = ("questions_per_part", "num_engines")

    input: str | None = option(
        None, "Parquet of questions in the example schema (a file, a directory or a URI: s3://bucket/q/); "
        "null: the run's examples. Columns id, image, question and metric are required; answers may be empty "
        "(the question is reranked, not graded)")
    split: str | None = option(None, "rerank only the rows of this split (null: every row)")
    max_questions: int | None = option(None, "at most this many questions, a fixed subset mixing sources (null: all)")
    output: str = option("rerank", "artifact of the run the results go to: <run>/<output>/answers")
    generator: str = option("models/sft", "model artifact of the run that samples the candidates (the paper: SFT)")
    verifier: str | None = option(
        "models/dpo", "the DPO model whose implicit reward against the generator reranks them (null: no verifier; "
        "single, majority and control only)")
    n: int = option(32, "candidates a question (the paper: 32)")
    strategies: list[str] = option(list(STRATEGIES), f"strategies whose choice is written: {', '.join(STRATEGIES)}")
    beta: float | None = option(None, "the reward's beta (null: the DPO run's)")
    temperature: float = option(1.0, "sampling temperature (paper: 1.0)")
    mc_temperature: float = option(1.2, "... for multiple-choice questions (paper: 1.2)")
    top_p: float = option(1.0, "nucleus sampling mass")
    max_tokens: int = option(256, "most tokens of a candidate")
    seed: int = option(0, "sampling seed (each question's derives from it and the question id)")
    correct_threshold: float = correct_threshold_field()
    token_rewards: bool = option(False, "keep every candidate's tokens and token rewards (large: a float a token)")
    questions_per_part: int = option(64, "questions per batch and Parquet part (the unit of resumable work)")
    num_engines: int = option(1, "vLLM engines of each pass, one Ray actor each, built as the run's engine "
                                 "section says")

    def __post_init__(self) -> None:
        check(self.input is None or (isinstance(self.input, str) and bool(self.input.strip())), "input", self.input,
              "give a Parquet file, directory or URI, or null for the run's examples")
        check(self.max_questions is None or self.max_questions >= 1, "max_questions", self.max_questions,
              "use a positive number or null for all")
        check(bool(self.output) and not self.output.startswith(("/", "_", ".")) and "://" not in self.output,
              "output", self.output, "name an artifact inside the run, e.g. rerank")
        check(self.n >= 1, "n", self.n, "sample at least 1 candidate")
        check(bool(self.strategies) and all(s in STRATEGIES for s in self.strategies)
              and len(set(self.strategies)) == len(self.strategies), "strategies", self.strategies,
              f"list some of {', '.join(STRATEGIES)}, each once")
        check(self.beta is None or self.beta > 0, "beta", self.beta, "use a positive number, or null for the DPO run's")
        check(self.temperature >= 0 and self.mc_temperature >= 0, "temperature", self.temperature, "use 0 or more")
        check(0 < self.top_p <= 1, "top_p", self.top_p, "use a value in (0, 1]")
        check(self.max_tokens >= 1, "max_tokens", self.max_tokens, "allow at least 1 token")
        check(self.seed >= 0, "seed", self.seed, "use a non-negative seed")
        check(0 < self.correct_threshold <= 1, "correct_threshold", self.correct_threshold, "use a value in (0, 1]")
        check(self.questions_per_part >= 1, "questions_per_part", self.questions_per_part, "use e.g. 64")
        check(self.num_engines >= 1, "num_engines", self.num_engines, "run at least one engine")

    def run_strategies(self, has_verifier: bool) -> list[str]:
        """The strategies that run: those needing rewards only with a verifier."""
        return [s for s in self.strategies if has_verifier or s not in NEEDS_REWARDS]


def question_problem(example: dict) -> str | None:
    """Why a question cannot be reranked (``reasoner.data.examples.example_problem``), or None.
    A question without answers is fine: it is reranked, not graded."""
    from reasoner.data.examples import example_problem

    return example_problem({"source": "input", "split": "test", "choices": None, "rationale": None,
                            **_gradable(example)})


def _labelled(example: dict) -> bool:
    return bool(example.get("answers"))


def _gradable(example: dict) -> dict:
    """``example`` as the examples schema and the sampler's grading want it: a question without
    answers gets a stand-in one (its scores are blanked in :func:`sampled_rows`)."""
    return example if _labelled(example) else {**example, "answers": ["(none)"]}


def sampled_rows(examples: Sequence[dict], candidates: Sequence[dict], reference: Sequence[Any]) -> list[dict]:
    """A question a row (``SAMPLED_SCHEMA``): its candidates, each with its tokens and log-probs
    under the generator (``reference``: ``TokenLogProbs`` in the order of ``candidates``)."""
    labelled = {ex["id"]: _labelled(ex) for ex in examples}
    by_id: dict[str, list[dict]] = defaultdict(list)
    prompts: dict[str, str] = {}
    for row, ref in zip(candidates, reference, strict=True):
        graded = labelled[row["id"]]
        prompts[row["id"]] = row["prompt"]
        by_id[row["id"]].append({
            "sample_index": row["sample_index"], "text": row["text"], "answer": row["answer"],
            "score": row["score"] if graded else None, "correct": row["correct"] if graded else None,
            "num_tokens": row["num_tokens"], "cumulative_logprob": row["cumulative_logprob"],
            "tokens": list(ref.tokens), "token_ids": list(ref.token_ids), "logprobs": list(ref.logprobs)})
    rows = []
    for ex in examples:
        cands = sorted(by_id.get(ex["id"], []), key=lambda c: c["sample_index"])
        rows.append({**{f.name: ex.get(f.name) for f in QUESTION_FIELDS}, "answers": list(ex.get("answers") or []),
                     "image": ex["image"], "prompt": prompts.get(ex["id"]), "candidates": cands})
    return rows


def reference_logprobs(question: dict) -> list[Any]:
    """The generator's ``TokenLogProbs`` of a sampled question's candidates, as stored."""
    from reasoner.models.scorer import TokenLogProbs

    return [TokenLogProbs(list(c["tokens"]), list(c["token_ids"]), list(c["logprobs"]))
            for c in question["candidates"]]


def answer_row(question: dict, scored: Sequence[dict], strategies: Sequence[str], *, verifier: str | None,
               beta: float | None, keep_tokens: bool) -> dict:
    """A question's row of ``ANSWERS_SCHEMA``: ``scored`` are its candidates as
    ``reasoner.eval_pool.pool_rows`` returns them (reward null without a verifier)."""
    from reasoner.verify import select

    labelled = _labelled(question)
    answers = [c["answer"] for c in scored]
    rewards = [c["reward"] for c in scored] if verifier is not None else None
    control = [c["control"] for c in scored]
    row = {**{f.name: question.get(f.name) for f in QUESTION_FIELDS}, "prompt": question.get("prompt"),
           "verifier": verifier, "beta": beta if verifier is not None else None}
    row["candidates"] = [{
        "sample_index": c["sample_index"], "text": c["text"], "answer": c["answer"], "score": c["score"],
        "correct": c["correct"], "num_tokens": c["num_tokens"], "reward": c["reward"], "control": c["control"],
        "policy_logp": c["policy_logp"], "reference_logp": c["reference_logp"],
        "tokens": c["tokens"] if keep_tokens else None,
        "token_rewards": c["token_rewards"] if keep_tokens else None} for c in scored]
    for s in STRATEGIES:
        row[f"index_{s}"] = row[f"answer_{s}"] = row[f"correct_{s}"] = None
    for s in strategies if scored else ():
        values = {"control": control, "majority": None}.get(s, rewards)
        pick = select(s, answers, values, metric=question["metric"], choices=question.get("choices"))
        row[f"index_{s}"], row[f"answer_{s}"] = pick.index, pick.answer
        if labelled:
            row[f"correct_{s}"] = bool(pick.answer is not None and scored[pick.index]["correct"])
    row["oracle"] = any(c["correct"] for c in scored) if labelled else None
    return row


class PoolWorker:
    """Ray Data actor of pass 1: one engine over the generator samples ``n`` candidates a question
    and scores them under itself; a batch is written as one part of ``<output>/sampled``."""

    def __init__(self, run, artifact: str, cache_dir: str, config: RerankConfig,
                 engine: dict[str, Any] | None = None, engine_factory: Callable[..., Any] | None = None) -> None:
        from reasoner.eval_pool import pool_sample_config
        from reasoner.sampling import Sampler
        from reasoner.training.export import engine_model_dir

        self.run, self.config = run, config
        self._model = contextlib.ExitStack()  # a merged LoRA adapter's directory lives as long as the actor
        model_dir = self._model.enter_context(engine_model_dir(run, artifact, cache_dir))
        self.sampler = Sampler(model_dir, pool_sample_config(
            n=config.n, temperature=config.temperature, mc_temperature=config.mc_temperature, top_p=config.top_p,
            max_tokens=config.max_tokens, seed=config.seed, correct_threshold=config.correct_threshold),
            engine, engine_factory)

    def __call__(self, batch: pa.Table) -> dict[str, list]:
        from reasoner.eval_pool import score_candidates
        from reasoner.schema import rejected_row

        examples = batch.to_pylist()
        usable, rejected = [], []
        for ex in examples:
            problem = question_problem(ex)
            if problem is None:
                usable.append(ex)
            else:
                rejected.append(rejected_row(ex, self.config.output, problem))
        candidates = self.sampler.sample([_gradable(ex) for ex in usable])
        reference = score_candidates(self.sampler.llm, usable, candidates)
        rows = sampled_rows(usable, candidates, reference)
        table_rows = pa.Table.from_pylist(rows, schema=SAMPLED_SCHEMA).to_pylist() if rows else []
        part = self.run.write_batch(f"{self.config.output}/{SAMPLED}", self.config.output,
                                    [ex["id"] for ex in examples], table_rows, rejected)
        return {"part": [part], "questions": [len(usable)], "candidates": [len(candidates)],
                "rejected": [len(rejected)]}

    def __del__(self) -> None:
        sampler = getattr(self, "sampler", None)
        if sampler is not None:
            sampler.close()
        if hasattr(self, "_model"):
            self._model.close()


class VerifyWorker:
    """Ray Data actor of pass 2: scores the candidates of sampled parts under the verifier (none:
    rewards null) and writes each part's ``<output>/answers`` with every strategy's choice."""

    def __init__(self, run, artifact: str | None, cache_dir: str, config: RerankConfig, beta: float | None,
                 engine: dict[str, Any] | None = None, engine_factory: Callable[..., Any] | None = None) -> None:
        from reasoner.models import make_vllm_engine, shutdown_vllm_engine
        from reasoner.training.export import engine_model_dir

        self.run, self.config, self.beta = run, config, beta
        self._shutdown, self._model, self.llm = shutdown_vllm_engine, contextlib.ExitStack(), None
        if artifact is not None:
            model_dir = self._model.enter_context(engine_model_dir(run, artifact, cache_dir))
            self.llm = (engine_factory or make_vllm_engine)(model_dir, **(engine or {}))
        self.strategies = config.run_strategies(self.llm is not None)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        import pyarrow.parquet as pq

        from reasoner.eval_pool import pool_rows, score_candidates

        parts = [str(p) for p in batch["part"]]
        out: dict[str, list] = {"part": [], "questions": []}
        for part in parts:
            path = self.run.path(self.config.output, SAMPLED, part)
            questions = pq.read_table(path, filesystem=self.run.fs, schema=SAMPLED_SCHEMA).to_pylist()
            flat = [{**c, "id": q["id"], "prompt": q["prompt"]} for q in questions for c in q["candidates"]]
            # One batched scoring call a part, as the evaluation's pool is scored.
            policy = None if self.llm is None else score_candidates(self.llm, questions, flat)
            scored = pool_rows(flat, [t for q in questions for t in reference_logprobs(q)], policy, self.beta)
            rows, start = [], 0
            for q in questions:
                mine, start = scored[start:start + len(q["candidates"])], start + len(q["candidates"])
                rows.append(answer_row(q, mine, self.strategies, verifier=None if self.llm is None else "dpo",
                                       beta=self.beta, keep_tokens=self.config.token_rewards))
            self.run.write_part(f"{self.config.output}/{ANSWERS}", part.removesuffix(".parquet"),
                                pa.Table.from_pylist(rows, schema=ANSWERS_SCHEMA))
            out["part"].append(part)
            out["questions"].append(len(rows))
        return out

    def __del__(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            self._shutdown(llm)
        if hasattr(self, "_model"):
            self._model.close()


def summary(table: pa.Table, strategies: Sequence[str]) -> dict[str, Any]:
    """Per strategy, the accuracy of its choices over the graded questions (``correct_<s>``)."""
    graded = [r for r in table.select(["oracle", *[f"correct_{s}" for s in strategies]]).to_pylist()
              if r["oracle"] is not None]
    out: dict[str, Any] = {"questions": table.num_rows, "graded": len(graded)}
    if graded:
        out["accuracy"] = {s: sum(bool(r[f"correct_{s}"]) for r in graded) / len(graded) for s in strategies}
        out["accuracy"]["oracle"] = sum(r["oracle"] for r in graded) / len(graded)
    return out
