"""Greedy accuracy of a model on held-out examples, per source and prompt mode.

The paper's measure of an SFT model (Zhang et al. 2024, Table 2): every question is answered
greedily in both modes, direct (the short answer or the option letter) and CoT (a rationale, then
``### Answer:``), with the paper's prompts, and scored with the question's own metric
(``reasoner.answers``: the answer after the marker for CoT; for direct, the marker's answer if the
model wrote one, else the whole reply). Accuracy is the mean of ``is_correct``, reported per source
(for the synthetic suite, its family: ``synthetic/chart``, ...), per number of reasoning steps (the
lines of the ground-truth rationale, where there is one) and overall.

With ``image_gain`` (on by default) the ground-truth rationale of every question that has one is
scored under the CoT prompt with the real image and with the blank one (the shared log-prob
scorer, on the same engine): the mean difference, in nats, is what the model draws from the image.
It moves well before greedy accuracy does (a `small` model drawing 1.8 nats a chart rationale from
the image answered chart questions only 0.03-0.11 above the blank-image baseline), so it is the
first figure to watch while tuning.

With ``blind`` (on by default) every question is asked again with a blank image of the same size
(modes ``direct_blind``, ``cot_blind``): the accuracy a model reaches without looking. A model
that reads its images beats it; one that learned only the text's priors (answer formats, likely
values) does not, whatever its loss says.

:class:`GreedyEvaluator` holds one vLLM engine; :func:`summarise` and :func:`format_summary` turn its
rows into the report. Train-time use: ``jobs.train_sft`` evaluates the exported model on a slice of
the validation split (``sft.eval``) and writes ``eval.json`` beside it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reasoner.answers import correct_threshold_field, extract_answer, is_correct, score
from reasoner.options import check, option
from reasoner.prompts import MODES, build_prompt

if TYPE_CHECKING:
    from vllm import LLM

EVAL_FILE = "eval.json"
MAX_STEPS_BUCKET = 4


@dataclass
class GreedyEvalConfig:
    """Greedy direct and CoT accuracy of a trained model on held-out questions."""

    questions: int = option(256, "questions answered greedily in each mode (a fixed subset mixing families); "
                                 "0 skips the evaluation")
    split: str = option("val", "split of the run's examples to answer")
    modes: list[str] = option(["direct", "cot"], "prompt modes to evaluate (the paper's two)")
    max_tokens: int = option(256, "most tokens of a reply")
    blind: bool = option(True, "also ask every question with a blank image (modes <mode>_blind): the accuracy "
                               "reached without looking, which a model that reads images beats")
    correct_threshold: float = correct_threshold_field()
    image_gain: bool = option(True, "also score each question's ground-truth rationale (CoT prompt) with its "
                                    "image and with a blank one: the log-prob the image adds, in nats. It "
                                    "shows a model starting to read long before greedy accuracy does")

    def __post_init__(self) -> None:
        check(self.questions >= 0, "questions", self.questions, "use 0 (skip) or more")
        check(bool(self.split), "split", self.split, "name a split, e.g. val")
        check(bool(self.modes) and all(m in MODES for m in self.modes) and len(set(self.modes)) == len(self.modes),
              "modes", self.modes, f"list distinct modes of {list(MODES)}")
        check(self.max_tokens >= 1, "max_tokens", self.max_tokens, "allow at least 1 token")
        check(0 < self.correct_threshold <= 1, "correct_threshold", self.correct_threshold, "use a value in (0, 1]")


def reasoning_steps(example: dict) -> int | None:
    """The number of steps of the ground-truth rationale (its lines before the answer), or None."""
    rationale = example.get("rationale")
    if not rationale:
        return None
    lines = [line for line in rationale.strip().splitlines() if line.strip()]
    return max(1, sum(1 for line in lines if extract_answer(line) is None))


def prediction_of(text: str, mode: str) -> str | None:
    """The answer a reply gives: after the marker; in direct mode the whole reply if it has none."""
    answer = extract_answer(text)
    if answer is None and mode.removesuffix("_blind") == "direct":
        answer = text.strip() or None
    return answer


def blank_like(image):
    """A white image of ``image``'s size: what a model sees when it is not shown the picture."""
    from PIL import Image

    return Image.new("RGB", image.size, (255, 255, 255))


class GreedyEvaluator:
    """Answers examples greedily with one vLLM engine (``engine_factory(model_dir, **engine)``)."""

    def __init__(self, model_dir: str, config: GreedyEvalConfig, engine: dict[str, Any] | None = None,
                 engine_factory: Callable[..., LLM] | None = None) -> None:
        from reasoner.models import load_processor, make_vllm_engine

        self.config = config
        self.processor = load_processor(model_dir)
        self.llm = (engine_factory or make_vllm_engine)(model_dir, **(engine or {}))

    def answer(self, examples: Sequence[dict], mode: str, blind: bool = False) -> list[dict]:
        """One row per example: id, source, steps, mode, text, answer, score, correct, num_tokens.
        ``blind``: each image replaced by a white one of its size (``mode`` gets ``_blind``)."""
        return self._generate(examples, [(mode, blind)])

    def evaluate(self, examples: Sequence[dict]) -> list[dict]:
        """:meth:`answer` in every configured mode (and blind, if configured), in one ``generate`` call."""
        blind = (False, True) if self.config.blind else (False,)
        return self._generate(examples, [(mode, b) for b in blind for mode in self.config.modes])

    def _generate(self, examples: Sequence[dict], runs: Sequence[tuple[str, bool]]) -> list[dict]:
        """Rows of every (mode, blind) run over ``examples``, run by run; each image decoded once."""
        from vllm import SamplingParams

        from reasoner.models.inputs import load_image
        from reasoner.models.inputs import generation_input

        if not examples:
            return []
        images = [load_image(ex["image"]) for ex in examples]
        blanks = [blank_like(image) for image in images] if any(b for _, b in runs) else []
        jobs = [(ex, mode, blind, blanks[i] if blind else images[i])
                for mode, blind in runs for i, ex in enumerate(examples)]
        inputs = [generation_input(self.processor, build_prompt(ex["question"], ex.get("choices"), mode), image)
                  for ex, mode, _, image in jobs]
        outputs = self.llm.generate(inputs, SamplingParams(temperature=0.0, max_tokens=self.config.max_tokens),
                                    use_tqdm=False)
        rows = []
        for (ex, mode, blind, _), out in zip(jobs, outputs):
            completion = out.outputs[0]
            answer = prediction_of(completion.text, mode)
            value = score(answer, list(ex["answers"]), ex["metric"], ex.get("choices"))
            rows.append({"id": ex["id"], "source": ex["source"], "steps": reasoning_steps(ex),
                         "mode": f"{mode}_blind" if blind else mode,
                         "text": completion.text, "answer": answer, "score": float(value),
                         "correct": is_correct(value, ex["metric"], self.config.correct_threshold),
                         "num_tokens": len(completion.token_ids)})
        return rows

    def image_gain(self, examples: Sequence[dict]) -> list[dict]:
        """One row per example with a rationale: id, source, tokens, logp (the rationale's summed
        log-prob after the CoT prompt and the image), logp_blank (with a blank image), gain."""
        from reasoner.models import ScoreRequest
        from reasoner.models.inputs import load_image
        from reasoner.models.vllm_backend import VLLMScorer

        examples = [ex for ex in examples if ex.get("rationale")]
        if not examples:
            return []
        images = [load_image(ex["image"]) for ex in examples]
        prompts = [build_prompt(ex["question"], ex.get("choices"), "cot") for ex in examples]
        requests = [ScoreRequest(image, prompt, ex["rationale"]) for ex, prompt, image in zip(examples, prompts, images)]
        requests += [ScoreRequest(blank_like(image), prompt, ex["rationale"])
                     for ex, prompt, image in zip(examples, prompts, images)]
        scored = VLLMScorer(self.llm, self.processor).score(requests)
        real, blank = scored[:len(examples)], scored[len(examples):]
        return [{"id": ex["id"], "source": ex["source"], "tokens": len(r), "logp": r.total, "logp_blank": b.total,
                 "gain": r.total - b.total} for ex, r, b in zip(examples, real, blank)]

    def close(self) -> None:
        from reasoner.models import shutdown_vllm_engine

        shutdown_vllm_engine(self.llm)


def _accuracy(rows: Sequence[dict]) -> dict[str, float | int]:
    return {"accuracy": sum(bool(r["correct"]) for r in rows) / len(rows), "questions": len(rows),
            "answered": sum(r["answer"] is not None for r in rows) / len(rows)}


def steps_bucket(steps: int) -> str:
    """"1", "2", "3" or "4+": few questions need more than four steps."""
    return str(steps) if steps < MAX_STEPS_BUCKET else f"{MAX_STEPS_BUCKET}+"


def summarise(rows: Sequence[dict]) -> dict[str, Any]:
    """Accuracy (and the share of replies with an answer) per mode: overall, per source, per number
    of ground-truth steps (:func:`steps_bucket`)."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups["overall", "all", r["mode"]].append(r)
        groups["by_source", r["source"], r["mode"]].append(r)
        if r.get("steps") is not None:
            groups["by_steps", steps_bucket(r["steps"]), r["mode"]].append(r)
    summary: dict[str, Any] = {"overall": {}, "by_source": {}, "by_steps": {}}
    for (kind, key, mode), members in sorted(groups.items()):
        target = summary[kind] if kind == "overall" else summary[kind].setdefault(key, {})
        target[mode] = _accuracy(members)
    return summary


def summarise_gain(rows: Sequence[dict]) -> dict[str, Any]:
    """Mean image gain (nats a rationale) and questions, overall and per source ({} without rows)."""
    if not rows:
        return {}
    groups: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        groups[r["source"]].append(r["gain"])

    def mean(values: Sequence[float]) -> dict[str, float | int]:
        return {"gain": sum(values) / len(values), "questions": len(values)}

    return {"overall": mean([r["gain"] for r in rows]),
            "by_source": {source: mean(values) for source, values in sorted(groups.items())}}


def format_gain(gain: dict[str, Any]) -> str:
    """One line: the mean image gain overall and per source."""
    if not gain:
        return "image gain: no question with a rationale"
    parts = [f"{source} {v['gain']:+.3f}" for source, v in gain["by_source"].items()]
    return (f"image gain (nats of log-prob the image adds to the reference rationale): overall "
            f"{gain['overall']['gain']:+.3f}; " + ", ".join(parts))


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of :func:`summarise`'s accuracies: one row per source, steps and overall."""
    order = ("direct", "cot", "direct_blind", "cot_blind")  # as the paper's tables, then the blind baseline
    modes = sorted(summary["overall"], key=lambda m: order.index(m) if m in order else len(order))
    header = f"{'':<24}{'questions':>10}" + "".join(f"{m + ' acc':>18}" for m in modes)
    lines = [header]

    def line(label: str, by_mode: dict[str, dict]) -> str:
        n = max(v["questions"] for v in by_mode.values())
        cells = "".join(f"{by_mode[m]['accuracy']:>18.3f}" if m in by_mode else f"{'-':>18}" for m in modes)
        return f"{label:<24}{n:>10}{cells}"

    for source, by_mode in summary["by_source"].items():
        lines.append(line(source, by_mode))
    for steps, by_mode in sorted(summary["by_steps"].items(), key=lambda kv: int(kv[0].rstrip("+"))):
        lines.append(line(f"{steps} step{'s' if steps != '1' else ''}", by_mode))
    lines.append(line("overall", summary["overall"]))
    return "\n".join(lines)
