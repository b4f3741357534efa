"""The verifier's scoring: N candidates of one image and question batched in one call, against one by one.

    python benchmarks/verifier.py                           # tiny DPO run, N=32, vLLM scorers
    python benchmarks/verifier.py --backend transformers
    python benchmarks/verifier.py --run-dir runs/default    # a finished run's DPO model and reference

What is timed is ``reasoner.serving.verifier.Verifier.score``, what the served ``Verifier``
deployment runs: the policy (DPO) scorer and the reference (SFT) scorer over the candidates, then
the token and sequence rewards. The candidates are ``--candidates`` samples of the DPO model (the
served generator) at temperature 1, at most ``--max-tokens`` tokens each, for the serving tests'
image and question, made once beforehand by a vLLM engine over the DPO model with the sampled
tokens' log-probs kept. After a warm-up at both batch sizes, the legs run in turn, ``--repeats``
rounds (the median of each is reported):

(a) batched: one ``score`` call with every candidate (what ``best_of_n`` sends): one
    ``LLM.generate`` per model over all N prompt+response sequences, which the engine runs as one
    batch;
(b) one by one: N ``score`` calls of one candidate each.

The shared prefix: every candidate's sequence starts with the same image and question (the image's
tokens dominate a real LLaVA-NeXT prompt: about 2,900 of 3,000). vLLM cannot reuse its prefix cache
for them: a request that asks for ``prompt_logprobs`` skips reading the cache
(``SamplingParams.skip_reading_prefix_cache`` defaults to True then, since cached positions get no
log-probs), so the batched path recomputes the prefix for each candidate, inside one batched
forward. What batching saves is the per-call overhead and the engine steps, not prefix FLOPs; the
report gives the prefix's share of the tokens scored, the part of the work a prefix-sharing scorer
could drop.

The generator's log-probs: where the generator is the DPO model, the log-probs vLLM returns with
each sampled token are the policy's own (``logprobs_mode`` raw_logprobs: before temperature), so
the policy pass could be skipped and only the reference scored. The report times the reference pass
alone (what would remain) and checks the premise on these candidates: how many sampled token
sequences are exactly the tokenisation the scorer makes of their text (the verifier scores text,
and a text may tokenise otherwise than it was sampled), and how far the sampled log-probs are from
the policy scorer's on those. The served verifier does not use them (see the printed verdict).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGET_RATIO = 5.0


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", help="a finished run (default: build the tiny one of benchmarks/serving.py)")
    parser.add_argument("--candidates", type=int, default=32, help="N, candidates of one question (default 32)")
    parser.add_argument("--max-tokens", type=int, default=64, help="most tokens a candidate (default 64)")
    parser.add_argument("--backend", choices=("vllm", "transformers"), default="vllm", help="the scorers' engine")
    parser.add_argument("--repeats", type=int, default=5, help="timings per leg; the median is reported")
    args = parser.parse_args(argv)

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    from benchmarks.serving import BETA, QUESTION, build_tiny_run, image_url
    from reasoner.data.images import decode_image
    from reasoner.models import make_scorer
    from reasoner.models.inputs import encode_request, generation_input
    from reasoner.models.scorer import ScoreRequest
    from reasoner.models.vllm_backend import (
        VLLMScorer,
        make_vllm_engine,
        shutdown_vllm_engine,
    )
    from reasoner.prompts import build_prompt
    from reasoner.rundir import RunDir
    from reasoner.serving.verifier import Verifier

    if args.run_dir:
        run = RunDir(args.run_dir)
        beta = run.require("models/dpo").get("beta") or BETA
    else:
        run = RunDir(str(build_tiny_run(Path(tempfile.mkdtemp(prefix="bench-verifier-")))))
        beta = BETA
    policy_dir, reference_dir = run.path("models/dpo"), run.path("models/sft")
    image = decode_image(image_url())
    prompt = build_prompt(QUESTION, None, "cot")
    engine = {"max_model_len": 512}

    # The candidates: N samples of the DPO model, with their sampled tokens' log-probs.
    from vllm import SamplingParams

    llm = make_vllm_engine(policy_dir, **engine)
    policy_scorer = VLLMScorer(llm)
    processor = policy_scorer.processor
    params = SamplingParams(n=args.candidates, temperature=1.0, max_tokens=args.max_tokens, seed=0, logprobs=0)
    (sampled,) = llm.generate([generation_input(processor, prompt, image)], params, use_tqdm=False)
    outputs = sorted(sampled.outputs, key=lambda o: o.index)
    texts = [o.text for o in outputs]
    if args.backend == "transformers":
        shutdown_vllm_engine(llm)
        policy_scorer = make_scorer(policy_dir, "transformers")
    reference_scorer = make_scorer(reference_dir, args.backend, engine=engine)
    verifier = Verifier(policy_scorer, reference_scorer, beta)

    # The premise of reusing the generator's log-probs: the scorer's tokens are the sampled ones.
    encoded = [encode_request(processor, ScoreRequest(image, prompt, t)) for t in texts]
    eos = processor.tokenizer.eos_token_id
    same = [list(o.token_ids) == e.response_ids + ([eos] if o.token_ids and o.token_ids[-1] == eos else [])
            for o, e in zip(outputs, encoded)]
    scored = verifier.policy.score([ScoreRequest(image, prompt, t, eos=o.finish_reason == "stop")
                                    for t, o in zip(texts, outputs)])
    gaps = [max((abs(lp[t].logprob - s) for lp, t, s in zip(o.logprobs, o.token_ids, p.logprobs)), default=0.0)
            for o, p, ok in zip(outputs, scored, same) if ok]
    prompt_tokens = len(sampled.prompt_token_ids)
    response_tokens = [len(e.response_ids) + 1 for e in encoded]  # + EOS, scored for complete candidates

    # Warm up both scorers at both batch sizes (the first call of a shape pays one-off costs), then
    # time the legs in turn, so that a change of the machine's load touches them alike.
    verifier.score(image, prompt, texts)
    verifier.score(image, prompt, texts[:1])
    requests = [ScoreRequest(image, prompt, t) for t in texts]
    legs = {"batched": lambda: verifier.score(image, prompt, texts),
            "one_by_one": lambda: [verifier.score(image, prompt, [t]) for t in texts],
            "reference_only": lambda: verifier.reference.score(requests),
            "policy_only": lambda: verifier.policy.score(requests)}
    times: dict[str, list[float]] = {name: [] for name in legs}
    for _ in range(args.repeats):
        for name, leg in legs.items():
            times[name].append(median_time(leg, 1))
    batched, one_by_one, reference_only, policy_only = (statistics.median(times[n]) for n in legs)

    ratio = one_by_one / batched
    prefix_share = prompt_tokens / (prompt_tokens + statistics.mean(response_tokens))
    report = {
        "backend": args.backend, "candidates": args.candidates, "prompt_tokens": prompt_tokens,
        "mean_response_tokens": round(statistics.mean(response_tokens), 1), "prefix_share": round(prefix_share, 3),
        "batched_s": round(batched, 4), "one_by_one_s": round(one_by_one, 4), "ratio": round(ratio, 2),
        "candidates_per_s_batched": round(args.candidates / batched, 1),
        "candidates_per_s_one_by_one": round(args.candidates / one_by_one, 1),
        "policy_pass_s": round(policy_only, 4), "reference_pass_s": round(reference_only, 4),
        "sampled_tokens_match_scorer": f"{sum(same)}/{len(same)}",
        "mean_sampled_tokens": round(statistics.mean(len(o.token_ids) for o in outputs), 1),
        "mean_scorer_tokens_of_the_text": round(statistics.mean(len(e.response_ids) for e in encoded), 1),
        "max_logprob_gap_where_matching": round(max(gaps), 6) if gaps else None,
    }
    print(f"{'leg':<28} {'seconds':>9} {'candidates/s':>13}")
    print(f"{'(a) batched, one call':<28} {batched:>9.4f} {args.candidates / batched:>13.1f}")
    print(f"{'(b) one by one, N calls':<28} {one_by_one:>9.4f} {args.candidates / one_by_one:>13.1f}")
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    print(f"ratio (b/a): {ratio:.2f}x ({verdict} the {TARGET_RATIO:g}x target), N={args.candidates}, {args.backend}")
    print(f"shared prefix: {prompt_tokens} prompt tokens (image and question) before a mean "
          f"{statistics.mean(response_tokens):.1f} response tokens: {prefix_share:.0%} of each sequence, recomputed "
          "per candidate (prompt_logprobs requests skip vLLM's prefix cache)")
    saved = policy_only / (policy_only + reference_only)
    print(f"policy pass {policy_only:.4f} s, reference pass {reference_only:.4f} s of a batched score: reusing the "
          f"generator's sampled log-probs would save the policy pass, {saved:.0%}"
          f" of the scoring; sampled tokens equal to the scorer's tokenisation of the text in {sum(same)}/{len(same)} "
          f"candidates (largest log-prob gap on those: {report['max_logprob_gap_where_matching']}; a mean "
          f"{report['mean_sampled_tokens']} tokens sampled, {report['mean_scorer_tokens_of_the_text']} when the "
          "text is tokenised again)")
    verdict = ("not used by the served verifier: it scores the text, whose tokens differ from the sampled ones "
               "here, and /v1/verify and beam prefixes have no sampled log-probs") if sum(same) < len(same) else (
               "usable on these candidates; the served verifier still scores the text")
    print(f"the generator's log-probs: {verdict}")
    print(json.dumps(report))
    if args.backend == "vllm":
        shutdown_vllm_engine(llm)


if __name__ == "__main__":
    main()
