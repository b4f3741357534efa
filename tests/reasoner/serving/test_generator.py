"""reasoner.serving.generator with a fake async engine: cancellation is counted (and reaches the
engine's generator, where vLLM aborts), and an input the engine refuses is ``InputRejected``."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from PIL import Image

from reasoner.serving.generator import Generation, InputRejected, SamplingOptions

IMAGE = Image.new("RGB", (32, 32))


class FakeEngine:
    """Yields a token every ``step_s``; records generators closed by cancellation (vLLM aborts there)."""

    def __init__(self, steps: int = 5, step_s: float = 0.01, refuse: bool = False) -> None:
        self.steps, self.step_s, self.refuse = steps, step_s, refuse
        self.aborted: list[str] = []

    async def generate(self, engine_input, params, request_id):
        if self.refuse:
            raise ValueError("The decoder prompt (length 9999) is longer than the maximum model length of 512.")
        try:
            for i in range(self.steps):
                await asyncio.sleep(self.step_s)
                completion = SimpleNamespace(index=0, text="x" * (i + 1), token_ids=list(range(i + 1)),
                                             finish_reason="length" if i == self.steps - 1 else None,
                                             stop_reason=None, logprobs=None)
                yield SimpleNamespace(outputs=[completion])
        except asyncio.CancelledError:
            self.aborted.append(request_id)
            raise

    def shutdown(self) -> None:
        pass


@pytest.fixture
def generation(tiny_model_dir, monkeypatch):
    def make(engine: FakeEngine) -> Generation:
        return Generation(str(tiny_model_dir), engine_factory=lambda model_dir, **kwargs: engine)

    return make


def test_finished_requests_are_not_counted_as_cancelled(generation) -> None:
    g = generation(FakeEngine())
    result = asyncio.run(g.generate(IMAGE, "How many?", SamplingOptions(max_tokens=5), ["", "A"]))
    assert [o[0]["text"] for o in result["outputs"]] == ["xxxxx", "xxxxx"]
    assert (g.running, g.cancelled) == (0, 0)


def test_a_cancelled_request_aborts_in_the_engine_and_is_counted(generation) -> None:
    engine = FakeEngine(steps=1000)
    g = generation(engine)

    async def cancel_midway():
        task = asyncio.create_task(g.generate(IMAGE, "How many?", SamplingOptions(), ["", "A"]))
        await asyncio.sleep(0.05)
        assert g.running == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    assert (g.running, g.cancelled, len(engine.aborted)) == (0, 2, 2)


def test_a_stream_whose_client_leaves_is_cancelled(generation) -> None:
    engine = FakeEngine(steps=1000)
    g = generation(engine)

    async def leave_after_two():
        task = asyncio.current_task()
        stream = g.stream(IMAGE, "How many?", SamplingOptions())
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 2:
                break
        await stream.aclose()
        return task

    asyncio.run(leave_after_two())
    assert (g.running, g.cancelled) == (0, 1)


def test_an_input_the_engine_refuses_is_input_rejected(generation) -> None:
    g = generation(FakeEngine(refuse=True))
    with pytest.raises(InputRejected, match="maximum model length"):
        asyncio.run(g.generate(IMAGE, "How many?", SamplingOptions(), [""]))
    assert g.running == 0 and isinstance(InputRejected("x"), ValueError)
