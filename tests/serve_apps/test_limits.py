"""Serving under load and attack: keys, rate limits, caps, timeouts, backpressure and disconnects.

Unit tests of the guards first (no Ray); then the served apps over HTTP: the session's app (default
limits) for disconnects and metrics, and the limited app (``conftest.LIMITED``: API keys, small caps,
a 3 s timeout, one-request queues) for everything else. After each refusal a normal request must
still succeed: the service keeps serving.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time

import pytest
import requests
from fastapi import Request
from PIL import Image

from reasoner.data.images import encode_png, to_data_url
from serve_apps.limits import ERROR_RESPONSES, check_caps, openapi_with_caps
from serve_apps.protocol import (
    APIError,
    ChatCompletionRequest,
    ReasonRequest,
    VerifyRequest,
    parse_messages,
)
from tests.serve_apps.conftest import LIMITED_KEYS, MESSAGES

URL = MESSAGES[0]["content"][0]["image_url"]["url"]
QUESTION = MESSAGES[0]["content"][1]["text"]
KEY_A, KEY_B = LIMITED_KEYS


# ---------------------------------------------------------------------------------- unit: the guards


def test_rate_limiter_paces_each_key_on_its_own():
    from serve_apps.limits import RateLimiter

    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("a")
    assert wait == pytest.approx(1.0)  # one token a second
    assert limiter.acquire("b") == 0.0  # another key has its own bucket
    now[0] += 1.0
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") > 0
    now[0] += 100.0  # refills up to the burst, not beyond
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0
    error = limiter.refusal(0.2)
    assert (error.status, error.code, error.headers["Retry-After"]) == (429, "rate_limit_exceeded", "1")
    assert "serve.limits.requests_per_minute" in error.message
    assert RateLimiter(per_minute=0, burst=1).acquire("a") == 0.0  # 0: no limit


def test_body_limit_refuses_declared_and_streamed_bodies():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from reasoner.serving.config import LimitsConfig
    from serve_apps.limits import BodyLimit

    app = FastAPI()
    refused = []
    app.add_middleware(BodyLimit, on_refusal=lambda scope: refused.append(scope["path"]))
    app.state.limits = LimitsConfig(max_body_bytes=1024)

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        return {"size": len(await request.body())}

    client = TestClient(app)
    assert client.post("/echo", content=b"x" * 1024).json() == {"size": 1024}
    response = client.post("/echo", content=b"x" * 1025)
    assert response.status_code == 413
    error = response.json()["error"]
    assert "1025 bytes" in error["message"] and "cap of 1024 bytes (serve.limits.max_body_bytes)" in error["message"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(8):
            yield b"y" * 200

    response = client.post("/echo", content=chunks())
    assert response.status_code == 413 and response.json()["error"]["code"] == "cap_exceeded"
    assert refused == ["/echo", "/echo"]


def test_limits_are_checked_when_the_config_loads():
    from reasoner.config import load_run_config
    from reasoner.options import ConfigError

    config = load_run_config(None, ["serve.limits.max_n=4", "serve.n=4", "serve.limits.request_timeout_s=2.5"])
    assert (config.serve.limits.max_n, config.serve.limits.request_timeout_s) == (4, 2.5)
    for bad, says in [(["serve.n=8", "serve.limits.max_n=4"], "serve.limits.max_n"),
                      (["serve.limits.max_body_bytes=10"], "1024 bytes"),
                      (["serve.limits.requests_per_minute=-1"], "0 (no limit)"),
                      (["serve.generator_max_replicas=1", "serve.generator_replicas=2"], "generator_replicas"),
                      (["serve.target_ongoing_requests=32"], "never scales up")]:
        with pytest.raises(ConfigError, match=None) as info:
            load_run_config(None, bad)
        assert says in str(info.value)


def chat(**fields) -> dict:
    return {"model": "m", "messages": MESSAGES, **fields}


def user(*parts: dict) -> dict:
    return {"role": "user", "content": list(parts)}


def image(url: str = URL) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def text(value: str = "How many bars?") -> dict:
    return {"type": "text", "text": value}


def small_caps(**overrides):
    from reasoner.serving.config import LimitsConfig

    return LimitsConfig(**{"max_n": 4, "max_tokens": 32, "max_beam_width": 2, "max_expansions": 3, "max_steps": 4,
                           "max_candidates": 3, "max_text_chars": 40, **overrides})


def cap_error(model, body) -> APIError:
    with pytest.raises(APIError) as info:
        check_caps(model.model_validate(body), small_caps())
    return info.value


@pytest.mark.parametrize("model, fields, param, cap", [
    (ReasonRequest, {"n": 5}, "n", "4 (serve.limits.max_n)"),
    (ReasonRequest, {"max_tokens": 33}, "max_tokens", "32 (serve.limits.max_tokens)"),
    (ReasonRequest, {"strategy": "beam", "beam_width": 3}, "beam_width", "2 (serve.limits.max_beam_width)"),
    (ReasonRequest, {"strategy": "beam", "expansions": 4}, "expansions", "3 (serve.limits.max_expansions)"),
    (ReasonRequest, {"strategy": "beam", "max_steps": 5}, "max_steps", "4 (serve.limits.max_steps)"),
    (ChatCompletionRequest, {"n": 5}, "n", "4 (serve.limits.max_n)"),
    (ChatCompletionRequest, {"max_completion_tokens": 40}, "max_completion_tokens", "32 (serve.limits.max_tokens)"),
    (ChatCompletionRequest, {"max_tokens": 40}, "max_tokens", "32 (serve.limits.max_tokens)"),
    (ChatCompletionRequest, {"reasoning": {"n": 9}}, "reasoning.n", "4 (serve.limits.max_n)"),
    (ChatCompletionRequest, {"reasoning": {"strategy": "beam", "expansions": 9}}, "reasoning.expansions",
     "3 (serve.limits.max_expansions)"),
    (VerifyRequest, {"candidates": ["a"] * 4}, "candidates", "3 (serve.limits.max_candidates)"),
    (VerifyRequest, {"candidates": ["a", "b" * 41]}, "candidates[1]", "40 (serve.limits.max_text_chars)"),
])
def test_caps_name_the_field_and_the_cap(model, fields, param, cap):
    error = cap_error(model, chat(**fields))
    assert (error.param, error.status, error.code) == (param, 400, "cap_exceeded")
    assert f"cap of {cap}" in error.message


def test_requests_within_the_caps_pass():
    caps = small_caps()
    check_caps(ReasonRequest.model_validate(chat(strategy="beam", n=4, max_tokens=32, beam_width=2, expansions=3,
                                                 max_steps=4)), caps)
    check_caps(ChatCompletionRequest.model_validate(chat(n=4, max_tokens=32)), caps)
    check_caps(ChatCompletionRequest.model_validate(chat(max_completion_tokens=32, reasoning={"n": 4})), caps)
    check_caps(VerifyRequest.model_validate(chat(candidates=["a" * 40] * 3)), caps)


def test_question_and_image_caps_name_the_field():
    with pytest.raises(APIError) as info:
        parse_messages(ChatCompletionRequest.model_validate(chat(messages=[user(image(), text("x" * 41))])).messages,
                       max_text_chars=40)
    assert (info.value.param, info.value.code) == ("messages[0].content", "cap_exceeded")
    assert "cap of 40 (serve.limits.max_text_chars)" in info.value.message
    with pytest.raises(APIError) as info:
        parse_messages(ChatCompletionRequest.model_validate(chat()).messages, max_pixels=1023)
    assert (info.value.param, info.value.code) == ("messages[0].content[0].image_url.url", "cap_exceeded")
    assert "32x32 = 1024 pixels" in info.value.message
    assert "this server's cap of 1023 (serve.limits.max_image_pixels)" in info.value.message


def test_openapi_document_states_the_caps():
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/reason", responses=ERROR_RESPONSES)
    def reason(body: ReasonRequest) -> dict:
        return {}

    @app.post("/v1/chat/completions", responses=ERROR_RESPONSES)
    def chat_route(body: ChatCompletionRequest) -> dict:
        return {}

    @app.post("/v1/verify", responses=ERROR_RESPONSES)
    def verify(body: VerifyRequest) -> dict:
        return {}

    schema = openapi_with_caps(app.openapi(), small_caps())
    components = schema["components"]["schemas"]

    def maximum(model, prop):
        field = components[model]["properties"][prop]
        return next(b.get("maximum", b.get("maxItems")) for b in [field, *field.get("anyOf", [])]
                    if b.get("type") in ("integer", "array"))

    assert maximum("ReasonRequest", "n") == 4 and maximum("ReasonRequest", "max_steps") == 4
    assert maximum("ChatCompletionRequest", "max_completion_tokens") == 32
    assert maximum("ReasoningOptions", "beam_width") == 2 and maximum("VerifyRequest", "candidates") == 3
    responses = schema["paths"]["/v1/reason"]["post"]["responses"]
    assert {"400", "401", "413", "429", "503", "504"} <= set(responses)
    assert "Retry-After" in responses["429"]["headers"]


# ---------------------------------------------------------------------------------- served: helpers


def post(url: str, route: str, body, key: str | None = KEY_A, timeout: float = 120, **headers) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return requests.post(f"{url}{route}", data=data, headers={"Content-Type": "application/json", **headers},
                         timeout=timeout)


def still_serving(url: str, key: str | None = KEY_A) -> None:
    """A normal request succeeds: the service kept serving. (On a machine loaded by other work a
    normal request can pass the limited app's 3 s timeout: up to three tries, each 200 or 504.)"""
    for _ in range(3):
        response = post(url, "/v1/reason", {"messages": MESSAGES, "strategy": "best_of_n", "n": 2,
                                            "max_tokens": 8}, key=key)
        assert response.status_code in (200, 504), response.text
        if response.status_code == 200:
            assert len(response.json()["candidates"]) == 2
            return
    raise AssertionError(f"no normal request succeeded in three tries: {response.text}")


def error_of(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["error"]


integration = [pytest.mark.integration, pytest.mark.slow]


# ---------------------------------------------------------------------------------- served: keys and rates


@pytest.mark.integration
@pytest.mark.slow
def test_keys_are_required_and_healthz_stays_open(limited_url):
    assert requests.get(f"{limited_url}/healthz", timeout=30).status_code == 200
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {KEY_A}"}):
        response = requests.get(f"{limited_url}/v1/models", headers=headers, timeout=30)
        assert error_of(response, 401)["code"] == "invalid_api_key"
    error = error_of(post(limited_url, "/v1/reason", {"messages": MESSAGES}, key=None), 401)
    assert error["type"] == "authentication_error"
    for key in LIMITED_KEYS:
        assert requests.get(f"{limited_url}/v1/models", headers={"Authorization": f"Bearer {key}"},
                            timeout=30).status_code == 200
    still_serving(limited_url)


@pytest.mark.integration
@pytest.mark.slow
def test_a_key_over_its_rate_gets_429_with_retry_after(limited_url):
    # 20 requests a second in bursts of 20: many at once leave some of them over the rate.
    def models(key):
        return requests.get(f"{limited_url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)

    time.sleep(1.5)  # a full bucket, whatever ran before
    responses: list[requests.Response] = []
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for _ in range(10):  # batches of 48 at once until the rate is passed (a busy machine sends slower)
            responses += pool.map(models, [KEY_B] * 48)
            if any(r.status_code == 429 for r in responses):
                break
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 429} and statuses.count(200) >= 20, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    error = error_of(refused, 429)
    assert error["type"] == "rate_limit_error" and "serve.limits.requests_per_minute" in error["message"]
    still_serving(limited_url, key=KEY_A)  # the other key was never limited
    time.sleep(int(refused.headers["Retry-After"]) + 0.5)
    still_serving(limited_url, key=KEY_B)  # and this one recovers after Retry-After


# ---------------------------------------------------------------------------------- served: caps

BIG_IMAGE = to_data_url(encode_png(Image.new("RGB", (65, 64), (0, 0, 0))))  # 4160 pixels > 4096


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("route", "body", "param", "cap"), [
    ("/v1/reason", {"n": 65}, "n", "64 (serve.limits.max_n)"),
    ("/v1/reason", {"max_tokens": 481}, "max_tokens", "480 (serve.limits.max_tokens)"),
    ("/v1/reason", {"strategy": "beam", "beam_width": 3}, "beam_width", "2 (serve.limits.max_beam_width)"),
    ("/v1/reason", {"strategy": "beam", "expansions": 3}, "expansions", "2 (serve.limits.max_expansions)"),
    ("/v1/reason", {"strategy": "beam", "max_steps": 4}, "max_steps", "3 (serve.limits.max_steps)"),
    ("/v1/chat/completions", {"n": 65}, "n", "64 (serve.limits.max_n)"),
    ("/v1/chat/completions", {"max_completion_tokens": 1000}, "max_completion_tokens",
     "480 (serve.limits.max_tokens)"),
    ("/v1/chat/completions", {"reasoning": {"strategy": "beam", "expansions": 5}}, "reasoning.expansions",
     "2 (serve.limits.max_expansions)"),
    ("/v1/verify", {"candidates": ["### Answer: 3"] * 5}, "candidates", "4 (serve.limits.max_candidates)"),
    ("/v1/verify", {"candidates": ["a", "b" * 201]}, "candidates[1]", "200 (serve.limits.max_text_chars)"),
    ("/v1/reason", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": BIG_IMAGE}}, {"type": "text", "text": QUESTION}]}]},
     "messages[0].content[0].image_url.url", "4096 (serve.limits.max_image_pixels)"),
    ("/v1/reason", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": URL}}, {"type": "text", "text": "why? " * 41}]}]},
     "messages[0].content", "200 (serve.limits.max_text_chars)"),
])
def test_caps_answer_400_naming_the_field_and_the_cap(limited_url, route, body, param, cap):
    error = error_of(post(limited_url, route, {"messages": MESSAGES, **body}), 400)
    assert (error["param"], error["code"], error["type"]) == (param, "cap_exceeded", "invalid_request_error")
    assert cap in error["message"], error["message"]
    still_serving(limited_url)


@pytest.mark.integration
@pytest.mark.slow
def test_a_body_over_the_cap_is_413_before_it_is_read(limited_url):
    noise = to_data_url(b"\x89PNG" + bytes(70_000))
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": noise}},
                                                      {"type": "text", "text": QUESTION}]}]}
    error = error_of(post(limited_url, "/v1/reason", body), 413)
    assert "cap of 65536 bytes (serve.limits.max_body_bytes)" in error["message"]
    still_serving(limited_url)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("route", "body", "param"), [
    ("/v1/chat/completions", {"n": 2, "temperature": 0}, "n"),
    ("/v1/reason", {"strategy": "best_of_n", "n": 2, "temperature": 0}, "temperature"),
    ("/v1/reason", {"strategy": "beam", "expansions": 2, "temperature": 0}, "temperature"),
])
def test_greedy_sampling_of_several_is_400_not_an_engine_fault(limited_url, route, body, param):
    # vLLM refuses n > 1 at temperature 0 (found by the fuzz run): the ingress says so first.
    error = error_of(post(limited_url, route, {"messages": MESSAGES, **body}), 400)
    assert error["param"] == param and "temperature 0" in error["message"]
    still_serving(limited_url)


@pytest.mark.integration
@pytest.mark.slow
def test_fastapis_own_refusals_are_openai_json_too(limited_url):
    # A body that is not UTF-8 (found by the fuzz run), an unknown path, a wrong method.
    assert error_of(post(limited_url, "/v1/reason", b"\xff\xfe{"), 400)["type"] == "invalid_request_error"
    auth = {"Authorization": f"Bearer {KEY_A}"}
    assert error_of(requests.get(f"{limited_url}/v1/nothing", headers=auth, timeout=30), 404)["message"]
    assert error_of(requests.get(f"{limited_url}/v1/reason", headers=auth, timeout=30), 405)["message"]
    still_serving(limited_url)


@pytest.mark.integration
@pytest.mark.slow
def test_the_openapi_document_states_the_caps(limited_url):
    spec = requests.get(f"{limited_url}/openapi.json", timeout=30).json()
    reason = spec["components"]["schemas"]["ReasonRequest"]["properties"]
    assert next(b["maximum"] for b in reason["n"]["anyOf"] if b.get("type") == "integer") == 64
    assert spec["components"]["schemas"]["VerifyRequest"]["properties"]["candidates"]["maxItems"] == 4


# ---------------------------------------------------------------------------------- served: time and queues

# The caps: about 30,000 tokens (the tiny random model rarely stops early), about the limited app's
# 3 s timeout on a fast machine (it was answered 200 in just under 3 s once), more on a slow one.
HEAVY = {"messages": MESSAGES, "strategy": "majority", "n": 64, "max_tokens": 480, "temperature": 1.0}


@pytest.mark.integration
@pytest.mark.slow
def test_a_request_over_the_timeout_is_504_and_cancelled(limited_url, generator_load):
    # Two heavy requests, the second a second after the first: the Generator works on one request at a
    # time, so the second waits in the ingress's queue (of one) for the first, then takes as long. At
    # least one passes the timeout on any machine where one alone takes more than half of it. (Sent at
    # once, both may be waiting for a replica together, and the second is refused 503: queue full. The
    # engine's load cannot be asked meanwhile: that call would queue too.)
    load = generator_load("limited")
    before = load()["cancelled"]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, limited_url, "/v1/reason", HEAVY)
        time.sleep(1.0)
        second = pool.submit(post, limited_url, "/v1/reason", HEAVY)
        responses = [first.result(), second.result()]
    assert time.perf_counter() - start < 10
    statuses = [r.status_code for r in responses]
    assert 504 in statuses and set(statuses) <= {200, 504}, statuses
    error = error_of(next(r for r in responses if r.status_code == 504), 504)
    assert error["code"] == "request_timeout" and "serve.limits.request_timeout_s" in error["message"]
    wait_until(lambda: load()["cancelled"] > before and load()["running"] == 0, "the engine aborted the request")
    still_serving(limited_url)


@pytest.mark.integration
@pytest.mark.slow
def test_a_full_queue_is_503_with_retry_after_never_a_hang(limited_url):
    # The Generator works on one request and the ingress queues one more: of 8 at once, most are refused
    # at once, and every one is answered (the 3 s timeout bounds those admitted).
    body = {**HEAVY, "n": 4, "max_tokens": 64}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: post(limited_url, "/v1/reason", body, timeout=60), range(8)))
    statuses = [r.status_code for r in responses]
    assert 503 in statuses and set(statuses) <= {200, 503, 504}, statuses
    refused = next(r for r in responses if r.status_code == 503)
    error = error_of(refused, 503)
    assert error["code"] == "queue_full" and refused.headers["Retry-After"] == "1"
    still_serving(limited_url)


# ---------------------------------------------------------------------------------- served: disconnects


def wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def generator_load(reason_url):
    """``generator_load(app)()``: the Generator's engine requests in flight and cancelled (its ``load``)."""
    from ray import serve

    def of(app: str):
        handle = serve.get_deployment_handle("Generator", app_name=app)
        return lambda: handle.load.remote().result(timeout_s=30)

    return of


@pytest.mark.integration
@pytest.mark.slow
def test_a_client_that_disconnects_cancels_its_generation(reason_url, generator_load):
    load = generator_load("reasoner")
    before = load()["cancelled"]
    body = json.dumps({"messages": MESSAGES, "strategy": "majority", "n": 64, "max_tokens": 480,
                       "temperature": 1.0}).encode()
    host, port = reason_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/reason HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: load()["running"] > 0, "the engine works on the request", timeout=30)
    # The socket is closed: Serve cancels the request, the ingress its Generator call, vLLM aborts it.
    wait_until(lambda: load()["running"] == 0, "the engine stopped", timeout=30)
    assert load()["cancelled"] > before
    still_serving(reason_url, key=None)


# ---------------------------------------------------------------------------------- served: metrics


@pytest.mark.integration
@pytest.mark.slow
def test_the_verifiers_metrics_are_exported_where_rays_are(reason_url):
    import ray

    response = post(reason_url, "/v1/reason", {"messages": MESSAGES, "strategy": "best_of_n", "n": 3,
                                               "max_tokens": 8}, key=None)
    assert response.status_code == 200, response.text
    ports = [node["MetricsExportPort"] for node in ray.nodes() if node["Alive"]]
    wanted = {"ray_reasoner_verifier_candidates_scored_total", "ray_reasoner_verifier_scoring_seconds_count",
              "ray_reasoner_verifier_chosen_reward", "ray_reasoner_generator_running_requests"}
    found: set[str] = set()

    def exported() -> bool:
        for port in ports:  # Prometheus' text format on each node's metrics export port
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            found.update(line.split("{")[0] for line in text.splitlines() if line.startswith("ray_reasoner_"))
        return wanted <= found

    wait_until(exported, f"Ray exports {sorted(wanted - found)}", timeout=60)
