"""Stage (C2), score + pair: preference pairs from sampled candidates (Zhang et al. 2024, 3.3, 5).

The SFT model samples 32 candidates per question; each is scored against the short answer
(``reasoner.answers``). Section 3.3: keep questions whose accuracy (fraction of correct
candidates) lies in [0.25, 0.85], then randomly pair positive (correct) and negative (incorrect)
responses, up to three pairs per question. Section 5: responses are truncated to 90 tokens for
DPO training. Everything here is pure: one question's rows in, its pair rows out.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from reasoner.options import check, option

Row = Mapping[str, Any]
TRUNCATE_MODES = ("head", "keep_answer")
DROP_BUCKETS = ("too_easy", "too_hard", "no_distinct_pair", "rare_correct", "no_candidates")
NO_CANDIDATES = "no candidates"
NO_DISTINCT_PAIR = "no distinct correct/incorrect texts"
RARE_CORRECT = "no correct text sampled often enough"
HISTOGRAM_BINS = 10
# The marker ``reasoner.answers.extract_answer`` reads (tolerant of spacing and case).
_ANSWER_MARKER = re.compile(r"###\s*answer\s*:", re.IGNORECASE)
_LINE_REST = re.compile(r"\S[^\n]*")


class Tokenizer(Protocol):
    """What truncation needs of a tokenizer; a Hugging Face tokenizer qualifies."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


@dataclass
class PairConfig:
    """How stage (C2) turns candidates into DPO pairs (section 3.3; truncation: section 5).

    Truncation: the paper found cutting "the responses up to 90 tokens" helpful for DPO; with
    the same budget for chosen and rejected, a long response can no longer win or lose on length
    alone. ``truncate_mode`` defaults to ``"head"``, a plain cut, as the paper describes: chosen
    and rejected stay exact prefixes of what the SFT model sampled, so their policy and
    reference log-probs are those of on-policy text. It may cut the ``### Answer:`` line; the
    pair then contrasts the opening reasoning of a correct and of a wrong sample. ``"keep_answer"``
    cuts the rationale so that it plus the answer line fit, so every pair still contrasts the
    final answers, at the price of a spliced text the model never produced (DPO then rewards
    jumping from half a rationale to the answer). Both modes keep texts that fit unchanged.

    ``min_chosen_samples``: outcome labels call a rationale right when its final answer is, so
    a weak model's lucky guesses (a misread value, an answer that happens to match) become
    chosen texts. Such a rationale is rarely sampled twice, while one that reads the image
    right recurs; with 2, only correct texts sampled at least twice may be chosen (a form of
    self-consistency, Wang et al. 2023). The default 1 is the paper's: any correct text.
    """

    min_accuracy: float = option(0.25, "keep questions whose accuracy is >= this (inclusive)")
    max_accuracy: float = option(0.85, "keep questions whose accuracy is <= this (inclusive)")
    pairs_per_question: int = option(3, "at most this many (chosen, rejected) pairs per question")
    max_response_tokens: int | None = option(
        90, "cut chosen and rejected to this many tokens of the policy's tokenizer; null: no cut")
    seed: int = option(0, "pair sampling seed; a question's RNG derives from (seed, question id)")
    truncate_mode: Literal["head", "keep_answer"] = option(
        "head", "'head': keep the first tokens; 'keep_answer': cut the rationale, keep the "
        "'### Answer:' line")
    min_chosen_samples: int = option(
        1, "a correct text must be sampled at least this many times to be chosen; 2 keeps "
        "lucky guesses out of the chosen side")

    def __post_init__(self) -> None:
        for name in ("min_accuracy", "max_accuracy"):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and 0.0 <= value <= 1.0, name, value,
                  "give an accuracy in [0, 1]")
        check(self.min_accuracy <= self.max_accuracy, "min_accuracy", self.min_accuracy,
              f"it must be <= max_accuracy={self.max_accuracy!r}; swap or lower it")
        check(isinstance(self.pairs_per_question, int) and self.pairs_per_question >= 1,
              "pairs_per_question", self.pairs_per_question, "give a positive integer")
        check(self.max_response_tokens is None or (isinstance(self.max_response_tokens, int)
              and self.max_response_tokens >= 1), "max_response_tokens", self.max_response_tokens,
              "give a positive number of tokens, or null for no truncation")
        check(isinstance(self.seed, int), "seed", self.seed, "give an integer")
        check(self.truncate_mode in TRUNCATE_MODES, "truncate_mode", self.truncate_mode,
              f"use one of {', '.join(TRUNCATE_MODES)}")
        check(isinstance(self.min_chosen_samples, int) and self.min_chosen_samples >= 1,
              "min_chosen_samples", self.min_chosen_samples,
              "give a positive integer (1: any correct text may be chosen)")


def question_accuracy(candidates: Sequence[Row]) -> float:
    """The fraction of a question's candidates that are ``correct`` (section 3.3), in [0, 1]."""
    if not candidates:
        raise ValueError("no candidates: accuracy is undefined; skip the question instead")
    return sum(bool(c["correct"]) for c in candidates) / len(candidates)


def question_rng(seed: int, question_id: str) -> random.Random:
    """A RNG that depends only on (seed, question id), not on the order questions are seen."""
    digest = hashlib.sha256(f"{seed}\0{question_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _unique_by_label(candidates: Sequence[Row],
                     min_correct_samples: int = 1) -> tuple[list[Row], list[Row]]:
    """Correct and incorrect candidates, one per whitespace-normalised text, in canonical order.

    The representative of a text is its lowest ``sample_index``. A text seen both correct and
    incorrect (two samples cut to the same prefix) is ambiguous and kept on neither side; a
    blank text (an empty sample) on neither side either. A correct text sampled fewer than
    ``min_correct_samples`` times is left out.
    """
    labels: dict[str, set[bool]] = {}
    first: dict[str, Row] = {}
    count: Counter[str] = Counter()
    for row in sorted(candidates, key=lambda r: (r["sample_index"], r["text"])):
        key = _normalise(row["text"])
        if not key:
            continue
        labels.setdefault(key, set()).add(bool(row["correct"]))
        first.setdefault(key, row)
        count[key] += 1
    unique = [k for k in first if len(labels[k]) == 1]
    return ([first[k] for k in unique if True in labels[k] and count[k] >= min_correct_samples],
            [first[k] for k in unique if False in labels[k]])


def select_pairs(candidates: Sequence[Row], config: PairConfig,
                 rng_or_seed: random.Random | int | None = None) -> list[tuple[Row, Row]]:
    """Up to ``pairs_per_question`` random (correct, incorrect) pairs of one question (3.3).

    None (``[]``) if the accuracy is outside [min_accuracy, max_accuracy]. Identical texts (after
    whitespace normalisation) are de-duplicated first and never paired; a correct text sampled
    fewer than ``min_chosen_samples`` times is never chosen; no pair repeats. Pairs
    prefer fresh candidates: each is greedily the next (correct, incorrect) combination, in a
    random order, whose two members have been used least, so 3 pairs use 3 different chosen and
    3 different rejected texts whenever there are that many. ``rng_or_seed``: a RNG to draw from,
    or a seed replacing ``config.seed``; by default ``question_rng(config.seed, id)``. The
    result does not depend on the order of ``candidates``.
    """
    if not candidates:
        return []
    ids = {c["id"] for c in candidates}
    if len(ids) != 1:
        raise ValueError(f"candidates of one question expected, got ids {sorted(ids)!r}; "
                         "group them by id")
    if not config.min_accuracy <= question_accuracy(candidates) <= config.max_accuracy:
        return []
    if isinstance(rng_or_seed, random.Random):
        rng = rng_or_seed
    else:
        rng = question_rng(config.seed if rng_or_seed is None else rng_or_seed, ids.pop())
    correct, incorrect = _unique_by_label(candidates, config.min_chosen_samples)
    rng.shuffle(correct)
    rng.shuffle(incorrect)
    combos = [(i, j) for i in range(len(correct)) for j in range(len(incorrect))]
    used_c, used_w = [0] * len(correct), [0] * len(incorrect)
    pairs: list[tuple[Row, Row]] = []
    while combos and len(pairs) < config.pairs_per_question:
        best = min(combos, key=lambda ij: (max(used_c[ij[0]], used_w[ij[1]]),
                                           used_c[ij[0]] + used_w[ij[1]]))
        combos.remove(best)
        used_c[best[0]] += 1
        used_w[best[1]] += 1
        pairs.append((correct[best[0]], incorrect[best[1]]))
    return pairs


def _cut(tokenizer: Tokenizer, ids: list[int], n: int) -> str:
    """The first ``n`` tokens, decoded; trailing whitespace and half characters dropped."""
    return tokenizer.decode(list(ids[:n])).rstrip().rstrip("\ufffd").rstrip()


def _head(tokenizer: Tokenizer, ids: list[int], max_tokens: int) -> str:
    n = max_tokens
    text = _cut(tokenizer, ids, n)
    while not text and n < len(ids):  # only a tokenizer whose first tokens decode to blanks
        n += 1
        text = _cut(tokenizer, ids, n)
    return text


def _keep_answer(text: str, tokenizer: Tokenizer, max_tokens: int) -> str | None:
    """Rationale cut at a token boundary, then the answer line, in ``max_tokens``; None if the
    text has no answer marker or the answer line leaves no room for a rationale token."""
    markers = list(_ANSWER_MARKER.finditer(text))
    if not markers:
        return None
    start = markers[-1].start()
    line_end = _LINE_REST.search(text, markers[-1].end())
    answer = text[start:line_end.end() if line_end else markers[-1].end()].strip()
    rationale_ids = tokenizer.encode(text[:start].rstrip(), add_special_tokens=False)
    answer_len = len(tokenizer.encode(answer, add_special_tokens=False))
    n = min(len(rationale_ids), max_tokens - answer_len)
    while n >= 1:  # token counts do not add exactly across the join: verify, shrink if needed
        rationale = _cut(tokenizer, rationale_ids, n)
        candidate = f"{rationale}\n{answer}"
        if rationale and len(tokenizer.encode(candidate, add_special_tokens=False)) <= max_tokens:
            return candidate
        n -= 1
    return None


def truncate_response(text: str, tokenizer: Tokenizer, max_tokens: int, mode: str = "head") -> str:
    """``text`` cut to at most ``max_tokens`` tokens at token boundaries (section 5).

    A text that fits is returned unchanged. ``"head"`` keeps the first tokens of the stripped
    text. ``"keep_answer"`` keeps the last ``### Answer:`` line whole and cuts the rationale
    before it so both fit (joined by a newline); without a marker, or if the answer line leaves
    no room for a rationale token, it falls back to ``"head"``. Never empty: a blank ``text``
    raises ValueError, and a head cut that decodes blank takes more tokens until it is not.
    """
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens!r} is invalid: give a positive number of tokens")
    if mode not in TRUNCATE_MODES:
        raise ValueError(f"mode={mode!r} is invalid: use one of {', '.join(TRUNCATE_MODES)}")
    if not text.strip():
        raise ValueError(f"cannot truncate the blank response {text!r}; drop the candidate")
    if len(tokenizer.encode(text, add_special_tokens=False)) <= max_tokens:
        return text
    body = text.strip()
    if mode == "keep_answer" and (kept := _keep_answer(body, tokenizer, max_tokens)) is not None:
        return kept
    return _head(tokenizer, tokenizer.encode(body, add_special_tokens=False), max_tokens)


def build_pairs(example: Row, candidates: Sequence[Row], config: PairConfig,
                tokenizer: Tokenizer | None = None) -> tuple[list[dict], str | None]:
    """The pair rows of one question (``id, pair_index, prompt, image, chosen, rejected,
    accuracy``) and None, or ``[]`` and why the question was dropped.

    Candidates are truncated first, so texts that become identical are de-duplicated like any
    others; blank texts count towards the accuracy but are never paired. ``tokenizer`` (the
    policy's) is required unless ``max_response_tokens`` is None. The candidates must share the
    example's id and one prompt. ``example["image"]`` is copied into the rows as it is (None lets
    a caller read the images of only the questions that make pairs, and add them after).
    """
    if not candidates:
        return [], NO_CANDIDATES
    question_id = example["id"]
    if any(c["id"] != question_id for c in candidates):
        raise ValueError(f"candidates of {question_id!r} include other ids; group candidates by id")
    prompts = {c["prompt"] for c in candidates}
    if len(prompts) != 1:
        raise ValueError(f"candidates of {question_id!r} have {len(prompts)} prompts; pair one "
                         "prompt's candidates (e.g. only the CoT ones)")
    if config.max_response_tokens is not None and tokenizer is None:
        raise ValueError("max_response_tokens is set but no tokenizer was given; pass the "
                         "policy's tokenizer or set max_response_tokens=None")
    accuracy = question_accuracy(candidates)
    if accuracy < config.min_accuracy:
        return [], f"accuracy {accuracy:.2f} below {config.min_accuracy:.2f}"
    if accuracy > config.max_accuracy:
        return [], f"accuracy {accuracy:.2f} above {config.max_accuracy:.2f}"
    if config.max_response_tokens is not None:  # blank texts count for accuracy, never pair
        budget, mode = config.max_response_tokens, config.truncate_mode
        candidates = [{**c, "text": truncate_response(c["text"], tokenizer, budget, mode)}
                      for c in candidates if c["text"].strip()]
    pairs = select_pairs(candidates, config)
    if not pairs:
        correct, incorrect = _unique_by_label(candidates)
        if correct and incorrect:  # pairs existed, but no correct text was sampled often enough
            return [], f"{RARE_CORRECT} (>= {config.min_chosen_samples} times)"
        return [], NO_DISTINCT_PAIR
    return [{"id": question_id, "pair_index": i, "prompt": chosen["prompt"],
             "image": example["image"], "chosen": chosen["text"], "rejected": rejected["text"],
             "accuracy": accuracy}
            for i, (chosen, rejected) in enumerate(pairs)], None


def drop_bucket(reason: str) -> str:
    """The stats bucket of a ``build_pairs`` drop reason: one of ``DROP_BUCKETS``."""
    if reason == NO_CANDIDATES:
        return "no_candidates"
    if reason == NO_DISTINCT_PAIR:
        return "no_distinct_pair"
    if reason.startswith(RARE_CORRECT):
        return "rare_correct"
    if reason.startswith("accuracy ") and " above " in reason:
        return "too_easy"
    if reason.startswith("accuracy ") and " below " in reason:
        return "too_hard"
    raise ValueError(f"unknown drop reason {reason!r}; expected one from build_pairs")


def accuracy_bin(accuracy: float) -> int:
    """The histogram bin of an accuracy: 10 bins of width 0.1 over [0, 1], 1.0 in the last.

    A 1e-9 slack absorbs float error (0.3 lands in bin 3), far below any k/n gap.
    """
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy={accuracy!r} is outside [0, 1]")
    return min(int(accuracy * HISTOGRAM_BINS + 1e-9), HISTOGRAM_BINS - 1)


@dataclass
class PairStats:
    """Counts of stage (C2): per Ray Data batch, then ``merge``-d on the driver."""

    questions: int = 0
    kept: int = 0
    pairs: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_BUCKETS, 0))
    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BINS)

    def __post_init__(self) -> None:
        if len(self.histogram) != HISTOGRAM_BINS or set(self.dropped) != set(DROP_BUCKETS):
            raise ValueError(f"histogram needs {HISTOGRAM_BINS} bins and dropped the buckets "
                             f"{DROP_BUCKETS}; got {self.histogram!r}, {sorted(self.dropped)!r}")
        self.dropped, self.histogram = dict(self.dropped), list(self.histogram)

    def add(self, accuracy: float | None, num_pairs: int, reason: str | None = None) -> None:
        """Count one question: its accuracy (None without candidates), pairs made, drop reason."""
        self.questions += 1
        if accuracy is not None:
            self.histogram[accuracy_bin(accuracy)] += 1
        if reason is None:
            self.kept += 1
            self.pairs += num_pairs
        else:
            self.dropped[drop_bucket(reason)] += 1

    def merge(self, other: PairStats) -> PairStats:
        """The sum of two accumulators (neither is changed)."""
        return PairStats(
            self.questions + other.questions, self.kept + other.kept, self.pairs + other.pairs,
            {b: self.dropped[b] + other.dropped[b] for b in DROP_BUCKETS},
            [a + b for a, b in zip(self.histogram, other.histogram)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts; ``histogram[i]`` counts accuracies in [i/10, (i+1)/10)."""
        return {"questions": self.questions, "kept": self.kept, "pairs": self.pairs,
                "dropped": dict(self.dropped), "histogram": list(self.histogram),
                "histogram_edges": [i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PairStats:
        """The inverse of ``to_dict`` (for stats carried through Ray Data rows)."""
        keys = ("questions", "kept", "pairs", "dropped", "histogram")
        return cls(*(data[k] for k in keys))
