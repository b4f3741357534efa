"""Tests for reasoner.verify, with expected values worked out by hand."""

import math

import pytest

from reasoner.verify import (
    STRATEGIES,
    Selection,
    Vote,
    best_of_n,
    centred,
    likelihood_score,
    majority_vote,
    select,
    sequence_reward,
    softmax,
    token_rewards,
    vote_key,
    weighted_vote,
)

LN3, LN4 = math.log(3), math.log(4)

# --- rewards and scores ------------------------------------------------------------------------


def test_token_rewards_are_beta_times_the_logprob_gap() -> None:
    # 0.1 * (-1.0 + 1.5) = 0.05; 0.1 * (-0.5 + 0.5) = 0; 0.1 * (-2.0 + 1.0) = -0.1
    rewards = token_rewards([-1.0, -0.5, -2.0], [-1.5, -0.5, -1.0], beta=0.1)
    assert rewards == pytest.approx([0.05, 0.0, -0.1])
    assert sequence_reward(rewards) == pytest.approx(-0.05)
    assert token_rewards([], [], beta=0.5) == []


def test_a_model_against_itself_has_zero_reward() -> None:
    logprobs = [-0.2, -1.3, -0.7]
    assert sequence_reward(token_rewards(logprobs, logprobs, beta=0.1)) == 0.0


@pytest.mark.parametrize("beta", [0.0, -0.1, math.inf, math.nan])
def test_token_rewards_reject_a_bad_beta(beta: float) -> None:
    with pytest.raises(ValueError, match="beta"):
        token_rewards([-1.0], [-1.0], beta=beta)


def test_token_rewards_name_both_lengths() -> None:
    with pytest.raises(ValueError, match="has 3 tokens but reference_logprobs has 2"):
        token_rewards([-1.0, -1.0, -1.0], [-1.0, -1.0], beta=0.1)


def test_token_rewards_reject_nan_and_undefined_tokens() -> None:
    with pytest.raises(ValueError, match=r"reference_logprobs\[1\] is nan"):
        token_rewards([-1.0, -1.0], [-1.0, math.nan], beta=0.1)
    with pytest.raises(ValueError, match="token 0 is -inf under both models"):
        token_rewards([-math.inf], [-math.inf], beta=0.1)
    with pytest.raises(TypeError, match="string"):
        token_rewards("abc", "abc", beta=0.1)


def test_sequence_reward_of_nothing_is_zero() -> None:
    assert sequence_reward([]) == 0.0
    assert sequence_reward([0.5, 0.25, -1.0]) == -0.25


def test_likelihood_score_is_the_mean_logprob() -> None:
    assert likelihood_score([-1.0, -2.0, -3.0]) == -2.0  # (-1 - 2 - 3) / 3
    assert likelihood_score([]) == -math.inf


def test_centred_rewards_have_mean_zero() -> None:
    assert centred([0.3, -0.1, 0.4]) == pytest.approx([0.1, -0.3, 0.2])  # mean 0.2
    assert centred([]) == []


def test_softmax_by_hand() -> None:
    assert softmax([0.0, LN3]) == pytest.approx([0.25, 0.75])  # 1 / (1 + 3), 3 / (1 + 3)
    assert softmax([0.0, -math.inf]) == [1.0, 0.0]
    assert softmax([1000.0, 1000.0]) == [0.5, 0.5]  # stable: no overflow
    assert softmax([]) == []
    with pytest.raises(ValueError, match="all -inf"):
        softmax([-math.inf, -math.inf])


# --- vote_key ----------------------------------------------------------------------------------


def test_exact_groups_numbers_as_numbers_but_not_number_words() -> None:
    assert vote_key("3") == vote_key("3.0") == vote_key(" 3. ") == vote_key("$3") == 3.0
    assert vote_key("1,000") == vote_key("1000")
    assert vote_key("three") != vote_key("3")  # exact does not read number words
    assert vote_key("The Cat") == vote_key("cat!") == "cat"


def test_mc_groups_by_the_letter_read() -> None:
    choices = ["dog", "cat", "bird"]
    keys = {vote_key(a, "mc", choices) for a in ["B", "(B)", "cat", "The answer is B", "a cat"]}
    assert keys == {"B"}
    assert vote_key("A", "mc", choices) == "A"
    assert vote_key("Unsure.", "mc", choices) == "unsure"  # no letter: the exact key


def test_other_metrics_group_as_they_normalise() -> None:
    assert vote_key("Two dogs.", "vqa") == vote_key("the 2 Dogs", "vqa") == "2 dogs"
    assert vote_key("45%", "relaxed") == vote_key("0.45", "relaxed") == 0.45
    assert vote_key("45", "relaxed") == 45.0
    assert vote_key(" Beef ", "relaxed") == "beef"
    assert vote_key("  New   York ", "anls") == "new york"
    # aokvqa normalises as vqa does, and groups the same way.
    assert vote_key("bat", "aokvqa") == "bat"
    assert len({vote_key(a, "aokvqa") for a in ["bat", "Bat", "a bat", "bat."]}) == 1


def test_vote_key_rejects_an_unknown_metric() -> None:
    with pytest.raises(ValueError, match="unknown metric 'bleu'; use one of relaxed, vqa"):
        vote_key("3", "bleu")
    with pytest.raises(TypeError, match="give a string"):
        vote_key(3)  # type: ignore[arg-type]


# --- strategies --------------------------------------------------------------------------------


def test_best_of_n_takes_the_highest_reward_among_answered() -> None:
    assert best_of_n([None, "5", "6"], [3.0, 1.0, 2.0]) == Selection(2, "6", None)
    assert best_of_n(["5", "6", "7"], [1.0, 2.0, 2.0]).index == 1  # tie: lowest index
    assert best_of_n([None, None], [1.0, 2.0]) == Selection(1, None, None)  # none answered
    assert best_of_n([None, "5"], [-math.inf, -math.inf]).index == 1


def test_weighted_vote_and_majority_disagree() -> None:
    answers, rewards = ["7", "7", "9"], [0.0, 0.0, LN4]
    # majority: "7" has 2 votes; reward tie inside the group -> its first member, index 0.
    assert majority_vote(answers, rewards) == Selection(
        0, "7", {"7": Vote("7", 2, 0.0, 2.0), "9": Vote("9", 1, LN4, 1.0)}
    )
    # weighted: softmax [0, 0, ln 4] = [1/6, 1/6, 4/6]; "7" weighs 1/3, "9" weighs 2/3.
    chosen = weighted_vote(answers, rewards)
    assert (chosen.index, chosen.answer) == (2, "9")
    assert chosen.votes["7"].weight == pytest.approx(1 / 3)
    assert chosen.votes["9"].weight == pytest.approx(2 / 3)


def test_a_count_tie_goes_to_the_larger_reward_sum() -> None:
    answers = ["12", "15", "15", "12"]
    chosen = majority_vote(answers, [0.5, 0.25, 1.0, -1.0])  # sums: "12" -0.5, "15" 1.25
    assert (chosen.index, chosen.answer) == (2, "15")  # the group's highest-reward member
    assert chosen.votes == {"12": Vote("12", 2, -0.5, 2.0), "15": Vote("15", 2, 1.25, 2.0)}
    assert majority_vote(answers).index == 0  # no rewards: the group seen first


def test_weighted_vote_tie_goes_to_the_larger_reward_sum() -> None:
    # softmax [0, 0, 0, ln 3, 0] = [1/7, 1/7, 1/7, 3/7, 1/7]: "b" 3/7, "a" 3/7 (raw sums 0, ln 3)
    chosen = weighted_vote(["b", "b", "b", "a", "c"], [0.0, 0.0, 0.0, LN3, 0.0])
    assert (chosen.index, chosen.answer) == (3, "a")  # "b" was seen first, but sums less


def test_votes_group_answers_and_keep_the_chosen_text_word_for_word() -> None:
    chosen = majority_vote(["3.0", "3", "4"], [0.1, 0.9, 0.2])
    assert (chosen.index, chosen.answer) == (1, "3")
    assert set(chosen.votes) == {"3", "4"} and chosen.votes["3"].count == 2
    assert majority_vote(["3.0", "3", "4"]).answer == "3.0"  # no rewards: first member
    mc = majority_vote(["(B)", "A", "cat", "A", "B"], metric="mc", choices=["dog", "cat"])
    assert (mc.index, mc.answer, mc.votes["(B)"].count) == (0, "(B)", 3)


def test_votes_ignore_unanswered_candidates() -> None:
    answers = [None, None, None, "5", "6", "  ", "6"]
    chosen = majority_vote(answers)
    assert (chosen.index, chosen.answer, set(chosen.votes)) == (4, "6", {"5", "6"})
    # softmax over the answered [0, 0, 0] only: "6" weighs 2/3 even though None had 9.0.
    chosen = weighted_vote(answers, [9.0, 9.0, 9.0, 0.0, 0.0, 9.0, 0.0])
    assert chosen.index == 4 and chosen.votes["6"].weight == pytest.approx(2 / 3)


def test_no_answered_candidate() -> None:
    assert majority_vote([None, None]) == Selection(0, None, {})
    assert majority_vote([None, None], [1.0, 2.0]) == Selection(1, None, {})
    assert weighted_vote([None, "", None], [1.0, 3.0, 2.0]) == Selection(1, None, {})


def test_select_dispatches() -> None:
    answers, rewards = ["7", "7", "9"], [0.0, 0.0, LN4]
    assert STRATEGIES == ("single", "majority", "best_of_n", "weighted_vote", "control")
    assert select("single", answers) == Selection(0, "7", None)
    assert select("majority", answers).answer == "7"
    assert select("best_of_n", answers, rewards) == Selection(2, "9", None)
    assert select("weighted_vote", answers, rewards).answer == "9"
    scores = [likelihood_score([-1.0]), likelihood_score([-0.5, -0.7]), likelihood_score([])]
    assert select("control", [*answers[:2], None], scores) == Selection(1, "7", None)


def test_select_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'best'; use one of single, majority"):
        select("best", ["1"])
    for strategy in ("best_of_n", "weighted_vote", "control"):
        with pytest.raises(ValueError, match=f"'{strategy}' needs a verifier's"):
            select(strategy, ["1", "2"])
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        select("majority", [None], metric="bleu")


def test_strategies_validate_their_inputs() -> None:
    with pytest.raises(ValueError, match="answers has 3 candidates but rewards has 2"):
        best_of_n(["1", "2", "3"], [0.0, 1.0])
    with pytest.raises(ValueError, match="answers is empty"):
        majority_vote([])
    with pytest.raises(ValueError, match=r"rewards\[1\] is nan"):
        weighted_vote(["1", "2"], [0.0, math.nan])
    with pytest.raises(ValueError, match=r"rewards\[0\] is inf"):
        best_of_n(["1"], [math.inf])
    with pytest.raises(TypeError, match=r"answers\[1\] is 2"):
        majority_vote(["1", 2])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="string"):
        majority_vote("12")
    with pytest.raises(TypeError, match=r"rewards\[0\] is '1'"):
        best_of_n(["1"], ["1"])  # type: ignore[list-item]
