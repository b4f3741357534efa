"""Stage (A), distillation: teacher rationales, kept only where their answer is right.

For each example (a row of the examples artifact) a teacher writes a chain-of-thought rationale
(``reasoner.teacher``); the rationale is kept only if the answer after its ``### Answer:`` marker
scores as correct against the example's short answers with the example's metric (Zhang et al.
2024, section 3.1: "we filtered out examples whose answer predicted by GPT-4o is different from
ground truth"). The SFT data then holds, per example (section 3.2):

- a CoT row: prompt ``build_prompt(question, choices, "cot")``, completion the rationale,
  normalised to one step a line ending in ``### Answer: <answer>`` (for multiple choice, the
  option's letter);
- a direct row: prompt ``build_prompt(question, choices, "direct")``, completion the ground-truth
  short answer ``answers[0]``. It comes from the ground truth, not the teacher, so it is written
  for every usable example (``include_direct``), also where the rationale is rejected. The paper
  trains on the distilled CoT and "corresponding short answers" together (section 4.1); its equal
  counts (193k each) suggest direct rows only for kept examples, but a ground-truth answer is
  right whatever the teacher did, so none is thrown away here. Filter on ``mode`` to match.
- a caption row, for an example with a ``caption`` (the synthetic suite reads every value its
  image shows; real datasets have none): prompt ``CAPTION_PROMPT``, completion the caption
  (``include_caption``). The paper's base model was pretrained on image descriptions and its SFT
  mixes 2k LLaVA pretraining rows back in (section 4.1); the embedded default's base is random,
  and these rows are its image-text alignment data: they make every completion token depend on
  the image, where a CoT row has one to three such tokens and a direct row one.

Row ids: every row keeps the example's ``id``; ``(id, mode)`` is unique in sft_data, so every row
traces back to its example and the modes of an example stay paired.

Rejections (``<run>/rejected/distill``, reason column) are final, for what is wrong with the
example or the teacher's answer to it: an unusable example (bad row, unreadable image) before any
request; "teacher error after retries: ..." (a request the endpoint refused, such as a 400);
"no answer marker in teacher output"; "teacher gave no reasoning steps"; "teacher answer wrong: got
X, expected Y". A failure that is not the example's, a call the ``Budget`` stopped or a transport
failure that outlasted the client's retries (429, 5xx, timeouts, lost connections), produces
neither rows nor a rejection: the outcome is ``pending``, for a rerun to ask again; with
``give_up_pending`` it becomes a rejection, "transport: ...", and the example's ground-truth rows
are written as for any rejected rationale.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from reasoner.answers import correct_threshold_field, extract_answer, is_correct, predicted_letter, score
from reasoner.options import check, option
from reasoner.data.examples import as_python, example_problem
from reasoner.prompts import CAPTION_PROMPT, build_prompt, format_cot
from reasoner.schema import rejected_row
from reasoner.teacher import (
    Budget,
    DurableBudget,
    GroundTruthTeacher,
    OpenAITeacher,
    SharedBudget,
    Teacher,
    TeacherReply,
)

logger = logging.getLogger(__name__)

STAGE = "distill"
NO_MARKER = "no answer marker in teacher output"
NO_STEPS = "teacher gave no reasoning steps"
TEACHER_ERROR = "teacher error after retries"
TRANSPORT = "transport"  # the reason's prefix of a pending example given up on (give_up_pending)

_MARKER = re.compile(r"###\s*answer\s*:", re.IGNORECASE)  # as reasoner.answers.extract_answer
_BULLET = re.compile(r"^(?:[-*\u2022]\s+|(?:step\s*)?\d{1,2}[.):]\s+)", re.IGNORECASE)


@dataclass
class DistillConfig:
    """Stage distill: which teacher writes the rationales, how it is called, what is kept."""

    # How the work is run, not what it makes: a rerun may change these and resume the artifact.
    OPERATIONAL: ClassVar[tuple[str, ...]] = ("max_concurrency", "max_retries", "timeout_s", "max_requests",
                                              "max_tokens_budget", "examples_per_part", "num_workers",
                                              "give_up_pending")

    teacher: Literal["openai", "ground_truth"] = option(
        "ground_truth", "'openai': an OpenAI-compatible endpoint (GPT-4o, a vLLM server); 'ground_truth': the "
        "examples' own rationales (the synthetic suite's offline teacher)")
    model: str = option("gpt-4o", "model name the endpoint serves (teacher: openai)")
    base_url: str | None = option(
        None, "the endpoint's .../v1 URL; null: OPENAI_BASE_URL, else OpenAI's API. The key comes from "
        "OPENAI_API_KEY (not needed for a local 127.0.0.1 server)")
    temperature: float = option(0.0, "sampling temperature of the teacher, in [0, 2] (0: greedy)")
    max_tokens: int = option(512, "longest rationale in tokens (the paper's CoT responses peak near 100)")
    max_concurrency: int = option(16, "teacher requests in flight at once, per worker")
    max_retries: int = option(5, "retries of a failed request (429, 5xx, timeouts) by the openai client")
    timeout_s: float = option(60.0, "seconds per request attempt")
    max_requests: int | None = option(
        None, "stop asking after this many requests in all, over every worker, restart and rerun of the run's "
        "distill stage (spending is kept in <run>/_budget/distill.json, which overwrite=true keeps too; raise the "
        "limit to send more). The examples not asked stay pending (null: no limit)")
    max_tokens_budget: int | None = option(
        None, "stop asking once this many prompt + completion tokens are spent in all, kept as max_requests is "
        "(may overshoot by the replies in flight; null: no limit)")
    correct_threshold: float = correct_threshold_field("a rationale is kept")
    include_direct: bool = option(True, "also write a direct row (the ground-truth short answer) per usable example")
    include_caption: bool = option(
        True, "also write a caption row (prompt 'Describe the image.', completion the example's caption) per usable "
        "example that has a caption (the synthetic suite's do: image-text alignment data for a random base model)")
    answer_hint: bool = option(
        False, "tell the teacher the ground-truth answer as a hint (more yield on hard data; rationales may "
        "argue backwards from it)")
    split: Literal["train", "val", "test"] = option("train", "split whose examples are distilled")
    max_examples: int | None = option(None, "distill at most this many examples, a fixed subset mixing families (null: all)")
    examples_per_part: int = option(256, "examples per batch and Parquet part (the unit of resumable work)")
    num_workers: int = option(1, "Ray Data workers calling the teacher (each with max_concurrency requests)")
    give_up_pending: bool = option(
        False, "reject (reason 'transport: ...') the examples whose request failed after the retries (429, 5xx, "
        "timeouts) or found the budget spent, so the stage completes without them; false: they stay pending, "
        "the stage is incomplete, and a rerun asks again")

    def __post_init__(self) -> None:
        check(self.teacher in ("openai", "ground_truth"), "teacher", self.teacher,
              "use 'openai' or 'ground_truth'")
        check(isinstance(self.model, str) and bool(self.model.strip()), "model", self.model,
              "give the served model's name, e.g. 'gpt-4o'")
        check(self.base_url is None or (isinstance(self.base_url, str)
                                        and self.base_url.startswith(("http://", "https://"))),
              "base_url", self.base_url, "give an http(s) URL ending in /v1, or null for OPENAI_BASE_URL")
        check(_number(self.temperature) and 0 <= self.temperature <= 2, "temperature", self.temperature,
              "use a number in [0, 2]; 0 for greedy")
        for name, low in (("max_tokens", 1), ("max_concurrency", 1), ("max_retries", 0)):
            value = getattr(self, name)
            check(_integer(value) and value >= low, name, value, f"use an integer >= {low}")
        check(_number(self.timeout_s) and self.timeout_s > 0, "timeout_s", self.timeout_s,
              "use seconds > 0, e.g. 60")
        for name in ("max_requests", "max_tokens_budget"):
            value = getattr(self, name)
            check(value is None or (_integer(value) and value >= 0), name, value,
                  "use a non-negative integer, or null for no limit")
        check(_number(self.correct_threshold) and 0 <= self.correct_threshold <= 1, "correct_threshold",
              self.correct_threshold, "use a number in [0, 1]; 0.5 is the recipe's")
        check(self.max_examples is None or (_integer(self.max_examples) and self.max_examples >= 1),
              "max_examples", self.max_examples, "use a positive integer, or null for all")
        for name in ("examples_per_part", "num_workers"):
            check(_integer(getattr(self, name)) and getattr(self, name) >= 1, name, getattr(self, name),
                  "use an integer >= 1")
        for name in ("include_direct", "include_caption", "answer_hint", "give_up_pending"):
            check(isinstance(getattr(self, name), bool), name, getattr(self, name), "use true or false")


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def make_teacher(config: DistillConfig, budget: Budget | SharedBudget | None = None) -> Teacher:
    """The teacher ``config`` names; an OpenAI teacher gets ``budget`` or one from the config."""
    if config.teacher == "ground_truth":
        return GroundTruthTeacher()
    if budget is None:
        budget = Budget(config.max_requests, config.max_tokens_budget)
    return OpenAITeacher(config.model, base_url=config.base_url, temperature=config.temperature,
                         max_tokens=config.max_tokens, timeout_s=config.timeout_s, max_retries=config.max_retries,
                         max_concurrency=config.max_concurrency, budget=budget, answer_hint=config.answer_hint)


@dataclass(frozen=True)
class DistillOutcome:
    """What became of one example.

    ``rows``: its sft_data rows (a CoT row if the rationale was kept, a direct row if
    ``include_direct``, a caption row if ``include_caption`` and the example has a caption).
    ``rejected``: a row of the rejected artifact if the example or its rationale was rejected
    (the direct and caption rows may still be in ``rows``). ``pending``: the budget stopped the
    request or a transport failure outlasted the retries (``pending_reason``: "budget" or
    "transport"); neither rows nor a rejection, so a rerun asks again.
    """

    id: str | None
    rows: list[dict] = field(default_factory=list)
    rejected: dict | None = None
    pending: bool = False
    pending_reason: Literal["budget", "transport"] | None = None

    @property
    def kept(self) -> bool:
        """Whether the teacher's rationale became a CoT row."""
        return any(row["mode"] == "cot" for row in self.rows)


def normalise_rationale(text: str, choices: list[str] | None = None) -> str:
    """The rationale as one step a line, ending in ``### Answer: <answer>``.

    Steps are the non-empty lines before the last marker (text before the marker on its line
    included), stripped, without list bullets or step numbers ("- ", "1. ", "Step 2:"); lines
    holding an earlier marker are dropped. The answer is ``extract_answer``'s; for multiple
    choice, the option's letter where it can be told. Raises ValueError with the rejection
    reason (``NO_MARKER``, ``NO_STEPS``).
    """
    answer = extract_answer(text)
    if answer is None:
        raise ValueError(NO_MARKER)
    if choices is not None:
        answer = predicted_letter(answer, choices) or answer
    last = list(_MARKER.finditer(text))[-1]
    steps = []
    for line in text[: last.start()].splitlines():
        line = _BULLET.sub("", line.strip()).strip()
        if line and not _MARKER.search(line):
            steps.append(line)
    if not steps:
        raise ValueError(NO_STEPS)
    return format_cot(steps, answer)


def _expected(answers: list[str]) -> str:
    return answers[0] if len(answers) == 1 else f"one of {answers[:5]}" + (" ..." if len(answers) > 5 else "")


def _cot_row(example: dict, reply: TeacherReply, config: DistillConfig) -> tuple[dict | None, str | None]:
    """(the CoT row, None) if the rationale is kept, else (None, the rejection reason)."""
    if reply.text is None:
        return None, f"{TEACHER_ERROR}: {reply.error}"
    try:
        completion = normalise_rationale(reply.text, example["choices"])
    except ValueError as e:
        reason = str(e)
        if reason == NO_MARKER and reply.finish_reason == "length":
            reason += " (cut off at max_tokens)"
        return None, reason
    answer = extract_answer(reply.text)
    value = score(answer, example["answers"], example["metric"], example["choices"])
    if not is_correct(value, example["metric"], config.correct_threshold):
        return None, f"teacher answer wrong: got {answer}, expected {_expected(example['answers'])}"
    return {"id": example["id"], "image": example["image"], "mode": "cot", "completion": completion,
            "prompt": build_prompt(example["question"], example["choices"], "cot")}, None


def _outcome(example: dict, reply: TeacherReply, config: DistillConfig) -> DistillOutcome:
    """The outcome of a usable example given the teacher's reply."""
    if reply.pending and not config.give_up_pending:
        return DistillOutcome(example["id"], pending=True,
                              pending_reason="budget" if reply.budget_exhausted else "transport")
    rows = []
    if reply.pending:
        cot, reason = None, f"{TRANSPORT}: {reply.error}"
    else:
        cot, reason = _cot_row(example, reply, config)
    if cot is not None:
        rows.append(cot)
    if config.include_direct:
        rows.append({"id": example["id"], "image": example["image"], "mode": "direct",
                     "prompt": build_prompt(example["question"], example["choices"], "direct"),
                     "completion": example["answers"][0].strip()})
    caption = example.get("caption")
    if config.include_caption and isinstance(caption, str) and caption.strip():
        rows.append({"id": example["id"], "image": example["image"], "mode": "caption", "prompt": CAPTION_PROMPT,
                     "completion": caption.strip()})
    rejected = None if reason is None else rejected_row(example, STAGE, reason)
    return DistillOutcome(example["id"], rows, rejected)


def distill_rows(example: dict, reply: TeacherReply, config: DistillConfig) -> DistillOutcome:
    """The sft_data rows and the rejection of one example, given the teacher's ``reply``.

    An unusable example (``example_problem``) is rejected whatever the reply. A
    budget-exhausted or transient reply makes the outcome pending (a rejection "transport: ..."
    with ``give_up_pending``). Otherwise the rationale is kept as a CoT
    row if ``is_correct(score(extract_answer(reply.text), answers, metric, choices), metric)``
    (with ``config.correct_threshold``); the direct row is added if ``include_direct``, the caption
    row if ``include_caption`` and the example has a caption.
    """
    example = as_python(example)
    problem = example_problem(example)
    if problem is not None:
        return DistillOutcome(example.get("id"), rejected=rejected_row(example, STAGE, problem))
    return _outcome(example, reply, config)


async def distill_examples(examples: list[dict], teacher: Teacher, config: DistillConfig) -> list[DistillOutcome]:
    """Distill ``examples``: reject the unusable ones without a request, ask ``teacher`` about
    the rest (concurrently, as the teacher allows), and return one outcome per example, in order.
    """
    examples = [as_python(e) for e in examples]
    problems = [example_problem(e) for e in examples]
    usable = [e for e, p in zip(examples, problems) if p is None]
    replies = iter(await teacher.generate_many(usable))
    outcomes = []
    for example, problem in zip(examples, problems):
        if problem is not None:
            outcomes.append(DistillOutcome(example.get("id"), rejected=rejected_row(example, STAGE, problem)))
        else:
            outcomes.append(_outcome(example, next(replies), config))
    kept = sum(o.kept for o in outcomes)
    pending = sum(o.pending for o in outcomes)
    rejected = sum(o.rejected is not None for o in outcomes)
    logger.info("distilled %d examples: %d rationales kept, %d rejected, %d pending (budget or transport)",
                len(examples), kept, rejected, pending)
    return outcomes


class DistillWorker:
    """Ray Data actor: distill a batch of examples and write it as one part of ``<run>/sft_data``.

    The part holds the rows and the rejections of the batch, committed together
    (``RunDir.write_batch``); examples left pending (budget, transport) are written nowhere, so a
    rerun asks about them again. ``budget``: what the OpenAI teacher spends from (the job's
    ``SharedBudget``); None: a ``DurableBudget`` of this process over the run's ledger. Returns one
    summary row per batch, which the driver adds up.
    """

    def __init__(self, run, config: DistillConfig, artifact: str = "sft_data",
                 budget: Budget | SharedBudget | None = None) -> None:
        self.run, self.config, self.artifact = run, config, artifact
        limited = config.max_requests is not None or config.max_tokens_budget is not None
        if budget is None and config.teacher == "openai" and limited:
            budget = DurableBudget(run, STAGE, config.max_requests, config.max_tokens_budget)
        self.teacher = make_teacher(config, budget)

    def __call__(self, batch: dict) -> dict[str, list]:
        import asyncio

        from reasoner.data.examples import rows_from_batch

        examples = rows_from_batch(batch)
        outcomes = asyncio.run(distill_examples(examples, self.teacher, self.config))
        done = [o for o in outcomes if not o.pending]
        ids = [e["id"] for e in examples if e.get("id") is not None]
        part = self.run.write_batch(self.artifact, STAGE, ids,
                                    [row for o in done for row in o.rows],
                                    [o.rejected for o in done if o.rejected is not None], schema_name="sft_data")
        return {"part": [part], "examples": [len(examples)], "kept": [sum(o.kept for o in done)],
                "rejected": [sum(o.rejected is not None for o in done)],
                "pending_budget": [sum(o.pending_reason == "budget" for o in outcomes)],
                "pending_transport": [sum(o.pending_reason == "transport" for o in outcomes)]}
