"""Tests for reasoner.reranking: closed forms against enumeration of every subset, sampled
strategies against reasoner.verify's picks, and bootstrap numbers worked out by hand."""

import itertools
import math
import random

import numpy as np
import pytest

from reasoner.reranking import (
    CURVE_STRATEGIES,
    EXACT_ORDERED,
    Interval,
    Pool,
    _Prepared,
    _sampled_picks,
    _subsets,
    bootstrap_mean,
    curves,
    expected_correct,
    paired_difference,
    questions_needed,
)
from reasoner.verify import best_of_n, majority_vote, select, weighted_vote

NEG_INF = -math.inf

# Hand-made pools: ties in rewards, unanswered candidates (None and blank), -inf control scores,
# answers that group under vote_key ("3" == "3.0"), and a pool where nobody answered.
MIXED = Pool(
    correct=[True, False, False, True, False, True],
    answers=["3", "4", None, "3.0", " ", "4"],
    rewards=[1.0, 2.0, 5.0, 1.0, 0.5, 2.0],
    control=[-0.5, -1.0, NEG_INF, -0.5, -2.0, -0.2],
)
UNANSWERED = Pool(
    correct=[False, True, True, False, True],
    answers=[None, None, "", None, "  "],
    rewards=[0.0, 1.0, 1.0, 2.0, -1.0],
    control=[NEG_INF, -1.0, NEG_INF, -1.0, -0.1],
)
TIED = Pool(
    correct=[False, True, False, True, True],
    answers=["a", "b", "a", "b", None],
    rewards=[1.0, 1.0, 1.0, 1.0, 3.0],
    control=[0.0, 0.0, 0.0, 0.0, 0.0],
)


def _random_pool(rng: random.Random, m: int, metric: str = "exact") -> Pool:
    letters = ["a", "b", "c"] if metric == "exact" else ["A", "(B)", "C.", "b"]
    answers = [rng.choice([*letters, None]) for _ in range(m)]
    rewards = [float(rng.randint(-2, 2)) for _ in range(m)]  # small integers: many ties
    control = [rng.choice([NEG_INF, -1.0, -0.5]) if a is None else -rng.random() for a in answers]
    correct = [a is not None and a.strip(" ().").lower() == "b" for a in answers]
    return Pool(correct, answers, rewards, control, metric=metric)


RANDOM = [_random_pool(random.Random(k), m) for k, m in enumerate([5, 6, 6, 5, 6, 6])]
POOLS = [MIXED, UNANSWERED, TIED, *RANDOM]


# --- brute force: every subset ----------------------------------------------------------------


def _brute(pool: Pool, strategy: str, n: int) -> float:
    """Mean over every subset (ordered for order-dependent strategies) of the pick's flag."""
    m = len(pool.answers)
    ordered = strategy in ("single", "majority", "weighted_vote")
    subsets = list((itertools.permutations if ordered else itertools.combinations)(range(m), n))
    hits = 0
    for sub in subsets:
        answers = [pool.answers[i] for i in sub]
        if strategy == "oracle":
            hits += any(pool.correct[i] for i in sub)
            continue
        if strategy == "single":
            pick = select("single", answers)
        elif strategy == "majority":
            pick = majority_vote(answers)
        elif strategy == "weighted_vote":
            pick = weighted_vote(answers, [pool.rewards[i] for i in sub])
        else:
            scores = pool.rewards if strategy == "best_of_n" else pool.control
            pick = best_of_n(answers, [scores[i] for i in sub])
        hits += pool.correct[sub[pick.index]]
    return hits / len(subsets)


@pytest.mark.parametrize("pool", POOLS, ids=range(len(POOLS)))
@pytest.mark.parametrize("strategy", ["single", "oracle", "best_of_n", "control"])
def test_closed_forms_equal_enumeration_of_every_subset(pool: Pool, strategy: str) -> None:
    for n in range(1, len(pool.answers) + 1):
        assert expected_correct(pool, strategy, n) == pytest.approx(
            _brute(pool, strategy, n), abs=1e-12
        )


def test_closed_forms_by_hand() -> None:
    pool = Pool([True, False, False], ["x", "y", None], [1.0, 2.0, 9.0], [0.0, 0.0, 0.0])
    # best_of_n, n=2: {0,1} -> 1 (wrong); {0,2} -> 0 (right: 2 has no answer); {1,2} -> 1 -> 1/3
    assert expected_correct(pool, "best_of_n", 2) == pytest.approx(1 / 3)
    assert expected_correct(pool, "best_of_n", 3) == 0.0
    # control: all scores tie, so the lowest answered index wins: {0,1} -> 0, {0,2} -> 0, {1,2} -> 1
    assert expected_correct(pool, "control", 2) == pytest.approx(2 / 3)
    assert expected_correct(pool, "single", 2) == pytest.approx(1 / 3)
    # oracle, M=6 with 3 right, n=2: 1 - C(3,2)/C(6,2) = 1 - 3/15 = 0.8
    assert expected_correct(MIXED, "oracle", 2) == pytest.approx(0.8)
    # nobody answered: control picks the highest score, ties by index; n=1 is the mean: 3/5
    assert expected_correct(UNANSWERED, "control", 1) == pytest.approx(0.6)
    assert expected_correct(UNANSWERED, "control", 5) == 1.0  # candidate 4 (-0.1) is right


# --- sampled strategies -------------------------------------------------------------------------


@pytest.mark.parametrize("pool", POOLS, ids=range(len(POOLS)))
@pytest.mark.parametrize("strategy", ["majority", "weighted_vote"])
def test_sampled_strategies_approach_enumeration(pool: Pool, strategy: str) -> None:
    m = len(pool.answers)
    for n in range(1, m):  # SE <= 0.5 / sqrt(20000) = 0.0035; 0.02 is > 5 SE
        sampled = expected_correct(pool, strategy, n, draws=20_000, seed=3)
        assert sampled == pytest.approx(_brute(pool, strategy, n), abs=0.02)


@pytest.mark.parametrize("pool", POOLS, ids=range(len(POOLS)))
@pytest.mark.parametrize("strategy", ["majority", "weighted_vote"])
def test_voting_is_exact_where_every_ordered_subset_is_enumerated(pool: Pool, strategy: str) -> None:
    """N = 1 (and any N whose ordered subsets are few) is the exact expectation, not Monte Carlo."""
    for n in range(1, len(pool.answers)):  # n == M is the pool in its own order (test below)
        assert expected_correct(pool, strategy, n, draws=1) == pytest.approx(_brute(pool, strategy, n), abs=1e-12)
    big = Pool([i % 3 == 0 for i in range(32)], [str(i % 5) for i in range(32)], [float(i) for i in range(32)], None)
    single = expected_correct(big, "single", 1)
    assert expected_correct(big, strategy, 1, draws=1) == pytest.approx(single, abs=1e-12)  # 32 subsets of one


def _verify_picks(pool: Pool, strategy: str, subsets: np.ndarray) -> list[int]:
    picks = []
    for sub in subsets.tolist():
        answers = [pool.answers[i] for i in sub]
        kw = {"metric": pool.metric, "choices": pool.choices}
        if strategy == "majority":
            pick = majority_vote(answers, **kw)
        else:
            pick = weighted_vote(answers, [pool.rewards[i] for i in sub], **kw)
        picks.append(sub[pick.index])
    return picks


@pytest.mark.parametrize("strategy", ["majority", "weighted_vote"])
def test_vectorised_picks_equal_reasoner_verify_on_the_same_subsets(strategy: str) -> None:
    rng = random.Random(7)
    pools = [*POOLS]
    pools += [_random_pool(rng, rng.randint(2, 12)) for _ in range(40)]
    pools += [_random_pool(rng, rng.randint(2, 12), metric="mc") for _ in range(20)]
    # continuous rewards too (ties only by grouping), and softmax weights that nearly tie
    pools += [
        Pool(p.correct, p.answers, [r + rng.gauss(0, 1) for r in p.rewards], p.control)
        for p in pools[:20]
    ]
    # rewards 0, ln 2, ln 3, ln 4: softmax weights tie across groups of different reward sums
    # (one ln 2 against two 0s), and only within the relative tolerance (exp(ln 2) != 2.0)
    logs = [0.0, math.log(2), math.log(3), math.log(4)]
    pools += [
        Pool(p.correct, p.answers, [rng.choice(logs) for _ in p.rewards], p.control)
        for p in pools[:60]
    ]
    for pool in pools:
        m = len(pool.answers)
        prep = _Prepared(pool)
        for n in range(1, m):
            subsets = _subsets(m, n, 64, 11)
            picks = _sampled_picks(prep, strategy, subsets)
            assert picks.tolist() == _verify_picks(pool, strategy, subsets), (pool, n)
            expected = float(np.mean([pool.correct[i] for i in picks]))
            if math.perm(m, n) > EXACT_ORDERED:  # else every ordered subset is enumerated instead
                assert expected_correct(pool, strategy, n, draws=64, seed=11) == pytest.approx(expected)


def test_subsets_are_uniform_ordered_subsets_shared_by_both_strategies() -> None:
    subsets = _subsets(6, 3, 500, 0)
    assert subsets.shape == (500, 3)
    assert all(len(set(row)) == 3 for row in subsets.tolist())
    assert _subsets(6, 3, 500, 0) is subsets  # the same subsets for majority and weighted_vote
    assert not np.array_equal(_subsets(6, 3, 500, 1), subsets)  # the seed matters
    assert not np.array_equal(_subsets(6, 4, 500, 0)[:, :3], subsets)  # mixed with n
    first = np.bincount(subsets[:, 0], minlength=6) / 500  # each candidate leads ~1/6 of subsets
    assert np.all(np.abs(first - 1 / 6) < 0.06)


@pytest.mark.parametrize("pool", POOLS, ids=range(len(POOLS)))
def test_n_equal_m_is_exact_with_reasoner_verify(pool: Pool) -> None:
    m = len(pool.answers)
    majority = majority_vote(list(pool.answers))
    weighted = weighted_vote(list(pool.answers), list(pool.rewards))
    assert expected_correct(pool, "majority", m, draws=1) == float(pool.correct[majority.index])
    assert expected_correct(pool, "weighted_vote", m, draws=1) == float(
        pool.correct[weighted.index]
    )


def test_majority_ignores_rewards_and_weighted_vote_uses_them() -> None:
    # "a" twice (wrong) vs "b" once (right) with a far larger reward
    pool = Pool([False, False, True], ["a", "a", "b"], [0.0, 0.0, 10.0], None)
    assert expected_correct(pool, "majority", 3) == 0.0
    assert expected_correct(pool, "weighted_vote", 3) == 1.0


def test_weighted_vote_ties_go_to_the_larger_reward_sum() -> None:
    # "a" (ln 2) and "b" (0, 0) both weigh 2/4; "a" has the larger reward sum and is wrong
    pool = Pool([False, True, True], ["a", "b", "b"], [math.log(2), 0.0, 0.0], None)
    assert expected_correct(pool, "weighted_vote", 3) == 0.0
    # n=2: {a, b} -> a (2/3 against 1/3), twice; {b, b} -> b: 1/3
    assert expected_correct(pool, "weighted_vote", 2, draws=20_000) == pytest.approx(
        1 / 3, abs=0.02
    )


def test_sampled_points_are_reproducible() -> None:
    first = expected_correct(RANDOM[1], "weighted_vote", 3, seed=5)
    assert expected_correct(RANDOM[1], "weighted_vote", 3, seed=5) == first


def test_weighted_vote_with_all_answered_rewards_minus_inf_is_an_error() -> None:
    pool = Pool([True, False], ["a", "b"], [NEG_INF, NEG_INF], None)
    with pytest.raises(ValueError, match="-inf"):
        expected_correct(pool, "weighted_vote", 1)
    with pytest.raises(ValueError, match="-inf"):
        expected_correct(pool, "weighted_vote", 2)


# --- curves ---------------------------------------------------------------------------------------


def test_curves_collect_expected_correct_per_question_and_skip_large_n() -> None:
    pools = [RANDOM[1], RANDOM[2], MIXED]
    out = curves(pools, ns=(1, 2, 4, 8), draws=32, seed=2)
    assert list(out) == list(CURVE_STRATEGIES)
    for strategy, by_n in out.items():
        assert list(by_n) == [1, 2, 4]  # 8 > M = 6
        for n, values in by_n.items():
            assert values == [expected_correct(p, strategy, n, draws=32, seed=2) for p in pools]
    assert out["single"][1] == out["single"][4]  # one candidate, whatever N


def test_curves_errors() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        curves([MIXED, UNANSWERED])
    with pytest.raises(ValueError, match="empty"):
        curves([])
    with pytest.raises(ValueError, match="unknown strategy"):
        curves([MIXED], strategies=["beam"])
    with pytest.raises(ValueError, match="ns holds 0"):
        curves([MIXED], ns=(0, 1))
    bare = Pool(MIXED.correct, MIXED.answers, None, None)
    with pytest.raises(ValueError, match="question 1: strategy 'best_of_n' needs"):
        curves([MIXED, bare], strategies=["majority", "best_of_n"])
    assert curves([bare], strategies=["single", "majority", "oracle"], ns=(1, 6))["oracle"][6] == [
        1.0
    ]


def test_expected_correct_errors() -> None:
    for n in (0, 7, 2.0, True):
        with pytest.raises(ValueError, match=r"give an int in \[1, 6\]"):
            expected_correct(MIXED, "single", n)
    with pytest.raises(ValueError, match="unknown strategy"):
        expected_correct(MIXED, "beam", 1)
    bare = Pool(MIXED.correct, MIXED.answers, None, None)
    for strategy in ("best_of_n", "weighted_vote", "control"):
        with pytest.raises(ValueError, match=f"strategy '{strategy}' needs"):
            expected_correct(bare, strategy, 2)
    with pytest.raises(ValueError, match="draws"):
        expected_correct(MIXED, "majority", 2, draws=0)


def test_pool_validation() -> None:
    with pytest.raises(ValueError, match="one bool per candidate"):
        Pool([True], ["a", "b"], None, None)
    with pytest.raises(TypeError, match=r"correct\[1\]"):
        Pool([True, 1], ["a", "b"], None, None)
    with pytest.raises(ValueError, match="rewards has 1"):
        Pool([True, False], ["a", "b"], [1.0], None)
    with pytest.raises(ValueError, match="unknown metric"):
        Pool([True], ["a"], None, None, metric="bleu")
    with pytest.raises(ValueError, match="empty"):
        Pool([], [], None, None)
    Pool(np.array([True, False]), ["a", None], np.array([0.5, NEG_INF]), None)  # numpy is fine


# --- intervals ----------------------------------------------------------------------------------


def test_constant_paired_difference_has_a_zero_width_interval() -> None:
    b = [0.0, 0.5, 1.0, 0.25, 0.75]
    interval = paired_difference([x + 0.125 for x in b], b)
    assert interval.estimate == pytest.approx(0.125)
    assert interval.low == pytest.approx(0.125, abs=1e-15)
    assert interval.high == pytest.approx(0.125, abs=1e-15)
    assert interval.questions == 5


def test_bootstrap_of_two_questions_by_hand() -> None:
    # resampled means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5% and
    # 97.5% quantiles are 0 and 1
    assert bootstrap_mean([0.0, 1.0]) == Interval(0.5, 0.0, 1.0, 2)
    assert bootstrap_mean([0.3]) == Interval(0.3, 0.3, 0.3, 1)


def test_bootstrap_is_seeded_and_pairing_narrows_the_interval() -> None:
    rng = np.random.default_rng(0)
    b = rng.random(200)
    a = b + 0.05 + rng.normal(0, 0.01, 200)
    assert paired_difference(a, b, seed=4) == paired_difference(a, b, seed=4)
    assert paired_difference(a, b, seed=4) != paired_difference(a, b, seed=5)
    paired = paired_difference(a, b, reps=500)
    assert paired.low < 0.05 < paired.high
    assert paired.high - paired.low < 0.01  # the shared per-question variation cancels
    unpaired = bootstrap_mean(a, reps=500)
    assert unpaired.high - unpaired.low > 0.05
    narrow = bootstrap_mean(a, reps=500, level=0.5)
    assert unpaired.low < narrow.low < narrow.high < unpaired.high


def test_interval_errors() -> None:
    with pytest.raises(ValueError, match="2 questions but b has 3"):
        paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_mean([])
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean([1.0], level=1.0)
    with pytest.raises(ValueError, match="reps"):
        bootstrap_mean([1.0], reps=0)


def test_questions_needed_by_hand() -> None:
    # [0.1, -0.1, 0.1, -0.1]: sample variance 0.04 / 3; z = 1.959964 (z^2 = 3.841459):
    # 3.841459 * 0.013333 / 0.02^2 = 128.05 -> 129
    assert questions_needed([0.1, -0.1, 0.1, -0.1]) == 129
    # [1, 3]: sd sqrt(2); delta 1: 3.841459 * 2 = 7.68 -> 8; at 90% (z = 1.644854): 5.41 -> 6
    assert questions_needed([1.0, 3.0], 1.0) == 8
    assert questions_needed([1.0, 3.0], 1.0, level=0.9) == 6
    assert questions_needed([0.2, 0.2, 0.2]) == 1  # no spread: one question settles it
    with pytest.raises(ValueError, match="at least 2"):
        questions_needed([0.1])
    with pytest.raises(ValueError, match="delta"):
        questions_needed([0.1, 0.2], 0.0)
