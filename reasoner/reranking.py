"""Reranking curves: each strategy's expected accuracy over random N-subsets of a candidate pool.

Zhang et al. 2024 (``seeds/000_*.txt``), section 5.2 and Figures 6-7, plot accuracy against the
number N of candidates reranked: self-consistency (``majority``), the DPO verifier's best-of-N
and weighted vote. The evaluation stage samples one pool of M (32) candidates a question, scores
each once, and reads every point of every curve off that pool (DESIGN.md, the ``eval`` artifact):
a point is the EXPECTATION, over uniformly random N-subsets of the pool, of "the strategy's pick is
correct", per question, then averaged; comparisons carry paired bootstrap intervals over questions.

- ``single`` (no reranking), ``oracle`` (any correct member), ``best_of_n`` (verifier rewards) and
  ``control`` (the SFT model's mean log-likelihood, DESIGN.md "Verifier") are exact closed forms.
- ``majority`` and ``weighted_vote`` at N == M use ``reasoner.verify`` on the pool itself; where the
  ordered N-subsets number at most ``EXACT_ORDERED`` (always at N = 1; N = 2 of 32) they are the
  exact mean over all of them; otherwise Monte Carlo means over ``draws`` random ordered subsets
  (the order breaks ties between groups seen first). The per-draw picks are computed with numpy,
  equal to what ``reasoner.verify.majority_vote`` / ``weighted_vote`` pick on the same subsets (tested), so each
  strategy keeps one definition (STYLE.md 6, 15). Monte Carlo standard error: a sampled point is
  the mean of ``draws`` Bernoulli outcomes, so its SE is at most ``0.5 / sqrt(draws)`` per question
  (0.031 at 256) and about ``1 / sqrt(questions)`` of that averaged over questions (0.001 at 1,000).
  Subsets depend on (seed, N, M) only: every question and both sampled strategies share them, which
  is harmless because a pool's order is its sampling order (i.i.d. candidates), and makes the
  majority/weighted comparison paired within a question.

Pure functions of saved scores (STYLE.md 16): a report can recompute every curve without an engine.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist, stdev

import numpy as np

from reasoner.verify import (
    _REL_TOL,
    _answered,
    _check,
    majority_vote,
    vote_key,
    weighted_vote,
)

EXACT_ORDERED = 4096
"""Up to this many ordered N-subsets, ``majority`` and ``weighted_vote`` are enumerated (exact)."""
CURVE_STRATEGIES = ("single", "majority", "best_of_n", "weighted_vote", "control", "oracle")


@dataclass(frozen=True)
class Pool:
    """One question's M candidates, in sampling order; every sequence has length M."""

    correct: Sequence[bool]  # reasoner.answers.is_correct of each candidate's score
    answers: Sequence[str | None]  # extracted answers (None or blank: no answer)
    rewards: Sequence[float] | None  # the DPO verifier's sequence rewards (None: not scored)
    control: Sequence[float] | None  # the control verifier's scores (mean token log-likelihood)
    metric: str = "exact"  # how votes group answers (reasoner.verify.vote_key)
    choices: list[str] | None = None

    def __post_init__(self) -> None:
        _check(self.answers, None)  # a non-empty sequence of str | None
        m = len(self.answers)
        if isinstance(self.correct, str | bytes) or len(self.correct) != m:
            raise ValueError(f"correct must hold one bool per candidate ({m}): {self.correct!r}")
        for i, flag in enumerate(self.correct):
            if not isinstance(flag, bool | np.bool_):
                raise TypeError(f"correct[{i}] is {flag!r}; give a bool (answers.is_correct)")
        _check(self.answers, self.rewards)
        _check(self.answers, self.control)
        vote_key("", self.metric, self.choices)  # an unknown metric fails here, not mid-curve


class _Prepared:
    """A pool as arrays, computed once and reused for every (strategy, n)."""

    def __init__(self, pool: Pool) -> None:
        self.pool, self.m = pool, len(pool.answers)
        self.correct = np.array([bool(c) for c in pool.correct])
        keys: dict[Hashable, int] = {}  # vote groups in the pool's order; -1: no answer
        self.gid = np.full(self.m, -1)
        for i in _answered(pool.answers):
            key = vote_key(pool.answers[i], pool.metric, pool.choices)
            self.gid[i] = keys.setdefault(key, len(keys))
        self.groups = len(keys)
        self.rewards = None if pool.rewards is None else np.array(pool.rewards, dtype=float)
        self._slots: dict[str, list[int]] = {}

    def slots(self, strategy: str) -> list[int]:
        """For each correct candidate i, how many others may share a subset with i as the pick.

        Eligibility (DESIGN.md "Verifier"): an answered i is the pick iff no answered member beats
        it (higher score, or equal score and lower index); an unanswered i iff no member is
        answered and no unanswered member beats it. So P(i is the pick) = C(slots_i, n-1) / C(M, n).
        """
        if strategy not in self._slots:
            scores = self.pool.rewards if strategy == "best_of_n" else self.pool.control
            answered = _answered(self.pool.answers)
            unanswered = sorted(set(range(self.m)) - set(answered))
            slots = []  # answered i: M - 1 - (answered beating i); unanswered: U - 1 - (beating)
            for group, size in ((answered, self.m), (unanswered, len(unanswered))):
                for rank, i in enumerate(sorted(group, key=lambda i: (-float(scores[i]), i))):
                    if self.correct[i]:
                        slots.append(size - 1 - rank)
            self._slots[strategy] = slots
        return self._slots[strategy]


@lru_cache(maxsize=256)
def _all_subsets(m: int, n: int) -> np.ndarray:
    """Every ordered n-subset of range(m), [perm(m, n), n]: the exact expectation's (always at n = 1)."""
    subsets = np.array(list(itertools.permutations(range(m), n)), dtype=np.int64).reshape(-1, n)
    subsets.flags.writeable = False
    return subsets


@lru_cache(maxsize=256)
def _subsets(m: int, n: int, draws: int, seed: int) -> np.ndarray:
    """``draws`` uniformly random ordered n-subsets of range(m), [draws, n]; seed mixed with n."""
    rng = np.random.default_rng([seed, n])
    subsets = rng.permuted(np.tile(np.arange(m), (draws, 1)), axis=1)[:, :n].copy()
    subsets.flags.writeable = False
    return subsets


def _near(values: np.ndarray, top: np.ndarray) -> np.ndarray:
    """reasoner.verify's tie rule, elementwise: equal, or within a relative ``_REL_TOL``."""
    with np.errstate(invalid="ignore"):
        close = np.abs(values - top) <= _REL_TOL * np.maximum(np.abs(values), np.abs(top))
    return (values == top) | close


def _sampled_picks(prep: _Prepared, strategy: str, subsets: np.ndarray) -> np.ndarray:
    """The candidate each subset's ``majority_vote`` (no rewards) / ``weighted_vote`` picks.

    Vectorised reasoner.verify on the subsets in their order: groups by vote key, the largest
    count / softmax weight wins, ties to the larger reward sum, then to the group seen first; the
    pick is the winner's first member (majority) or its highest-reward member, earliest on ties.
    ``subsets`` is [draws, n] indices into the pool; returns [draws] indices.
    """
    draws, n = subsets.shape
    gid = prep.gid[subsets]
    rows = np.arange(draws)
    onehot = gid[:, :, None] == np.arange(prep.groups)  # [draws, n, groups]
    counts = onehot.sum(axis=1)
    first = np.where(counts > 0, onehot.argmax(axis=1), n)  # first position of each group
    answered = gid >= 0
    none_answered = ~answered.any(axis=1)
    if strategy == "majority":
        if prep.groups == 0:
            return subsets[:, 0]
        winner = np.argmax(counts * (n + 1) - first, axis=1)  # most votes, then seen first
        position = np.where(none_answered, 0, first[rows, winner])
        return subsets[rows, position]
    r = prep.rewards[subsets]
    masked = np.where(answered, r, -np.inf)
    top = masked.max(axis=1)
    if np.any(~none_answered & (top == -np.inf)):
        raise ValueError(
            "weighted_vote: a subset's answered candidates all have reward -inf; "
            "softmax is undefined (as in reasoner.verify.softmax)"
        )
    safe_top = np.where(np.isfinite(top), top, 0.0)[:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.where(answered, np.exp(masked - safe_top), 0.0)
    weights = e / np.maximum(e.sum(axis=1, keepdims=True), np.finfo(float).tiny)
    weight = np.where(onehot, weights[:, :, None], 0.0).sum(axis=1)
    reward_sum = np.where(onehot, r[:, :, None], 0.0).sum(axis=1)
    leaders = counts > 0
    for field in (weight, reward_sum):
        best = np.where(leaders, field, -np.inf).max(axis=1, keepdims=True, initial=-np.inf)
        leaders = leaders & _near(field, best)
    winner = np.where(leaders, first, n + 1).argmin(axis=1) if prep.groups else rows * 0
    member = none_answered[:, None] | (gid == winner[:, None])  # no answer: every member
    best = np.where(member, r, -np.inf).max(axis=1, keepdims=True)
    position = np.argmax(member & (r == best), axis=1)
    return subsets[rows, position]


def _expected(prep: _Prepared, strategy: str, n: int, draws: int, seed: int) -> float:
    pool, m = prep.pool, prep.m
    if strategy not in CURVE_STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(CURVE_STRATEGIES)}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= m:
        raise ValueError(f"n is {n!r}; give an int in [1, {m}] (the pool's size)")
    if strategy in ("best_of_n", "weighted_vote") and pool.rewards is None:
        raise ValueError(f"strategy {strategy!r} needs the verifier's rewards; this pool has none")
    if strategy == "control" and pool.control is None:
        raise ValueError("strategy 'control' needs the control verifier's scores; pool has none")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws is {draws!r}; give an int >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed is {seed!r}; give an int >= 0")
    total = math.comb(m, n)
    if strategy == "single":
        return float(prep.correct.mean())
    if strategy == "oracle":
        return (total - math.comb(m - int(prep.correct.sum()), n)) / total
    if strategy in ("best_of_n", "control"):
        return sum(math.comb(s, n - 1) for s in prep.slots(strategy)) / total
    if n == m:  # the one subset: reasoner.verify on the pool in its order
        if strategy == "majority":
            pick = majority_vote(list(pool.answers), metric=pool.metric, choices=pool.choices)
        else:
            pick = weighted_vote(list(pool.answers), list(pool.rewards), metric=pool.metric,
                                 choices=pool.choices)
        return float(prep.correct[pick.index])
    subsets = _all_subsets(m, n) if math.perm(m, n) <= EXACT_ORDERED else _subsets(m, n, draws, seed)
    picks = _sampled_picks(prep, strategy, subsets)
    return float(prep.correct[picks].mean())


def expected_correct(pool: Pool, strategy: str, n: int, *, draws: int = 256,
                     seed: int = 0) -> float:
    """E over uniformly random n-subsets of ``pool`` of [``strategy``'s pick is correct], in [0, 1].

    Exact for ``single`` (mean correctness), ``oracle`` (``1 - C(M-k, n) / C(M, n)``, k correct),
    ``best_of_n`` and ``control`` (sum over correct candidates of the probability each is the
    pick; eligibility and index tie-breaks as ``reasoner.verify.best_of_n``). ``majority`` and
    ``weighted_vote``: exact at ``n == M``, else the mean over ``draws`` seeded random subsets
    (standard error at most ``0.5 / sqrt(draws)``; see the module docstring). A pick is correct iff
    its candidate's ``correct`` flag is. ValueError for n outside [1, M], an unknown strategy, or a
    strategy whose scores the pool lacks.
    """
    return _expected(_Prepared(pool), strategy, n, draws, seed)


def curves(
    pools: Sequence[Pool],
    strategies: Sequence[str] = CURVE_STRATEGIES,
    ns: Sequence[int] = (1, 2, 4, 8, 16, 32),
    *,
    draws: int = 256,
    seed: int = 0,
) -> dict[str, dict[int, list[float]]]:
    """Reranking curves (Figures 6-7): strategy -> N -> per-question ``expected_correct``.

    Every pool must have the same size M (so each N means the same thing for every question); N
    larger than M is skipped for every strategy. Average a list for the curve's point; compare two
    lists with ``paired_difference``.
    """
    if not pools:
        raise ValueError("pools is empty; give at least one question's pool")
    sizes = {len(p.answers) for p in pools}
    if len(sizes) > 1:
        first = len(pools[0].answers)
        odd = next(q for q, p in enumerate(pools) if len(p.answers) != first)
        raise ValueError(
            f"pools differ in size (question 0 has {first} candidates, question {odd} "
            f"has {len(pools[odd].answers)}); curves need equal pools, so sample the same "
            "M for every question or drop the short ones"
        )
    (m,) = sizes
    for strategy in strategies:
        if strategy not in CURVE_STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; use one of {CURVE_STRATEGIES}")
    for n in ns:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"ns holds {n!r}; give ints >= 1")
    kept = [n for n in ns if n <= m]
    out: dict[str, dict[int, list[float]]] = {s: {n: [] for n in kept} for s in strategies}
    for q, pool in enumerate(pools):
        prep = _Prepared(pool)
        for strategy in strategies:
            for n in kept:
                try:
                    out[strategy][n].append(_expected(prep, strategy, n, draws, seed))
                except ValueError as e:
                    raise ValueError(f"question {q}: {e}") from e
    return out


@dataclass(frozen=True)
class Interval:
    """A mean over questions with its bootstrap interval."""

    estimate: float
    low: float
    high: float
    questions: int


def _level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise ValueError(f"level is {level!r}; give a confidence level in (0, 1), e.g. 0.95")
    return float(level)


def bootstrap_mean(values: Sequence[float], *, reps: int = 2000, seed: int = 0,
                   level: float = 0.95) -> Interval:
    """The mean of per-question ``values`` with a percentile bootstrap interval over questions.

    ``reps`` resamples of the questions with replacement (seeded); the interval is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles (numpy's linear rule) of their means.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"values must be a non-empty sequence of finite numbers, got {values!r}")
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ValueError(f"reps is {reps!r}; give an int >= 1")
    alpha = 1 - _level(level)
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // x.size)  # bounded memory: resample ~4M indices at a time
    sizes = [(min(chunk, reps - s), x.size) for s in range(0, reps, chunk)]
    means = np.concatenate([x[rng.integers(0, x.size, size=size)].mean(axis=1) for size in sizes])
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Interval(float(x.mean()), float(low), float(high), int(x.size))


def paired_difference(a: Sequence[float], b: Sequence[float], *, reps: int = 2000, seed: int = 0,
                      level: float = 0.95) -> Interval:
    """``mean(a - b)`` over questions with a paired bootstrap: each resample draws the same
    questions for both (it resamples the per-question differences). ValueError on unequal lengths.
    """
    if len(a) != len(b):
        raise ValueError(f"a has {len(a)} questions but b has {len(b)}; pair the same questions")
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return bootstrap_mean(diff, reps=reps, seed=seed, level=level)


def questions_needed(differences: Sequence[float], delta: float = 0.02, *,
                     level: float = 0.95) -> int:
    """Questions a paired comparison needs for an interval of half-width ``delta``.

    ``ceil((z * sd / delta) ** 2)`` with ``z`` the two-sided normal quantile of ``level`` and
    ``sd`` the sample standard deviation (n - 1) of the per-question paired ``differences`` (a
    pilot run's); at least 1.
    """
    values = [float(d) for d in differences]
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"differences must hold at least 2 finite numbers, got {differences!r}")
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not delta > 0:
        raise ValueError(f"delta is {delta!r}; give the interval's half-width, a number > 0")
    z = NormalDist().inv_cdf(1 - (1 - _level(level)) / 2)
    return max(1, math.ceil((z * stdev(values) / delta) ** 2))
