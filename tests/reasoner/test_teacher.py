"""Teachers over real HTTP on 127.0.0.1: the ground-truth server behind a fault-injecting proxy."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
from PIL import Image

from reasoner.data.synthetic import SuiteConfig, generate_suite
from reasoner.prompts import ANSWER_MARKER, format_question
from reasoner.teacher import (
    BUDGET_EXHAUSTED,
    Budget,
    DurableBudget,
    GroundTruthTeacher,
    OpenAITeacher,
    SharedBudget,
    Teacher,
    distillation_messages,
    image_data_url,
)
from tests.support.openai_servers import (
    Fault,
    FaultProxy,
    GroundTruthChatServer,
    rationale_table,
    unique_examples,
)


pytestmark = pytest.mark.usefixtures("no_openai_env")


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    return unique_examples(generate_suite(SuiteConfig(num_items=40, seed=0)), limit=12)


@pytest.fixture()
def server(examples):
    with GroundTruthChatServer(rationale_table(examples)) as server:
        yield server


def teacher_at(url: str, **kwargs) -> OpenAITeacher:
    kwargs = {"timeout_s": 5.0, "max_retries": 3, **kwargs}
    return OpenAITeacher("ground-truth", base_url=f"{url}/v1", **kwargs)


def run(coro):
    return asyncio.run(coro)


# --- the request ---------------------------------------------------------------------------------


def test_distillation_messages_send_the_image_inline_and_ask_for_steps(examples):
    mc = next(e for e in examples if e["choices"])
    messages = distillation_messages(mc)
    assert [m["role"] for m in messages] == ["system", "user"]
    image, text = messages[1]["content"]
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")
    assert base64.b64decode(image["image_url"]["url"].split(",", 1)[1]) == mc["image"]
    assert format_question(mc["question"], mc["choices"]) in text["text"]
    assert "step by step, one short step per line" in text["text"]
    assert f'"{ANSWER_MARKER} <answer>", where <answer> is the option\'s letter (A, B, C, D)' in text["text"]
    assert "Hint" not in text["text"], "the teacher is not told the answer by default"
    hinted = distillation_messages(mc, answer_hint=True)[1]["content"][1]["text"]
    assert f"the correct answer is {mc['answers'][0]}" in hinted
    short = next(e for e in examples if e["choices"] is None)
    assert "short answer" in distillation_messages(short)[1]["content"][1]["text"]


def test_image_data_url_keeps_png_and_jpeg_and_reencodes_others():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="JPEG")
    assert image_data_url(buffer.getvalue()).startswith("data:image/jpeg;base64,")
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="BMP")
    url = image_data_url(buffer.getvalue())
    assert url.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (4, 4)


# --- configuration -------------------------------------------------------------------------------


def test_key_and_base_url_come_from_the_environment_at_construction(monkeypatch):
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAITeacher("gpt-4o")
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAITeacher("gpt-4o", base_url="https://api.example.com/v1")
    local = OpenAITeacher("m", base_url="http://127.0.0.1:8000/v1")
    assert local._api_key == "EMPTY" and "EMPTY" not in repr(local)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:9/v1")
    assert OpenAITeacher("m").base_url == "http://localhost:9/v1"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.example.com/v1")
    remote = OpenAITeacher("m")
    assert remote._api_key == "sk-test" and "sk-test" not in repr(remote)
    assert OpenAITeacher("m", api_key="sk-arg", base_url="https://x/v1")._api_key == "sk-arg"


@pytest.mark.parametrize("kwargs, word", [
    ({"max_concurrency": 0}, "max_concurrency"), ({"max_retries": -1}, "max_retries"),
    ({"timeout_s": 0}, "timeout_s"), ({"temperature": 3}, "temperature"), ({"max_tokens": 0}, "max_tokens"),
])
def test_bad_settings_are_refused_by_name(kwargs, word):
    with pytest.raises(ValueError, match=word):
        OpenAITeacher("m", base_url="http://127.0.0.1:1/v1", **kwargs)


def test_budget_counts_requests_and_tokens():
    with pytest.raises(ValueError, match="max_requests"):
        Budget(max_requests=-1)
    budget = Budget(max_requests=2, max_tokens=100)
    assert budget.try_reserve() and budget.try_reserve() and not budget.try_reserve()
    budget = Budget(max_tokens=10)
    assert budget.try_reserve()
    budget.record(10)
    assert budget.exhausted and not budget.try_reserve() and budget.requests == 1


def test_ground_truth_teacher_returns_the_rationale(examples):
    teacher = GroundTruthTeacher()
    assert isinstance(teacher, Teacher)
    replies = run(teacher.generate_many(examples[:3] + [{**examples[0], "rationale": None}]))
    assert [r.text for r in replies[:3]] == [e["rationale"] for e in examples[:3]]
    assert replies[3].text is None and "no ground-truth rationale" in replies[3].error


# --- over HTTP -----------------------------------------------------------------------------------


def test_replies_come_back_in_input_order_with_usage(server, examples):
    teacher = teacher_at(server.url, max_concurrency=4)
    assert isinstance(teacher, Teacher)
    replies = run(teacher.generate_many(examples))
    assert [r.text for r in replies] == [e["rationale"] for e in examples]
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 and r.retries == 0 for r in replies)
    assert teacher.budget.requests == len(examples)
    assert teacher.budget.tokens == sum(r.prompt_tokens + r.completion_tokens for r in replies)
    body = server.requests[0]
    assert body["model"] == "ground-truth" and body["temperature"] == 0 and body["max_tokens"] == 512
    # The same teacher serves a second event loop (a new client is made for it).
    assert run(teacher.generate(examples[0])).text == examples[0]["rationale"]


@pytest.mark.parametrize("fault, wait", [
    (Fault.rate_limit(retry_after=1), 1.0),
    (Fault.rate_limit(retry_after=None, retry_after_ms=1500), 1.5),
    (Fault.rate_limit(retry_after=1, retry_after_ms=1200), 1.2),  # the milliseconds win
], ids=["retry-after", "retry-after-ms", "both"])
def test_rate_limit_is_retried_after_the_wait_the_server_asks(server, examples, fault, wait):
    with FaultProxy(server.url, [fault]) as proxy:
        reply = run(teacher_at(proxy.url).generate(examples[0]))
    assert reply.text == examples[0]["rationale"] and reply.retries == 1
    assert [e.status for e in proxy.events] == [429, 200]
    gap = proxy.events[1].arrived - proxy.events[0].responded
    assert wait <= gap < wait + 1.0, f"retried {gap:.3f} s after the 429, expected {wait} s"


@pytest.mark.parametrize("faults", [
    [Fault.error(500), Fault.error(503)],
    [Fault.drop()],
    [Fault.stall(3.0)],
], ids=["5xx", "dropped-connection", "stall-past-timeout"])
def test_server_errors_and_transport_failures_are_retried(server, examples, faults):
    with FaultProxy(server.url, faults) as proxy:
        reply = run(teacher_at(proxy.url, timeout_s=1.0).generate(examples[0]))
    assert reply.text == examples[0]["rationale"], reply.error
    assert reply.retries == len(faults) and proxy.count == len(faults) + 1
    assert len(server.requests) == 1, "only the final attempt reaches the server"


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_client_errors_are_not_retried(server, examples, status):
    with FaultProxy(server.url, [Fault.error(status)]) as proxy:
        reply = run(teacher_at(proxy.url).generate(examples[0]))
    assert reply.text is None and f"(HTTP {status})" in reply.error and not reply.budget_exhausted
    assert proxy.count == 1 and not server.requests


def test_an_error_reply_after_the_retries_run_out(server, examples):
    with FaultProxy(server.url, [Fault.error(500)] * 3) as proxy:
        reply = run(teacher_at(proxy.url, max_retries=2).generate(examples[0]))
    assert reply.text is None and reply.error.startswith("InternalServerError (HTTP 500)")
    assert proxy.count == 3


def test_request_budget_stops_sending(server, examples):
    teacher = teacher_at(server.url, max_concurrency=2, budget=Budget(max_requests=3))
    replies = run(teacher.generate_many(examples[:6]))
    assert sum(r.ok for r in replies) == 3 and len(server.requests) == 3
    spent = [r for r in replies if not r.ok]
    assert all(r.budget_exhausted and r.error == BUDGET_EXHAUSTED for r in spent)
    assert not run(teacher.generate(examples[0])).ok, "a spent budget stays spent"


def test_token_budget_stops_sending(server, examples):
    teacher = teacher_at(server.url, max_concurrency=1, budget=Budget(max_tokens=1))
    replies = run(teacher.generate_many(examples[:4]))
    assert [r.budget_exhausted for r in replies] == [False, True, True, True]
    assert len(server.requests) == 1


def test_concurrency_is_bounded(examples):
    with GroundTruthChatServer(rationale_table(examples), delay_s=0.3) as server:
        replies = run(teacher_at(server.url, max_concurrency=3).generate_many(examples[:9]))
    assert all(r.ok for r in replies)
    assert server.max_in_flight == 3


# --- what stays pending, and budgets that outlive a process -------------------------------------


@pytest.mark.parametrize("faults, transient", [
    ([Fault.error(500)] * 2, True), ([Fault.rate_limit(retry_after=1)] * 2, True),
    ([Fault.stall(2.0)] * 2, True), ([Fault.drop()] * 2, True),
    ([Fault.error(401)], True), ([Fault.error(404)], True),  # a key or a model to fix, then rerun
    ([Fault.error(400)], False), ([Fault.error(422)], False),  # the request itself: final
], ids=["5xx", "429", "stall", "drop", "401", "404", "400", "422"])
def test_transport_failures_after_the_retries_leave_the_example_pending(server, examples, faults, transient):
    with FaultProxy(server.url, faults) as proxy:
        reply = run(teacher_at(proxy.url, max_retries=1, timeout_s=1.0).generate(examples[0]))
    assert reply.text is None and reply.transient is transient and reply.pending is transient
    assert not reply.budget_exhausted and proxy.count == len(faults)


def test_durable_budget_is_spent_across_restarts(tmp_path):
    from reasoner.rundir import RunDir

    rundir = RunDir(str(tmp_path / "run"))
    budget = DurableBudget(rundir, "distill", max_requests=3)
    assert budget.try_reserve() and budget.try_reserve()
    budget.record(40)
    assert rundir.read_json("_budget", "distill.json") == {
        "stage": "distill", "requests": 2, "tokens": 40, "max_requests": 3, "max_tokens": None}
    # A restarted process (or a rerun) reads what was spent: one request left.
    again = DurableBudget(rundir, "distill", max_requests=3)
    assert (again.requests, again.tokens) == (2, 40)
    assert again.try_reserve() and not again.try_reserve()
    assert rundir.read_json("_budget", "distill.json")["requests"] == 3
    # The limits are the caller's: a higher one lets the difference through; tokens count too.
    more = DurableBudget(rundir, "distill", max_requests=5, max_tokens=41)
    assert more.try_reserve()
    more.record(1)
    assert more.exhausted and not more.try_reserve() and more.requests == 4


def test_durable_budget_does_not_count_a_request_it_could_not_write_down(tmp_path):
    class Unwritable:
        def read_json(self, *parts):
            return None

        def write_json(self, data, *parts):
            raise OSError(28, "No space left on device")

    budget = DurableBudget(Unwritable(), "distill", max_requests=2)
    with pytest.raises(OSError, match="No space"):
        budget.try_reserve()
    assert budget.requests == 0


def test_a_shared_budget_is_spent_through_its_holder(server, examples):
    class Method:  # what SharedBudget uses of a Ray actor method: .remote(...) returns an awaitable
        def __init__(self, fn):
            self.fn = fn

        def remote(self, *args):
            future = asyncio.get_running_loop().create_future()
            future.set_result(self.fn(*args))
            return future

    holder = Budget(max_requests=3)
    handle = type("Handle", (), {})()
    handle.try_reserve, handle.record = Method(holder.try_reserve), Method(holder.record)
    teachers = [teacher_at(server.url, budget=SharedBudget(handle)) for _ in range(2)]
    replies = run(teachers[0].generate_many(examples[:2])) + run(teachers[1].generate_many(examples[2:4]))
    assert [r.ok for r in replies] == [True, True, True, False] and replies[3].budget_exhausted
    assert holder.requests == 3 and holder.tokens == sum(r.prompt_tokens + r.completion_tokens for r in replies)
