"""The evaluation's pool: M candidates a test question from the generator, each scored by the
verifier and by the control, the data every reranking curve is computed from.

Zhang et al. 2024 (section 5.4, Figures 6-7) sample candidates from the SFT model and pick among
them with the DPO model's implicit reward against the SFT reference. Here one engine over the
generator (the SFT model) samples the pool and scores it (its per-token log-probs are the
reference's half of the reward and, averaged, the control's score); one engine over the verifier
(the DPO model) scores it again. A pool row is a ``candidates`` row plus ``reward`` (the summed
token rewards, ``reasoner.verify``), ``control`` (mean token log-likelihood under the generator),
``policy_logp`` and ``reference_logp`` (summed), so any curve can be recomputed from saved pools
(STYLE.md: strategies over saved scores), and ``tokens`` with their raw ``token_rewards`` (the
credit assignment of the paper's Figure 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reasoner.answers import correct_threshold_field
from reasoner.options import check, option
from reasoner.verify import likelihood_score, sequence_reward, token_rewards


@dataclass
class EvaluateConfig:
    """Stage evaluate: greedy accuracy per model, mode and source, and reranking curves over a pool."""

    split: Literal["train", "val", "test"] = option("test", "split of the run's examples to evaluate on")
    questions: int | None = option(
        500, "questions evaluated, a fixed subset mixing sources (null: the whole split); checked against the split")
    models: list[str] = option(["models/base", "models/sft", "models/dpo"],
                               "model artifacts answered greedily in each mode (missing ones are skipped, and said so)")
    modes: list[str] = option(["direct", "cot"], "prompt modes of the greedy accuracy (the paper's two)")
    generator: str = option("models/sft", "model that samples the pool (the paper: the SFT model)")
    verifier: str = option("models/dpo", "the DPO model whose implicit reward against the generator reranks the pool")
    pool_size: int = option(32, "candidates a question in the pool (paper: 32)")
    ns: list[int] = option([1, 2, 4, 8, 16, 32], "the N of each reranking curve's points (at most pool_size)")
    temperature: float = option(1.0, "sampling temperature of the pool (paper: 1.0)")
    mc_temperature: float = option(1.2, "... for multiple-choice questions (paper: 1.2)")
    max_tokens: int = option(256, "most tokens of a candidate or a greedy answer")
    draws: int = option(256, "random N-subsets a question for the voting strategies' expectation where their ordered "
                             "N-subsets number over 4,096 (fewer, N = 1 among them, are all enumerated; the other "
                             "strategies are exact closed forms)")
    bootstrap: int = option(2000, "bootstrap resamples of the questions for each interval")
    seed: int = option(0, "seed of the pool's sampling, the subsets and the bootstrap")
    served_pool: bool = option(
        True, "also sample a pool from the served app's default generator (serve.generator: the DPO model) and "
        "rerank it the same way, where it differs from the generator (eval/served_pool, served_curves)")
    correct_threshold: float = correct_threshold_field()

    def __post_init__(self) -> None:
        check(self.questions is None or self.questions >= 1, "questions", self.questions, "use a positive number or null")
        check(self.pool_size >= 1, "pool_size", self.pool_size, "sample at least one candidate")
        check(bool(self.ns) and all(1 <= n <= self.pool_size for n in self.ns) and self.ns == sorted(set(self.ns)),
              "ns", self.ns, f"list increasing N from 1 to pool_size ({self.pool_size})")
        check(all(m in ("direct", "cot") for m in self.modes), "modes", self.modes, "use direct and/or cot")
        check(self.temperature >= 0 and self.mc_temperature >= 0, "temperature/mc_temperature",
              (self.temperature, self.mc_temperature), "use 0 (greedy) or more")
        check(self.max_tokens >= 1, "max_tokens", self.max_tokens, "allow at least 1 token")
        check(self.seed >= 0, "seed", self.seed, "use a non-negative seed")
        check(self.draws >= 1 and self.bootstrap >= 1, "draws/bootstrap", (self.draws, self.bootstrap), "use >= 1")
        check(0 < self.correct_threshold <= 1, "correct_threshold", self.correct_threshold, "use a value in (0, 1]")


def pool_sample_config(*, n: int, temperature: float, mc_temperature: float, max_tokens: int, seed: int,
                       correct_threshold: float, top_p: float = 1.0):
    """The ``SampleConfig`` a pool is sampled with: ``n`` CoT candidates a question."""
    from reasoner.sampling import SampleConfig

    return SampleConfig(num_samples=n, temperature=temperature, mc_temperature=mc_temperature, top_p=top_p,
                        max_tokens=max_tokens, seed=seed, correct_threshold=correct_threshold)


def score_candidates(llm: Any, examples: Sequence[dict[str, Any]], candidates: Sequence[dict[str, Any]]) -> list:
    """Each candidate's ``TokenLogProbs`` under the engine ``llm``, in one batched call: ``examples``
    hold the images (decoded once a question, not a candidate), ``candidates`` their ``id``,
    ``prompt`` and ``text``."""
    from reasoner.models import ScoreRequest
    from reasoner.models.inputs import load_image
    from reasoner.models.vllm_backend import VLLMScorer

    images = {ex["id"]: load_image(ex["image"]) for ex in examples}
    return VLLMScorer(llm).score([ScoreRequest(images[c["id"]], c["prompt"], c["text"]) for c in candidates])


def pool_rows(candidates: Sequence[dict[str, Any]], reference: Sequence[Any], policy: Sequence[Any] | None,
              beta: float | None) -> list[dict[str, Any]]:
    """Candidate rows with their scores: ``reference`` and ``policy`` are the generator's and the
    verifier's ``TokenLogProbs`` of each candidate (policy None: no verifier, ``reward`` null)."""
    rows = []
    for i, row in enumerate(candidates):
        ref = reference[i]
        reward, rewards = None, None
        if policy is not None:
            rewards = token_rewards(policy[i].logprobs, ref.logprobs, beta)
            reward = sequence_reward(rewards)
        rows.append({**row, "reference_logp": ref.total, "control": likelihood_score(ref.logprobs),
                     "policy_logp": None if policy is None else policy[i].total, "reward": reward,
                     "tokens": list(ref.tokens), "token_rewards": rewards})
    return rows
