"""The engine deployments of the reasoning API: ``Generator`` (vLLM's async engine over the generator
model) and ``Verifier`` (the DPO model's implicit reward against its reference), thin Serve wrappers
of ``reasoner.serving``; ``serve_apps.reason`` binds them behind its ingress. Each records its
metrics (``reasoner.serving.metrics``); an input its engine refuses is ``InputRejected`` (a 400).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

from ray import serve

from reasoner.serving.generator import InputRejected


@dataclass(frozen=True)
class ModelSource:
    """A model to load on the replica: a run's artifact (``run_dir`` set) or a local directory."""

    path: str
    run_dir: str | None = None

    def open(self, stack: contextlib.ExitStack, cache_dir: str) -> str:
        """A local directory vLLM loads (a LoRA adapter merged into its base), held open by ``stack``."""
        if self.run_dir is None:
            return self.path
        from reasoner.rundir import RunDir
        from reasoner.training.export import engine_model_dir

        return stack.enter_context(engine_model_dir(RunDir(self.run_dir), self.path, os.path.expanduser(cache_dir)))


@serve.deployment(name="Generator")
class Generator:
    """One vLLM async engine over the generator model."""

    def __init__(self, source: ModelSource, engine: dict[str, Any], cache_dir: str) -> None:
        from reasoner.serving.generator import Generation
        from reasoner.serving.metrics import GeneratorMetrics

        self._stack = contextlib.ExitStack()
        self.generation = Generation(source.open(self._stack, cache_dir), engine)
        self.metrics = GeneratorMetrics()
        self._cancelled_reported = 0

    def _report(self) -> None:
        cancelled = self.generation.cancelled
        self.metrics.update(self.generation.running, cancelled - self._cancelled_reported)
        self._cancelled_reported = cancelled

    async def generate(self, image, prompt: str, options, prefixes: list[str]) -> dict:
        try:
            return await self.generation.generate(image, prompt, options, prefixes)
        finally:
            self._report()

    async def stream(self, image, prompt: str, options):
        try:
            async for item in self.generation.stream(image, prompt, options):
                yield item
        finally:
            self._report()

    def load(self) -> dict[str, int]:
        """Engine requests in flight on this replica and those cancelled so far (also exported as metrics)."""
        return {"running": self.generation.running, "cancelled": self.generation.cancelled}

    def __del__(self) -> None:
        generation = getattr(self, "generation", None)
        if generation is not None:
            generation.close()
            self._stack.close()


@serve.deployment(name="Verifier")
class Verifier:
    """The policy (and reference) scorers of the verifier; see ``reasoner.serving.verifier``."""

    def __init__(self, policy: ModelSource, reference: ModelSource | None, beta: float | None, backend: str,
                 engine: dict[str, Any], cache_dir: str) -> None:
        from reasoner.models.scorer import make_scorer
        from reasoner.serving.verifier import Verifier as Scoring

        self._stack = contextlib.ExitStack()
        policy_scorer = make_scorer(policy.open(self._stack, cache_dir), backend, engine=engine)
        reference_scorer = None if reference is None else make_scorer(reference.open(self._stack, cache_dir),
                                                                      backend, engine=engine)
        self.verifier = Scoring(policy_scorer, reference_scorer, beta)
        from reasoner.serving.metrics import VerifierMetrics

        self.metrics = VerifierMetrics()

    async def score(self, image, prompt: str, texts: list[str], complete: list[bool], beta: float | None):
        start = time.perf_counter()
        try:
            # The scorers block: run them off the event loop (the Verifier serialises them itself).
            verdicts = await asyncio.to_thread(self.verifier.score, image, prompt, texts, complete, beta)
        except ValueError as e:  # the engine's refusal of an input (e.g. longer than max_model_len)
            raise InputRejected(str(e), "messages") from None
        self.metrics.scored(self.verifier.kind, len(texts), time.perf_counter() - start)
        return self.verifier.kind, verdicts
