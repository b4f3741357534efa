"""Sampling throughput: the sample stage vs bare vLLM vs transformers, same prompts, one run.

    python benchmarks/sampling.py                              # small preset, one default part: 64 questions x 32
    python benchmarks/sampling.py --preset tiny --questions 8 --samples 8  # a quick check
    python benchmarks/sampling.py --skip c --run-dir /tmp/bench-sampling

The script builds a run directory (``jobs.make_examples`` on a small synthetic suite, then
``jobs.init_model``: the preset with random weights as ``models/base``), starts a local Ray
cluster (2 CPUs) and samples ``--questions`` train questions (``sample.max_questions``) ``--samples`` times each,
at most ``--max-tokens`` tokens a candidate, three ways, one after the other, each engine freed
before the next starts:

(a) the real stage, ``jobs.sample.main``: Ray Data ``read_parquet`` -> ``map_batches(SampleWorker,
    ActorPoolStrategy)``. ``jobs.sample.SampleWorker`` is swapped for a subclass that only
    records when its process started, when its constructor (processor + vLLM engine) and each
    batch (and the ``llm.generate`` inside it) start and end. Start-up is from the stage's start
    until the last actor is ready (Ray Data start, actor process, imports, engine), as a warm-up
    run would measure it; sampling is the rest (batches: prompts, generate, candidate rows and
    answer scores, Parquet writes; then Ray Data teardown, the count and manifest). Two other
    splits are printed beside it: only the engine construction as start-up (actor spawn counted
    as sampling), and the time inside the batches only;
(b) bare ``vllm.LLM.generate`` in this process: start-up is building a ``Sampler`` (the same
    processor and ``make_vllm_engine(**engine_kwargs(engine))`` the actor builds); sampling is one
    ``generate`` call over all questions with ``Sampler.requests``, what ``Sampler.sample`` sends
    (chat-templated token ids and the decoded image; n, temperature, top_p, max_tokens,
    per-question seed, logprobs=0), built before the clock starts;
(c) transformers ``generate``: start-up is ``load_model`` + ``load_processor``; sampling is the
    processor calls and ``generate(do_sample=True, num_return_sequences=N, max_new_tokens=...)``
    over batches of ``--hf-batch`` questions of one temperature (top_k off, as in vLLM).

Generation lengths: the stage cannot set ``ignore_eos`` (``Sampler.sampling_params`` builds the
SamplingParams from ``SampleConfig``, which has no such field), so no leg sets it: every leg makes
exactly questions x N candidates, but a candidate ends at EOS or ``--max-tokens``. The tokens each
leg made are counted (vLLM's ``token_ids``, the artifact's ``num_tokens``, transformers' tokens up
to and including EOS) and tokens/s is reported beside candidates/s. (a) and (b) use the same seeds
and inputs, so their candidates should match: the report says how many do.

Chunked prefill is off on CPU in both (a) and (b) (``reasoner.models.engine_defaults``: vLLM 0.32's
CPU build kills the engine when a step splits the prefill of a seeded request);
``--chunked-prefill`` turns it on, to see that crash.

The engines' environment is the default config's ``engine`` section (``engine_env``) (vLLM's CPU settings, and
``OMP_NUM_THREADS=2``, which Ray would otherwise set to the actor's 1 CPU): the actors' runtime_env
in (a), and this process's environment for (b) (values already in the environment win).
``--engine-env KEY=VALUE`` adds to or changes (a)'s. Target: a/b >= 0.8 of candidates/s.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("benchmarks.sampling")

TARGET_A_OVER_B = 0.8
CORES = len(os.sched_getaffinity(0))
LEGS = {"a": "(a) Ray Data stage", "b": "(b) vllm.LLM.generate", "c": "(c) transformers generate"}


@dataclass
class Leg:
    """One leg's measurements."""

    name: str
    startup_s: float
    sampling_s: float
    candidates: int
    tokens: int
    load_before: float
    # CPU seconds used by the generating processes (engine core and workers, or this process)
    # during the generate calls, and those calls' wall time: their ratio over the cores shows
    # how much of the machine the leg got.
    generate_cpu_s: float = math.nan
    generate_wall_s: float = math.nan
    load_after: float = math.nan
    notes: list[str] = field(default_factory=list)
    texts: dict[tuple[str, int], str] = field(default_factory=dict, repr=False)
    # Other splits of the same run into start-up and sampling: (label, start-up s or None, sampling s).
    variants: list[tuple[str, float | None, float]] = field(default_factory=list)

    @property
    def cpu_share(self) -> float:
        return self.generate_cpu_s / (self.generate_wall_s * CORES) if self.generate_wall_s > 0 else math.nan

    @property
    def candidates_per_s(self) -> float:
        return self.candidates / self.sampling_s if self.sampling_s > 0 else math.nan

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.sampling_s if self.sampling_s > 0 else math.nan


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/sampling.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("tiny", "small"), default="small", help="model preset (default small)")
    parser.add_argument("--questions", type=int, default=64,
                        help="train questions sampled (default 64: one part of the stage's default size)")
    parser.add_argument("--samples", type=int, default=32, help="candidates per question, N (default 32, the stage's)")
    parser.add_argument("--max-tokens", type=int, default=64, help="most tokens a candidate may have (default 64)")
    parser.add_argument("--engines", type=int, default=1, help="(a): vLLM engine actors (default 1)")
    parser.add_argument("--questions-per-part", type=int, default=None,
                        help="(a): sample.questions_per_part, questions per Ray Data batch (default: the config's, 64)")
    parser.add_argument("--chunked-prefill", action="store_true",
                        help="(a), (b): pass engine.args={enable_chunked_prefill: true}; off by default on "
                             "CPU, where vLLM 0.32 crashes ('CPU Generator does not use offset') when it "
                             "splits the prefill of a seeded request")
    parser.add_argument("--engine-env", action="append", default=[], metavar="KEY=VALUE",
                        help="(a): an extra engine.env entry (the actors' runtime_env), e.g. "
                             "RAY_worker_niceness=0; repeat for more")
    parser.add_argument("--hf-batch", type=int, default=16,
                        help="(c): questions per transformers generate call (default 16, i.e. 16 x N sequences)")
    parser.add_argument("--run-dir", default=None,
                        help="run directory to build (or reuse: examples and model are kept, candidates redone); "
                             "default a temporary directory, removed at the end")
    parser.add_argument("--skip", choices=tuple(LEGS), action="append", default=[],
                        help="leave out a leg (a, b or c); repeat to leave out more")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    for name in ("questions", "samples", "max_tokens", "engines", "hf_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for item in args.engine_env:
        if "=" not in item or not item.split("=", 1)[0]:
            parser.error(f"--engine-env takes KEY=VALUE, got {item!r}")
    if args.questions_per_part is not None and args.questions_per_part < 1:
        parser.error(f"--questions-per-part must be at least 1, got {args.questions_per_part}")
    return args


# ---------------------------------------------------------------------------------------------- setup


def run_config(args: argparse.Namespace, run_dir: str):
    """The default config on ``run_dir``: a suite just big enough, the preset, the sample section
    (the engine section's ``env`` with ``--engine-env``'s entries)."""
    from jobs._common import DEFAULT_CONFIG
    from reasoner.config import load_run_config
    from reasoner.data.synthetic import SuiteConfig, split_sizes

    num_items = math.ceil(args.questions / 0.8)
    while split_sizes(SuiteConfig(num_items=num_items))["train"] < args.questions:
        num_items += 1
    overrides = [
        f"run_dir={run_dir}", f"examples.synthetic.num_items={num_items}", "examples.items_per_part=256",
        f"model.preset={args.preset}", "sample.model=models/base", "sample.split=train",
        f"sample.max_questions={args.questions}", f"sample.num_samples={args.samples}",
        f"sample.max_tokens={args.max_tokens}", f"sample.num_engines={args.engines}",
    ]
    if args.chunked_prefill:
        overrides.append("engine.args={enable_chunked_prefill: true}")
    if args.questions_per_part is not None:
        overrides.append(f"sample.questions_per_part={args.questions_per_part}")
    if args.engine_env:
        env = {**load_run_config(DEFAULT_CONFIG, overrides).engine.env,
               **dict(item.split("=", 1) for item in args.engine_env)}
        overrides.append("engine.env={" + ", ".join(f"{k}: '{v}'" for k, v in env.items()) + "}")
    return load_run_config(DEFAULT_CONFIG, overrides)


def prepare_run(config) -> tuple[str, list[dict]]:
    """Make the examples and the base model (skipped if already complete); the questions to sample."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from jobs import init_model, make_examples
    from jobs._common import select_ids
    from reasoner.data.examples import example_problem
    from reasoner.rundir import RunDir

    make_examples.main(config)
    init_model.main(config)
    run = RunDir(config.run_dir)
    ids = select_ids(run, config.sample.split, config.sample.max_questions)
    table = run.read_table("examples")
    rows = table.filter(pc.is_in(table.column("id"), value_set=pa.array(ids))).to_pylist()
    examples = sorted((r for r in rows if example_problem(r) is None), key=lambda r: r["id"])
    if len(examples) != len(ids):
        logger.warning("%d of %d questions are unusable and left out of (b) and (c)", len(ids) - len(examples), len(ids))
    return run.local_path(config.sample.model, cache_dir=os.path.expanduser(config.cache_dir)), examples


def engine_processes() -> list:
    """vLLM's processes (engine cores, workers) among this process's descendants (psutil.Process)."""
    import psutil

    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.name().startswith("VLLM") or "EngineCore" in p.name():
                found.append(p)
        except psutil.Error:
            continue
    return found


def wait_exit(procs: list, timeout_s: float) -> tuple[str, list]:
    """Wait up to ``timeout_s`` for ``procs`` to exit: what happened (for the report), those left."""
    import psutil

    if not procs:
        return "none running", []
    start = time.monotonic()
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    if alive:
        return f"{len(alive)} of {len(procs)} still running {timeout_s:.0f} s later", alive
    return f"all {len(procs)} exited within {time.monotonic() - start:.1f} s", []


def free_engines(procs: list, timeout_s: float) -> str:
    """``wait_exit``, then end what is left: only this run's engine processes are passed here."""
    import psutil

    message, alive = wait_exit(procs, timeout_s)
    for p in alive:
        try:
            p.terminate()
        except psutil.Error:
            continue
    for p in psutil.wait_procs(alive, timeout=5)[1]:
        try:
            p.kill()
        except psutil.Error:
            continue
    if alive:
        logger.warning("ended engine processes still running %.0f s later: %s", timeout_s, [p.pid for p in alive])
        message += f", ended (pids {[p.pid for p in alive]})"
    return message


def tree_cpu_s() -> float:
    """CPU seconds (user + system) of this process and its live descendants so far."""
    import psutil

    me, total = psutil.Process(), 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


# ---------------------------------------------------------------------------------------------- (a)


def timed_worker_class(timings_dir: str):
    """``SampleWorker`` that also records when its construction, batches and generate calls run.

    The records go to ``<timings_dir>/worker-<pid>.json`` (wall-clock times, so the driver can
    line them up with its own); sampling itself is the library's code, untouched.
    """
    from reasoner.sampling import SampleWorker

    class TimedSampleWorker(SampleWorker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            import psutil

            self._timing = {"pid": os.getpid(), "init_start": time.time(), "calls": [], "generate_s": 0.0,
                            "generate_cpu_s": 0.0,
                            "process_start": psutil.Process().create_time(), "nice": os.nice(0)}
            super().__init__(*args, **kwargs)
            self._timing["init_end"] = time.time()
            generate = self.sampler.llm.generate

            def timed_generate(*a: Any, **k: Any):
                start, cpu = time.perf_counter(), tree_cpu_s()
                try:
                    return generate(*a, **k)
                finally:
                    self._timing["generate_s"] += time.perf_counter() - start
                    self._timing["generate_cpu_s"] += tree_cpu_s() - cpu

            self.sampler.llm.generate = timed_generate
            self._dump()

        def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
            start, generate_before = time.time(), self._timing["generate_s"]
            out = super().__call__(batch)
            self._timing["calls"].append({"start": start, "end": time.time(), "questions": len(batch["id"]),
                                          "generate_s": self._timing["generate_s"] - generate_before})
            self._dump()
            return out

        def _dump(self) -> None:
            os.makedirs(timings_dir, exist_ok=True)
            Path(timings_dir, f"worker-{os.getpid()}.json").write_text(json.dumps(self._timing))

    return TimedSampleWorker


def leg_stage(config, examples: list[dict]) -> Leg:
    """(a): ``jobs.sample.main`` on the local Ray cluster, timed around and inside the actors."""
    import shutil

    from jobs import sample
    from reasoner.rundir import RunDir

    run = RunDir(config.run_dir)
    run.delete("candidates")  # a reused run directory: sample again
    run.delete("rejected/sample")
    timings_dir = os.path.join(config.run_dir, "_benchmark_timings")
    shutil.rmtree(timings_dir, ignore_errors=True)
    load = os.getloadavg()[0]
    original = sample.SampleWorker
    sample.SampleWorker = timed_worker_class(timings_dir)
    try:
        t0 = time.time()
        sample.main(config)
        t1 = time.time()
    finally:
        sample.SampleWorker = original
    workers = [json.loads(p.read_text()) for p in sorted(Path(timings_dir).glob("worker-*.json"))]
    if not workers:
        raise RuntimeError(f"no actor timings in {timings_dir}: did the stage sample anything?")
    engine_s = max(w["init_end"] - w["init_start"] for w in workers)
    ready = max(w["init_end"] for w in workers)
    calls = [c for w in workers for c in w["calls"]]
    table = run.read_table("candidates", columns=["id", "sample_index", "text", "num_tokens"])
    rows = table.to_pylist()
    leg = Leg(LEGS["a"], ready - t0, t1 - ready, len(rows), sum(r["num_tokens"] for r in rows), load,
              generate_cpu_s=sum(w["generate_cpu_s"] for w in workers), load_after=os.getloadavg()[0])
    leg.texts = {(r["id"], r["sample_index"]): r["text"] for r in rows}
    first_init = min(w["init_start"] for w in workers)
    first_process = min(w["process_start"] for w in workers)
    step_s = (run.manifest("candidates") or {}).get("timings_s", {})
    last_end = max((c["end"] for c in calls), default=max(w["init_end"] for w in workers))
    call_s, generate_s = sum(c["end"] - c["start"] for c in calls), sum(c["generate_s"] for c in calls)
    sizes = sorted(c["questions"] for c in calls)
    leg.generate_wall_s = generate_s
    leg.variants += [("(a) only engine as start-up", engine_s, (t1 - t0) - engine_s),
                     ("(a) batches only", None, call_s)]
    leg.notes += [
        f"start-up = stage start until the actor is ready (Ray Data start, actor process, imports, engine: "
        f"{ready - t0:.2f} s); sampling = the rest ({t1 - ready:.2f} s)",
        f"stage wall time {t1 - t0:.2f} s (its own steps: {step_s}), of which:",
        f"  before the first actor's construction: {first_init - t0:.2f} s (plan, Ray Data start; the actor's "
        f"process started at {first_process - t0:+.2f} s, so {first_init - max(first_process, t0):.2f} s of Ray "
        f"worker start-up and imports before the constructor ran)",
        f"  actor construction (processor + vLLM engine, longest of {len(workers)}): {engine_s:.2f} s",
        f"  in SampleWorker.__call__: {call_s:.2f} s over {len(calls)} batch(es) of {sizes} questions "
        f"(llm.generate {generate_s:.2f} s; prompts, rows, Parquet write {call_s - generate_s:.2f} s)",
        f"  after the last batch (Ray Data teardown, count, manifest): {t1 - last_end:.2f} s",
    ]
    if len(workers) == 1:
        leg.notes.append(f"  unaccounted (actor ready -> first batch, gaps between batches): "
                         f"{(t1 - t0) - (first_init - t0) - engine_s - call_s - (t1 - last_end):.2f} s")
    leg.notes.append(f"actor niceness {sorted({w['nice'] for w in workers})} (Ray lowers its workers' priority; "
                     f"this process: {os.nice(0)})")
    n_examples = len(examples)
    if len({r["id"] for r in rows}) != n_examples:
        leg.notes.append(f"warning: candidates for {len({r['id'] for r in rows})} questions, expected {n_examples}")
    return leg


# ---------------------------------------------------------------------------------------------- (b)


def leg_vllm(config, model_dir: str, examples: list[dict]) -> Leg:
    """(b): one ``vllm.LLM.generate`` call with the inputs and SamplingParams the stage builds."""
    from reasoner.sampling import Sampler

    load = os.getloadavg()[0]
    start = time.perf_counter()
    from reasoner.models.engine import engine_kwargs

    sampler = Sampler(model_dir, config.sample, engine_kwargs(config.engine))  # processor + make_vllm_engine
    startup = time.perf_counter() - start
    try:
        _, inputs, params = sampler.requests(examples)
        logger.info("(b) generate: %d questions x N=%d ...", len(inputs), config.sample.num_samples)
        start, cpu = time.perf_counter(), tree_cpu_s()
        outputs = sampler.llm.generate(inputs, params, use_tqdm=False)
        sampling, cpu = time.perf_counter() - start, tree_cpu_s() - cpu
        logger.info("(b) generate done in %.2f s", sampling)
    finally:
        sampler.close()
        del sampler
    completions = [(ex["id"], i, o) for ex, out in zip(examples, outputs) for i, o in enumerate(out.outputs)]
    leg = Leg(LEGS["b"], startup, sampling, len(completions), sum(len(o.token_ids) for _, _, o in completions), load,
              generate_cpu_s=cpu, generate_wall_s=sampling, load_after=os.getloadavg()[0])
    leg.texts = {(qid, i): o.text for qid, i, o in completions}
    leg.notes.append(f"start-up = Sampler(...) (processor + vLLM engine) {startup:.2f} s; "
                     f"sampling = one generate call over {len(examples)} questions")
    return leg


# ---------------------------------------------------------------------------------------------- (c)


def leg_transformers(config, model_dir: str, examples: list[dict], batch_questions: int) -> Leg:
    """(c): transformers ``generate`` with sampling, N return sequences a question, in batches."""
    import torch

    from reasoner.models import load_model, load_processor
    from reasoner.models.inputs import format_prompt, load_image, tokenizer_of
    from reasoner.prompts import build_prompt

    section = config.sample
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    model, processor = load_model(model_dir), load_processor(model_dir)
    startup = time.perf_counter() - start
    tokenizer = tokenizer_of(processor)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # One temperature a generate call, as the stage's per-question SamplingParams.
    groups: dict[float, list[dict]] = {}
    for ex in examples:
        groups.setdefault(section.mc_temperature if ex["metric"] == "mc" else section.temperature, []).append(ex)
    candidates = tokens = calls = 0
    texts: dict[tuple[str, int], str] = {}
    torch.manual_seed(section.seed)
    logger.info("(c) generate: %d questions x N=%d ...", len(examples), section.num_samples)
    start, cpu = time.perf_counter(), tree_cpu_s()
    with torch.inference_mode():
        for temperature, group in groups.items():
            for k in range(0, len(group), batch_questions):
                batch = group[k : k + batch_questions]
                prompts = [format_prompt(processor, build_prompt(ex["question"], ex.get("choices"), "cot"))
                           for ex in batch]
                inputs = processor(images=[load_image(ex["image"]) for ex in batch], text=prompts,
                                   add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt")
                sampling_kwargs = (dict(do_sample=True, temperature=temperature, top_p=section.top_p, top_k=0)
                                   if temperature > 0 else dict(do_sample=False))
                out = model.generate(**inputs, **sampling_kwargs, num_return_sequences=section.num_samples,
                                     max_new_tokens=section.max_tokens, pad_token_id=pad, eos_token_id=eos)
                calls += 1
                new = out[:, inputs["input_ids"].shape[1] :].tolist()
                for row, ids in enumerate(new):
                    n = ids.index(eos) + 1 if eos in ids else len(ids)
                    ex = batch[row // section.num_samples]
                    texts[(ex["id"], row % section.num_samples)] = tokenizer.decode(ids[:n], skip_special_tokens=True)
                    tokens += n
                candidates += len(new)
    sampling, cpu = time.perf_counter() - start, tree_cpu_s() - cpu
    logger.info("(c) generate done in %.2f s", sampling)
    del model
    leg = Leg(LEGS["c"], startup, sampling, candidates, tokens, load, texts=texts, generate_cpu_s=cpu,
              generate_wall_s=sampling, load_after=os.getloadavg()[0])
    leg.notes.append(f"start-up = load_model + load_processor {startup:.2f} s; sampling = {calls} generate call(s) "
                     f"of <= {batch_questions} questions x {section.num_samples} sequences, torch threads {threads}")
    return leg


# ---------------------------------------------------------------------------------------------- report


def report(args: argparse.Namespace, legs: dict[str, Leg], model_info: str, failed: dict[str, str]) -> str:
    lines = [
        "",
        f"sampling benchmark: preset {args.preset} ({model_info}), {args.questions} questions x N={args.samples}, "
        f"max_tokens {args.max_tokens}, engines {args.engines}, no ignore_eos (tokens counted), "
        f"chunked prefill {'on' if args.chunked_prefill else 'off (the CPU default)'}"
        + (f", extra engine_env for (a): {', '.join(args.engine_env)}" if args.engine_env else ""),
        "",
        f"{'leg':<28}{'start-up s':>11}{'sampling s':>11}{'candidates':>11}{'cand/s':>8}{'tokens':>8}"
        f"{'tokens/s':>9}{'load1':>12}{'cpu':>6}",
    ]
    for leg in legs.values():
        load = f"{leg.load_before:.1f}->{leg.load_after:.1f}"
        lines.append(f"{leg.name:<28}{leg.startup_s:>11.2f}{leg.sampling_s:>11.2f}{leg.candidates:>11d}"
                     f"{leg.candidates_per_s:>8.1f}{leg.tokens:>8d}{leg.tokens_per_s:>9.0f}{load:>12}"
                     f"{leg.cpu_share:>6.0%}")
    for leg in legs.values():
        for label, startup, sampling in leg.variants:
            startup_text = "-" if startup is None else f"{startup:.2f}"
            lines.append(f"{label:<28}{startup_text:>11}{sampling:>11.2f}{leg.candidates:>11d}"
                         f"{leg.candidates / sampling:>8.1f}{leg.tokens:>8d}{leg.tokens / sampling:>9.0f}")
    for key, error in failed.items():
        lines.append(f"{LEGS[key]:<28}FAILED: {error}")
    lines.append(f"(load1: the 1-minute load average before -> after the leg; cpu: CPU time of the generating "
                 f"processes during generate over its wall time x {CORES} cores, i.e. the share of the machine the "
                 f"leg got; other work on the machine shows as load above ~1 and cpu well under 100%)")
    lines.append("")
    a, b, c = legs.get("a"), legs.get("b"), legs.get("c")
    if a and b:
        ratio = a.candidates_per_s / b.candidates_per_s
        lines.append(f"a/b candidates/s: {ratio:.2f}  (tokens/s {a.tokens_per_s / b.tokens_per_s:.2f})  "
                     f"target >= {TARGET_A_OVER_B}: {'MET' if ratio >= TARGET_A_OVER_B else 'NOT MET'}")
        for label, _, sampling in a.variants:
            lines.append(f"    a/b with {label}: {a.candidates / sampling / b.candidates_per_s:.2f}")
        same = sum(1 for key, text in a.texts.items() if b.texts.get(key) == text)
        lines.append(f"    (a) and (b) candidates identical: {same} of {len(b.texts)}")
    if a and c:
        lines.append(f"a/c candidates/s: {a.candidates_per_s / c.candidates_per_s:.2f}  "
                     f"(tokens/s {a.tokens_per_s / c.tokens_per_s:.2f})")
    if b and c:
        lines.append(f"b/c candidates/s: {b.candidates_per_s / c.candidates_per_s:.2f}  "
                     f"(tokens/s {b.tokens_per_s / c.tokens_per_s:.2f})")
    lines.append("")
    lines.append("how each leg was timed:")
    for leg in legs.values():
        lines.append(f"{leg.name}:")
        lines.extend(f"  {note}" for note in leg.notes)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from jobs._common import setup_logging

    setup_logging(args.log_level)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout holds the report only
    scratch = None if args.run_dir else tempfile.TemporaryDirectory(prefix="bench-sampling-")
    run_dir = os.path.abspath(args.run_dir or os.path.join(scratch.name, "run"))
    config = run_config(args, run_dir)
    from jobs._common import DEFAULT_CONFIG
    from reasoner.config import load_run_config

    from reasoner.models.engine import engine_env

    default_env = engine_env(load_run_config(DEFAULT_CONFIG, []).engine)  # (b): without --engine-env's extras
    os.environ.update({key: os.environ.get(key, value) for key, value in default_env.items()})

    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    legs: dict[str, Leg] = {}
    try:
        model_dir, examples = prepare_run(config)
        config_json = json.loads(Path(model_dir, "config.json").read_text())
        text = config_json.get("text_config", {})
        model_info = (f"hidden {text.get('hidden_size')}, {text.get('num_hidden_layers')} layers, "
                      f"vocab {text.get('vocab_size')}, {config_json.get('image_seq_length')} image tokens")
        logger.info("run directory %s; %d questions", run_dir, len(examples))
        failed: dict[str, str] = {}

        def run_leg(key: str, fn, *fn_args) -> None:
            if key in args.skip:
                return
            try:
                legs[key] = fn(*fn_args)
            except Exception as e:  # report the others; the traceback is in the log
                logger.exception("%s failed", LEGS[key])
                failed[key] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]

        run_leg("a", leg_stage, config, examples)
        # (a)'s actor and engine should go when the stage ends; whatever is left is ended before (b).
        procs = engine_processes()
        after_stage, _ = wait_exit(procs, timeout_s=20)
        ray.shutdown()  # nothing of Ray runs while (b) and (c) are timed
        after_shutdown = free_engines([p for p in procs if p.is_running()], timeout_s=60)
        if "a" in legs:
            legs["a"].notes.append(f"(a)'s vLLM processes after the stage returned, Ray still up: {after_stage}; "
                                   f"after ray.shutdown: {after_shutdown}")
        run_leg("b", leg_vllm, config, model_dir, examples)
        free_engines(engine_processes(), timeout_s=60)
        run_leg("c", leg_transformers, config, model_dir, examples, args.hf_batch)
        sys.stdout.write(report(args, legs, model_info, failed))
        sys.stdout.flush()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if scratch is not None:
            scratch.cleanup()


if __name__ == "__main__":
    main()
