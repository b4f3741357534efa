"""Serving throughput and latency on 127.0.0.1: concurrency 1, 4 and 16, and a soak.

    python benchmarks/serving.py                            # a tiny run, both routes at 1, 4 and 16
    python benchmarks/serving.py --run-dir runs/default     # a finished run instead
    python benchmarks/serving.py --soak 10                  # 10 minutes at concurrency 16, both routes

The script builds a tiny finished run (the ``tiny`` preset with random weights as ``models/sft``, a
perturbed copy as ``models/dpo`` recorded as its DPO model with beta 0.1: the serving tests' run)
unless given ``--run-dir``, starts a local Ray cluster and serves it with
``serve_apps.reason:build_app`` on 127.0.0.1 (one Generator, one Verifier: three vLLM engines),
then drives it with ``--concurrency`` clients (asyncio + aiohttp, one connection each), each
sending its next request when its last is answered:

- ``chat``: ``POST /v1/chat/completions``, one completion of at most ``--max-tokens`` tokens at
  temperature 1;
- ``reason``: ``POST /v1/reason`` with ``best_of_n``, ``n=8`` candidates of at most ``--max-tokens``
  tokens, scored by the DPO verifier (policy and reference).

Each (route, concurrency) cell runs ``--seconds`` after a warm-up of one request per client;
requests/s counts the requests answered 200 in that time, latencies are theirs. The ratio of
requests/s at the highest concurrency over 1 is continuous batching at work (target >= 3x on the
tiny model): the engines batch the concurrent requests' sequences into one step.

``--soak MINUTES`` instead runs both routes, alternating, at ``--soak-concurrency`` (16) for that
long, and counts every request sent, answered (by status), failed at the client (connection error,
client timeout: lost) and, after the load, the engine requests still running (leaked). Target:
none lost, none leaked, no 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGET_RATIO = 3.0
BETA = 0.1
QUESTION = "What is the sum of the red bar and the blue bar?"


def build_tiny_run(root: Path) -> Path:
    """A finished tiny run: the ``tiny`` preset as ``models/sft``, a perturbed copy as ``models/dpo``
    (trained by train_dpo from models/sft with beta 0.1, as its manifest says)."""
    from reasoner.config import config_hash
    from reasoner.data.synthetic import SuiteConfig, generate_items, suite_text
    from reasoner.models import build_base_model
    from reasoner.rundir import RunDir, StageCounts
    from tests.support.models import perturbed_copy

    texts = list(suite_text(generate_items(SuiteConfig(num_items=200, image_size=48), "train")))
    model = build_base_model(root / "tiny", "tiny", texts=texts, seed=0)
    run = RunDir(str(root / "run"))
    shutil.copytree(model, run.path("models/sft"))
    run.finish("models/sft", stage="benchmark", config={"source": "tiny"}, config_hash=config_hash("sft"),
               counts=StageCounts(1, 1))
    perturbed_copy(model, root / "run" / "models" / "dpo")
    run.finish("models/dpo", stage="train_dpo", config={"dpo": {"beta": BETA}}, config_hash=config_hash("dpo"),
               counts=StageCounts(1, 1), extra={"beta": BETA, "base_model": "models/sft"})
    return root / "run"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serving(args: dict[str, str], name: str = "reasoner", num_cpus: int | None = None) -> str:
    """Ray on this machine, Serve on 127.0.0.1, ``build_app(args)`` deployed: its base URL."""
    import ray
    from ray import serve

    from serve_apps.reason import build_app

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=num_cpus or len(os.sched_getaffinity(0)), include_dashboard=False,
                 log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name=name, route_prefix="/", blocking=False)
    return f"http://127.0.0.1:{port}"


def image_url() -> str:
    from PIL import Image

    image = Image.new("RGB", (32, 32), (255, 255, 255))
    for x in range(4, 12):
        for y in range(10, 30):
            image.putpixel((x, y), (220, 20, 20))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def bodies(max_tokens: int) -> dict[str, tuple[str, bytes]]:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url()}},
                                             {"type": "text", "text": QUESTION}]}]
    return {
        "chat": ("/v1/chat/completions", json.dumps({"messages": messages, "max_tokens": max_tokens,
                                                     "temperature": 1.0}).encode()),
        "reason": ("/v1/reason", json.dumps({"messages": messages, "strategy": "best_of_n", "n": 8,
                                             "max_tokens": max_tokens, "temperature": 1.0}).encode()),
    }


async def drive(url: str, requests_: list[tuple[str, bytes]], concurrency: int, seconds: float,
                warmup: bool = True, client_timeout: float = 300.0) -> dict:
    """``concurrency`` clients sending ``requests_`` round robin for ``seconds`` (after one warm-up
    request each): the latencies of the requests answered 200, and counts of requests sent, of
    answers by status and of client-side failures (lost requests), and the time taken."""
    import aiohttp

    sent, statuses, failures, latencies = 0, Counter(), Counter(), []
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=client_timeout)
    state = {"deadline": 0.0}
    ready, go = asyncio.Barrier(concurrency + 1), asyncio.Event()

    async def one(session, index: int, record: bool) -> None:
        nonlocal sent
        route, body = requests_[index % len(requests_)]
        start = time.perf_counter()
        sent += record
        try:
            async with session.post(url + route, data=body, headers=headers) as response:
                await response.read()
                status = response.status
        except Exception as e:  # noqa: BLE001 - a request lost at the client: counted
            if record:
                failures[type(e).__name__] += 1
            return
        if record:
            statuses[status] += 1
            if status == 200:
                latencies.append(time.perf_counter() - start)

    async def client(index: int) -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) as session:
            if warmup:
                await one(session, index, record=False)
            await ready.wait()
            await go.wait()
            n = index
            while time.perf_counter() < state["deadline"]:
                await one(session, n, record=True)
                n += concurrency

    tasks = [asyncio.create_task(client(i)) for i in range(concurrency)]
    await ready.wait()
    start = time.perf_counter()
    state["deadline"] = start + seconds
    go.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return {"sent": sent, "statuses": statuses, "failures": failures, "latencies": latencies, "elapsed": elapsed}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def cell(result: dict) -> dict:
    latencies = result["latencies"]
    return {"requests_per_s": round(len(latencies) / result["elapsed"], 3), "answered": len(latencies),
            "p50_s": round(percentile(latencies, 0.5), 3), "p99_s": round(percentile(latencies, 0.99), 3),
            "errors": sum(n for status, n in result["statuses"].items() if status != 200),
            "lost": sum(result["failures"].values())}


def generator_load(app: str = "reasoner") -> dict:
    from ray import serve

    handle = serve.get_deployment_handle("Generator", app_name=app)
    return handle.load.remote().result(timeout_s=60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", help="a finished run to serve (default: build a tiny one)")
    parser.add_argument("--config", help="its run config (default: the embedded default's)")
    parser.add_argument("--concurrency", default="1,4,16", help="client counts, comma-separated (default 1,4,16)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per route and concurrency")
    parser.add_argument("--max-tokens", type=int, default=64, help="most tokens a response (default 64)")
    parser.add_argument("--routes", default="chat,reason", help="chat, reason or both (default)")
    parser.add_argument("--soak", type=float, nargs="?", const=10.0, default=None, metavar="MINUTES",
                        help="soak instead: both routes for MINUTES (default 10) at --soak-concurrency")
    parser.add_argument("--soak-concurrency", type=int, default=16)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a further build_app argument (a dotted config key), repeatable")
    args = parser.parse_args(argv)

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    run_dir = Path(args.run_dir) if args.run_dir else build_tiny_run(work)
    app_args = {"run_dir": str(run_dir), "engine.cpus_per_engine": "0", "engine.max_model_len": "512",
                "serve.max_tokens": str(args.max_tokens), "serve.limits.max_tokens": str(max(args.max_tokens, 2048))}
    if args.config:
        app_args["config"] = args.config
    app_args.update(dict(o.split("=", 1) for o in args.override))
    start = time.perf_counter()
    url = start_serving(app_args)
    startup_s = time.perf_counter() - start
    print(f"serving {run_dir} at {url} (started in {startup_s:.0f} s)", flush=True)
    routes = bodies(args.max_tokens)
    report: dict = {"run_dir": str(run_dir), "max_tokens": args.max_tokens, "startup_s": round(startup_s, 1)}
    try:
        if args.soak is not None:
            report["soak"] = soak(url, routes, args.soak, args.soak_concurrency)
        else:
            report.update(levels(url, routes, args))
    finally:
        from ray import serve

        serve.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))


def levels(url: str, routes: dict, args) -> dict:
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    names = [r for r in args.routes.split(",") if r]
    results: dict = {}
    for name in names:
        for c in concurrencies:
            result = cell(asyncio.run(drive(url, [routes[name]], c, args.seconds)))
            results.setdefault(name, {})[c] = result
            print(f"  {name:<7} c={c:<3} {result['requests_per_s']:>8.2f} req/s  p50 {result['p50_s']:.3f} s  "
                  f"p99 {result['p99_s']:.3f} s  ({result['answered']} answered, {result['errors']} errors, "
                  f"{result['lost']} lost)", flush=True)
    low, high = min(concurrencies), max(concurrencies)
    print(f"\n{'route':<8} {'concurrency':>11} {'req/s':>9} {'p50 s':>8} {'p99 s':>8} {'errors':>7} {'lost':>5}")
    for name in names:
        for c in concurrencies:
            r = results[name][c]
            print(f"{name:<8} {c:>11} {r['requests_per_s']:>9.2f} {r['p50_s']:>8.3f} {r['p99_s']:>8.3f} "
                  f"{r['errors']:>7} {r['lost']:>5}")
    ratios = {}
    for name in names:
        ratio = results[name][high]["requests_per_s"] / max(results[name][low]["requests_per_s"], 1e-9)
        ratios[name] = round(ratio, 2)
        verdict = "meets" if ratio >= TARGET_RATIO else "misses"
        print(f"ratio {name}: req/s at concurrency {high} over {low} = {ratio:.2f}x ({verdict} the {TARGET_RATIO:g}x "
              "target)")
    return {"results": {n: {str(c): r for c, r in v.items()} for n, v in results.items()}, "ratio": ratios}


def soak(url: str, routes: dict, minutes: float, concurrency: int) -> dict:
    print(f"soak: both routes at concurrency {concurrency} for {minutes:g} min", flush=True)
    result = asyncio.run(drive(url, [routes["chat"], routes["reason"]], concurrency, minutes * 60))
    answered = sum(result["statuses"].values())
    load = generator_load()
    summary = {"minutes": minutes, "concurrency": concurrency, "sent": result["sent"], "answered": answered,
               "statuses": {str(k): v for k, v in sorted(result["statuses"].items())},
               "lost": result["sent"] - answered, "client_failures": dict(result["failures"]),
               "errors": answered - result["statuses"].get(200, 0),
               "requests_per_s": round(result["statuses"].get(200, 0) / result["elapsed"], 2),
               "p50_s": round(percentile(result["latencies"], 0.5), 3),
               "p99_s": round(percentile(result["latencies"], 0.99), 3),
               "engine_requests_left_running": load["running"]}
    print(f"soak: {summary['sent']} sent, {answered} answered {summary['statuses']}, {summary['lost']} lost, "
          f"{summary['errors']} errors; {summary['requests_per_s']} req/s, p50 {summary['p50_s']} s, p99 "
          f"{summary['p99_s']} s; engine requests still running after it: {load['running']}", flush=True)
    verdict = "meets" if summary["lost"] == 0 and summary["errors"] == 0 and load["running"] == 0 else "misses"
    print(f"soak {verdict} the target (none lost, no errors, none left running)")
    return summary


if __name__ == "__main__":
    main()
