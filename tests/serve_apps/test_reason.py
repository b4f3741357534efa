"""serve_apps.reason over real HTTP: the tiny run served on a local Ray cluster (vLLM's CPU build),
driven with the ``openai`` client and raw requests."""

from __future__ import annotations

import json
import math

import pytest
import requests
from PIL import Image

from reasoner.data.images import encode_png, to_data_url
from reasoner.prompts import build_prompt

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUESTION = "What is the sum of the red bar and the blue bar?"
IMAGE = Image.new("RGB", (32, 32), (255, 255, 255))
for x in range(4, 12):
    for y in range(10, 30):
        IMAGE.putpixel((x, y), (220, 20, 20))
URL = to_data_url(encode_png(IMAGE))
MESSAGES = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": URL}},
                                         {"type": "text", "text": QUESTION}]}]
STRATEGY_FIELDS = {"direct": {}, "cot": {}, "majority": {"n": 4}, "best_of_n": {"n": 4},
                   "weighted_vote": {"n": 4}, "beam": {"beam_width": 2, "expansions": 2, "max_steps": 2}}


@pytest.fixture(scope="module")
def client(reason_url):
    from openai import OpenAI

    return OpenAI(base_url=f"{reason_url}/v1", api_key="unused", max_retries=0, timeout=300)


def post(url: str, route: str, body) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{url}{route}", data=data, headers={"Content-Type": "application/json"}, timeout=300)


def reason(url: str, strategy: str, **fields) -> dict:
    response = post(url, "/v1/reason", {"messages": MESSAGES, "strategy": strategy, "seed": 0,
                                        **STRATEGY_FIELDS[strategy], **fields})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def offline_rewards(served_run):
    """The verifier computed offline: the transformers scorer on both models, ``reasoner.verify``."""
    from reasoner.models import ScoreRequest, TransformersScorer
    from reasoner.verify import sequence_reward, token_rewards

    policy = TransformersScorer.from_pretrained(served_run / "models" / "dpo")
    reference = TransformersScorer.from_pretrained(served_run / "models" / "sft")
    prompt = build_prompt(QUESTION, None, "cot")

    def rewards(texts: list[str], beta: float = 0.1) -> list[float]:
        requests_ = [ScoreRequest(IMAGE, prompt, t) for t in texts]
        return [sequence_reward(token_rewards(p.logprobs, r.logprobs, beta))
                for p, r in zip(policy.score(requests_), reference.score(requests_))]

    return rewards


def test_health_and_models(reason_url, client) -> None:
    assert requests.get(f"{reason_url}/healthz", timeout=30).json()["status"] == "ok"
    assert [m.id for m in client.models.list().data] == ["reasoner"]
    spec = requests.get(f"{reason_url}/openapi.json", timeout=30).json()
    assert {"/v1/chat/completions", "/v1/reason", "/v1/verify", "/v1/models", "/healthz"} <= set(spec["paths"])


def test_chat_completions_with_the_openai_client(client) -> None:
    reply = client.chat.completions.create(model="reasoner", messages=MESSAGES, n=2, max_tokens=8, seed=3,
                                           temperature=1.0, logprobs=True, top_logprobs=2)
    assert len(reply.choices) == 2 and reply.usage.completion_tokens > 0
    for choice in reply.choices:
        tokens = choice.logprobs.content
        assert tokens and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in tokens)
        assert all(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob for t in tokens)  # ranked
    # One log-prob entry a generated token.
    assert sum(len(c.logprobs.content) for c in reply.choices) == reply.usage.completion_tokens
    # Greedy: streamed deltas add up to the same text as the whole answer.
    whole = client.chat.completions.create(model="reasoner", messages=MESSAGES, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(model="reasoner", messages=MESSAGES, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.parametrize("strategy", list(STRATEGY_FIELDS))
def test_every_strategy_through_both_routes(reason_url, client, strategy) -> None:
    answer = reason(reason_url, strategy)
    assert answer["strategy"] == strategy
    assert answer["rationale"] == answer["candidates"][0]["text"] or strategy in ("majority", "best_of_n",
                                                                                   "weighted_vote")
    assert answer["rationale"] in [c["text"] for c in answer["candidates"]]
    assert answer["usage"]["completion_tokens"] > 0
    if strategy in ("direct", "cot", "majority"):
        assert answer["verifier"] is None and all(c["reward"] is None for c in answer["candidates"])
    else:
        assert answer["verifier"] == "dpo"
    reasoning = {"strategy": strategy, **STRATEGY_FIELDS[strategy]}
    reply = client.chat.completions.create(model="reasoner", messages=MESSAGES, seed=0,
                                           extra_body={"reasoning": reasoning})
    chat = reply.model_extra["reasoning"]
    assert chat["strategy"] == strategy and reply.choices[0].message.content == chat["rationale"]


def test_best_of_n_picks_the_highest_reward_and_matches_offline(reason_url, offline_rewards) -> None:
    answer = reason(reason_url, "best_of_n", n=6, return_token_rewards=True, temperature=1.0)
    candidates = answer["candidates"]
    rewards = [c["reward"] for c in candidates]
    answered = [c for c in candidates if c["answer"] is not None] or candidates
    assert answer["rationale"] == max(answered, key=lambda c: c["reward"])["text"]
    expected = offline_rewards([c["text"] for c in candidates])
    assert rewards == pytest.approx(expected, abs=2e-3)
    assert any(abs(r) > 1e-3 for r in rewards)  # the verifier is not trivially zero
    for c in candidates:  # token rewards are raw and sum to the sequence reward
        assert sum(r for _, r in c["token_rewards"]) == pytest.approx(c["reward"], abs=1e-4)
    # The verifier alone gives the same rewards for the same texts, in the order given.
    texts = [c["text"] for c in candidates][::-1]
    verified = post(reason_url, "/v1/verify", {"messages": MESSAGES, "candidates": texts}).json()
    assert verified["verifier"] == "dpo" and [c["text"] for c in verified["candidates"]] == texts
    assert [c["reward"] for c in verified["candidates"]] == pytest.approx(rewards[::-1], abs=1e-4)
    # A request's beta scales the implicit reward.
    doubled = post(reason_url, "/v1/verify", {"messages": MESSAGES, "candidates": texts, "beta": 0.2}).json()
    assert [c["reward"] for c in doubled["candidates"]] == pytest.approx([2 * r for r in rewards[::-1]], abs=1e-4)


def test_votes(reason_url) -> None:
    from reasoner.verify import softmax, vote_key

    majority = reason(reason_url, "majority", n=6, temperature=1.0)
    votes = majority["votes"]
    assert sum(v["count"] for v in votes.values()) == sum(c["answer"] is not None for c in majority["candidates"])
    if votes:
        assert majority["answer"] in votes
        assert votes[majority["answer"]]["count"] == max(v["count"] for v in votes.values())
    weighted = reason(reason_url, "weighted_vote", n=6, temperature=1.0)
    answered = [c for c in weighted["candidates"] if c["answer"] is not None]
    shares = softmax([c["reward"] for c in answered])
    weights = {}
    for answer, vote in weighted["votes"].items():
        members = [i for i, c in enumerate(answered) if vote_key(c["answer"]) == vote_key(answer)]
        assert vote["count"] == len(members)
        assert vote["reward_sum"] == pytest.approx(sum(answered[i]["reward"] for i in members), abs=1e-6)
        weights[answer] = sum(shares[i] for i in members)
    if weights:
        assert weights[weighted["answer"]] == pytest.approx(max(weights.values()))


def test_beam_tree_holds_every_scored_step(reason_url) -> None:
    answer = reason(reason_url, "beam", beam_width=2, expansions=3, max_steps=3, temperature=1.0)
    tree = answer["beam"]
    ids = {node["id"] for node in tree}
    assert len(ids) == len(tree) and tree
    assert all(node["parent"] is None or node["parent"] in ids for node in tree)
    assert all(math.isfinite(node["score"]) for node in tree)
    first = [n for n in tree if n["parent"] is None]
    assert 1 <= len(first) <= 3 and sum(n["kept"] for n in first) <= 2
    # The rationale is one path of kept steps from the root.
    by_id = {n["id"]: n for n in tree}
    leaves = [n for n in tree if n["kept"] and "".join(_path(by_id, n)) == answer["rationale"]]
    assert leaves, "the rationale is no path of the tree"


def _path(by_id: dict, node: dict) -> list[str]:
    texts = []
    while node is not None:
        texts.append(node["text"])
        node = by_id.get(node["parent"]) if node["parent"] is not None else None
    return texts[::-1]


BAD_IMAGE = to_data_url(encode_png(IMAGE)[:40])


@pytest.mark.parametrize(("route", "body", "param"), [
    ("/v1/reason", b"{not json", None),
    ("/v1/reason", {"messages": MESSAGES, "strategy": "best_of_n", "n": "four"}, "n"),
    ("/v1/reason", {"messages": MESSAGES, "strategy": "telepathy"}, "strategy"),
    ("/v1/reason", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": BAD_IMAGE}},
                                                             {"type": "text", "text": "q"}]}]},
     "messages[0].content[0].image_url.url"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}, {"type": "text", "text": "q"}]}]},
     "messages[0].content[0].image_url.url"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}, {"type": "text", "text": "q"}]}]},
     "messages[0].content[0].image_url.url"),
    ("/v1/chat/completions", {"messages": MESSAGES, "n": 2, "reasoning": {"strategy": "majority"}}, "n"),
    ("/v1/verify", {"messages": MESSAGES, "candidates": []}, "candidates"),
])
def test_bad_requests_get_a_4xx_naming_the_field(reason_url, route, body, param) -> None:
    response = post(reason_url, route, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]
    assert post(reason_url, "/v1/reason", {"messages": MESSAGES, "strategy": "direct"}).status_code == 200


def test_unknown_model_is_404(client) -> None:
    from openai import NotFoundError

    with pytest.raises(NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4)
