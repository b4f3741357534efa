"""The verifier's math and the reranking strategies: pure functions of saved scores.

Zhang et al. 2024, "Improve Vision Language Model Chain-of-thought Reasoning" (text in
``seeds/000_*.txt``), use the DPO model against its reference (the SFT model) as a verifier
(section 5.2) whose token rewards show credit assignment (section 5.4, figure 8):

- ``token_rewards``: ``r_t = beta * (log pi_dpo(y_t|x,V,y_<t) - log pi_sft(y_t|x,V,y_<t))``, raw;
  ``sequence_reward`` sums them; ``centred`` subtracts their mean for display (figure 8).
- ``likelihood_score``: the control verifier, mean token log-prob. A model cannot verify against
  itself (its reward is 0), so a bare model or the SFT control is scored with this instead.
- ``vote_key``: how votes group answers, as the metric of ``reasoner.answers`` normalises them
  (serving, where no metric is known, uses ``exact``).
- Strategies over (answers, rewards), never over an engine, so evaluation recomputes any curve
  from saved candidates and serving calls the same code (DESIGN.md "Verifier"; STYLE.md 6, 15):
  ``best_of_n`` picks the highest reward among candidates with an answer (any candidate where none
  has one); ``majority_vote`` (self-consistency) counts answers; ``weighted_vote`` sums
  softmax-normalised rewards per answer. Votes ignore candidates with no answer (None or blank);
  ties go to the larger summed reward, then to the group seen first. ``select`` dispatches.

Rewards are real numbers, finite or ``-inf`` (the likelihood score of an empty response).
"""

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from numbers import Real

from reasoner.answers import METRICS, _exact_key, _to_float, predicted_letter, process_answer

STRATEGIES: tuple[str, ...] = ("single", "majority", "best_of_n", "weighted_vote", "control")
NEEDS_REWARDS: tuple[str, ...] = ("best_of_n", "weighted_vote")
"""The strategies that read a verifier's rewards: without a verifier they do not run."""
_REL_TOL = 1e-9  # group weights (float sums) this close count as tied


def _floats(values: Sequence[float], name: str, allow_neg_inf: bool = True) -> list[float]:
    """``values`` as floats; TypeError for a string or a non-number, ValueError for NaN/+inf."""
    if isinstance(values, str | bytes):
        raise TypeError(f"{name} must be a sequence of numbers, got the string {values!r}")
    out = []
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"{name}[{i}] is {value!r} ({type(value).__name__}); give a number")
        value = float(value)
        if math.isnan(value) or value == math.inf or (value == -math.inf and not allow_neg_inf):
            allowed = "finite or -inf" if allow_neg_inf else "finite"
            raise ValueError(f"{name}[{i}] is {value}; each value must be {allowed}")
        out.append(value)
    return out


def token_rewards(
    policy_logprobs: Sequence[float], reference_logprobs: Sequence[float], beta: float
) -> list[float]:
    """Token-level DPO rewards of one response (paper, sections 5.2 and 5.4), shape ``[T]``.

    ``r_t = beta * (policy_t - reference_t)`` for the log-probs of the same ``T`` response tokens
    under the DPO policy and its reference (SFT) model; ``beta`` is the DPO run's. Raw, not
    centred: they sum to the ``sequence_reward``. A token that is ``-inf`` under both models has
    no defined reward (ValueError).
    """
    if isinstance(beta, bool) or not isinstance(beta, Real) or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta is {beta!r}; give the DPO run's beta, a finite number > 0")
    policy = _floats(policy_logprobs, "policy_logprobs")
    reference = _floats(reference_logprobs, "reference_logprobs")
    if len(policy) != len(reference):
        raise ValueError(
            f"policy_logprobs has {len(policy)} tokens but reference_logprobs has "
            f"{len(reference)}; score the same response tokens under both models"
        )
    for t, (p, r) in enumerate(zip(policy, reference, strict=True)):
        if p == r == -math.inf:
            raise ValueError(f"token {t} is -inf under both models; its reward is undefined")
    return [float(beta) * (p - r) for p, r in zip(policy, reference, strict=True)]


def sequence_reward(rewards: Sequence[float]) -> float:
    """The response's DPO reward (paper, section 5.2): the sum of its token rewards; 0.0 if none."""
    return math.fsum(_floats(rewards, "rewards"))


def likelihood_score(logprobs: Sequence[float]) -> float:
    """The control verifier's score: mean token log-prob of the response (DESIGN.md "Verifier").

    Used where there is no distinct reference (the SFT control, a bare model), since a model's
    reward against itself is 0. An empty response scores ``-inf``, below every response.
    """
    values = _floats(logprobs, "logprobs")
    return math.fsum(values) / len(values) if values else -math.inf


def centred(rewards: Sequence[float]) -> list[float]:
    """Token rewards minus their mean, for display: the credit assignment of figure 8 (5.4)."""
    values = _floats(rewards, "rewards", allow_neg_inf=False)
    mean = math.fsum(values) / len(values) if values else 0.0
    return [v - mean for v in values]


def softmax(values: Sequence[float]) -> list[float]:
    """Numerically stable softmax (the max is subtracted first); ``-inf`` entries get 0.

    ``[]`` for ``[]``; ValueError if every entry is ``-inf`` (no mass to share).
    """
    xs = _floats(values, "values")
    if not xs:
        return []
    top = max(xs)
    if top == -math.inf:
        raise ValueError(f"values are all -inf ({xs}); softmax is undefined")
    exps = [math.exp(x - top) for x in xs]
    total = math.fsum(exps)
    return [e / total for e in exps]


def vote_key(answer: str, metric: str = "exact", choices: list[str] | None = None) -> Hashable:
    """The key under which votes group ``answer``: two answers share a vote iff keys are equal.

    As ``reasoner.answers`` normalises for ``metric``: ``exact``, its exact-match key (numbers as
    floats, so "3" == "3.0" == "$3", but not "three"; case, surrounding punctuation and articles
    ignored); ``mc``, the letter ``predicted_letter`` reads
    (``choices`` lets option text count), else the exact key; ``vqa``, ``process_answer``;
    ``relaxed``, the number as ``relaxed_correctness`` reads it ("45%" is 0.45) else the
    lower-cased stripped text (no 5% tolerance: it is not transitive); ``anls``, the lower-cased,
    whitespace-collapsed text; ``aokvqa``, as ``vqa`` (its metric normalises the same way).
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer is {answer!r} ({type(answer).__name__}); give a string")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if metric == "mc":
        letter = predicted_letter(answer, choices)
        return letter if letter is not None else _exact_key(answer)  # exact keys are lower-case
    if metric in ("vqa", "aokvqa"):
        return process_answer(answer)
    if metric == "relaxed":
        text = answer.strip()
        number = _to_float(text)
        return number if number is not None and math.isfinite(number) else text.lower()
    if metric == "anls":
        return " ".join(answer.lower().split())
    return _exact_key(answer)


@dataclass(frozen=True)
class Vote:
    """One answer group of a vote."""

    answer: str  # representative text, word for word: the member the strategy picks
    count: int  # candidates in the group
    reward_sum: float  # sum of the members' raw rewards (0.0 without rewards)
    weight: float  # count (majority) or sum of softmax-normalised rewards (weighted vote)


@dataclass(frozen=True)
class Selection:
    """A strategy's choice among the candidates of one question."""

    index: int  # the chosen candidate's index in the input
    answer: str | None  # its extracted answer, word for word (None if it has none)
    votes: dict[str, Vote] | None  # voting strategies: groups by representative; else None


def _check(answers: Sequence[str | None], rewards: Sequence[float] | None) -> list[float] | None:
    if isinstance(answers, str | bytes):
        raise TypeError(f"answers must be a sequence of answers, got the string {answers!r}")
    if len(answers) == 0:
        raise ValueError("answers is empty; give at least one candidate")
    for i, answer in enumerate(answers):
        if answer is not None and not isinstance(answer, str):
            raise TypeError(f"answers[{i}] is {answer!r}; each answer must be a string or None")
    if rewards is None:
        return None
    values = _floats(rewards, "rewards")
    if len(values) != len(answers):
        raise ValueError(
            f"answers has {len(answers)} candidates but rewards has {len(values)}; "
            "give one reward per candidate"
        )
    return values


def _answered(answers: Sequence[str | None]) -> list[int]:
    return [i for i, a in enumerate(answers) if a is not None and a.strip()]


def _best(indices: Sequence[int], rewards: Sequence[float] | None) -> int:
    """The highest-reward index (ties: the lowest), or the first without rewards."""
    return indices[0] if rewards is None else min(indices, key=lambda i: (-rewards[i], i))


def best_of_n(answers: Sequence[str | None], rewards: Sequence[float]) -> Selection:
    """Best-of-N reranking (paper, section 5.2): the highest-reward candidate with an answer.

    Among all candidates when none has an answer; ties go to the lowest index.
    """
    values = _check(answers, rewards)
    if values is None:
        raise ValueError("best_of_n needs a verifier's rewards, one per candidate")
    index = _best(_answered(answers) or range(len(answers)), values)
    return Selection(index, answers[index], None)


def _vote(
    answers: Sequence[str | None],
    rewards: list[float] | None,
    metric: str,
    choices: list[str] | None,
    weights: dict[int, float] | None,
) -> Selection:
    """Group answered candidates by ``vote_key``; the group of largest weight wins, ties (within a
    relative 1e-9) to the larger reward sum, then to the group seen first. The chosen candidate is
    the winner's member of highest reward (its first member without rewards)."""
    answered = _answered(answers)
    if not answered:
        return Selection(_best(range(len(answers)), rewards), None, {})
    groups: dict[Hashable, list[int]] = {}
    for i in answered:
        groups.setdefault(vote_key(answers[i], metric, choices), []).append(i)
    tally = []  # Vote per group, in the order first seen, with its chosen member's index
    for members in groups.values():
        index = _best(members, rewards)
        reward_sum = math.fsum(rewards[i] for i in members) if rewards is not None else 0.0
        weight = float(len(members)) if weights is None else math.fsum(weights[i] for i in members)
        tally.append((Vote(answers[index], len(members), reward_sum, weight), index))
    leaders = tally
    for field in ("weight", "reward_sum"):  # keep the groups tied for the lead, field by field
        top = max(getattr(vote, field) for vote, _ in leaders)
        leaders = [(v, i) for v, i in leaders if _near(getattr(v, field), top)]
    index = leaders[0][1]  # then the group seen first
    return Selection(index, answers[index], {vote.answer: vote for vote, _ in tally})


def _near(value: float, top: float) -> bool:
    return value == top or math.isclose(value, top, rel_tol=_REL_TOL)


def majority_vote(
    answers: Sequence[str | None],
    rewards: Sequence[float] | None = None,
    *,
    metric: str = "exact",
    choices: list[str] | None = None,
) -> Selection:
    """Majority vote, i.e. self-consistency (paper, sections 5.2-5.3): the most common answer.

    Answers group by ``vote_key(answer, metric, choices)``; candidates with no answer are ignored.
    Count ties go to the larger summed reward (rewards given), then to the group seen first. The
    chosen candidate is the winning group's highest-reward member, else its first. With no answered
    candidate: the highest-reward candidate (0 without rewards), answer None, votes ``{}``.
    """
    values = _check(answers, rewards)
    vote_key("", metric, choices)  # reject an unknown metric even when nothing is answered
    return _vote(answers, values, metric, choices, None)


def weighted_vote(
    answers: Sequence[str | None],
    rewards: Sequence[float],
    *,
    metric: str = "exact",
    choices: list[str] | None = None,
) -> Selection:
    """Weighted voting (paper, section 5.2): the answer whose candidates' softmax-normalised
    rewards sum highest.

    The softmax runs over the answered candidates' rewards only (unanswered ones are ignored);
    grouping, ties, the chosen candidate and the no-answer case are as ``majority_vote``.
    """
    values = _check(answers, rewards)
    if values is None:
        raise ValueError("weighted_vote needs a verifier's rewards, one per candidate")
    vote_key("", metric, choices)
    answered = _answered(answers)
    weights = dict(zip(answered, softmax([values[i] for i in answered]), strict=True))
    return _vote(answers, values, metric, choices, weights)


def select(
    strategy: str,
    answers: Sequence[str | None],
    rewards: Sequence[float] | None = None,
    *,
    metric: str = "exact",
    choices: list[str] | None = None,
) -> Selection:
    """Apply ``strategy`` (one of ``STRATEGIES``) to one question's candidates.

    ``single``: candidate 0 (no reranking). ``best_of_n``, ``majority``, ``weighted_vote``: as the
    functions of those names. ``control``: best-of-N over the given scores, which the caller
    computed with ``likelihood_score`` (the SFT model or a bare model cannot verify itself).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    values = _check(answers, rewards)
    vote_key("", metric, choices)
    if strategy in ("best_of_n", "weighted_vote", "control") and values is None:
        what = "likelihood scores (likelihood_score)" if strategy == "control" else "rewards"
        raise ValueError(
            f"strategy {strategy!r} needs a verifier's {what}, one per candidate; "
            "use 'single' or 'majority' without a verifier"
        )
    if strategy == "single":
        return Selection(0, answers[0], None)
    if strategy == "majority":
        return majority_vote(answers, values, metric=metric, choices=choices)
    if strategy == "weighted_vote":
        return weighted_vote(answers, values, metric=metric, choices=choices)
    return best_of_n(answers, values)
