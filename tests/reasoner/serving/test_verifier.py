"""reasoner.serving.verifier on the real transformers scorer over the tiny model (and a perturbed
copy as the DPO model): the rewards are the math of reasoner.verify over the scorer's log-probs."""

from __future__ import annotations

import pytest
from PIL import Image

from reasoner.models import ScoreRequest, TransformersScorer
from reasoner.prompts import build_prompt
from reasoner.serving.verifier import Verifier
from tests.support.models import perturbed_copy

IMAGE = Image.new("RGB", (32, 32), (240, 240, 240))
PROMPT = build_prompt("What is the value of the red bar?", None, "cot")
TEXTS = ["The red bar is 4.\n### Answer: 4", "The red bar is 7.\n### Answer: 7", ""]


@pytest.fixture(scope="module")
def scorers(tiny_model_dir, tmp_path_factory):
    dpo = perturbed_copy(tiny_model_dir, tmp_path_factory.mktemp("dpo") / "model")
    return TransformersScorer.from_pretrained(dpo), TransformersScorer.from_pretrained(tiny_model_dir)


def test_dpo_reward_is_beta_times_the_log_ratio(scorers) -> None:
    policy, reference = scorers
    verifier = Verifier(policy, reference, beta=0.1)
    assert verifier.kind == "dpo"
    verdicts = verifier.score(IMAGE, PROMPT, TEXTS)
    requests = [ScoreRequest(IMAGE, PROMPT, t) for t in TEXTS]
    for verdict, p, r in zip(verdicts, policy.score(requests), reference.score(requests)):
        assert verdict.reward == pytest.approx(0.1 * (p.total - r.total), abs=1e-6)
        assert sum(verdict.token_rewards) == pytest.approx(verdict.reward, abs=1e-9)
        assert verdict.tokens == p.tokens and len(verdict.token_pairs()) == len(p.tokens)
    assert any(abs(v.reward) > 1e-3 for v in verdicts)
    doubled = verifier.score(IMAGE, PROMPT, TEXTS, beta=0.2)
    assert [v.reward for v in doubled] == pytest.approx([2 * v.reward for v in verdicts], abs=1e-9)


def test_a_prefix_is_scored_without_eos(scorers) -> None:
    policy, reference = scorers
    verifier = Verifier(policy, reference, beta=0.1)
    whole, prefix = verifier.score(IMAGE, PROMPT, [TEXTS[0]] * 2, complete=[True, False])
    assert len(whole.tokens) == len(prefix.tokens) + 1
    assert whole.token_rewards[:-1] == pytest.approx(prefix.token_rewards, abs=1e-9)


def test_without_a_reference_the_score_is_the_mean_likelihood(scorers) -> None:
    policy, _ = scorers
    verifier = Verifier(policy, None, beta=None)
    assert verifier.kind == "likelihood"
    verdicts = verifier.score(IMAGE, PROMPT, TEXTS[:2])
    for verdict, p in zip(verdicts, policy.score([ScoreRequest(IMAGE, PROMPT, t) for t in TEXTS[:2]])):
        assert verdict.reward == pytest.approx(p.total / len(p), abs=1e-9)
        assert sum(verdict.token_rewards) == pytest.approx(verdict.reward, abs=1e-9)


def test_a_model_against_itself_rewards_nothing(scorers) -> None:
    _, reference = scorers
    verdicts = Verifier(reference, reference, beta=0.1).score(IMAGE, PROMPT, TEXTS)
    assert all(v.reward == 0 and set(v.token_rewards) == {0.0} for v in verdicts)


def test_refuses_bad_arguments(scorers) -> None:
    policy, reference = scorers
    with pytest.raises(ValueError, match="beta > 0"):
        Verifier(policy, reference, beta=None)
    with pytest.raises(ValueError, match="2 flags for 3 responses"):
        Verifier(policy, reference, beta=0.1).score(IMAGE, PROMPT, TEXTS, complete=[True, True])
