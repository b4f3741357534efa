"""Serve autoscaling of the Generator and Verifier: replicas rise under load and fall after it.

    python benchmarks/autoscaling.py                        # the tiny run, 1 -> 2 replicas each
    python benchmarks/autoscaling.py --load-seconds 120 --concurrency 16

The tiny run of ``benchmarks/serving.py`` is served with autoscaling from the run config's serve
section (``serve.generator_replicas=1 serve.generator_max_replicas=2``, the same for the Verifier,
``serve.target_ongoing_requests=1``, upscale after ``--upscale-delay`` s, downscale after
``--downscale-delay`` s: short delays, for a demonstration). Then: a few idle seconds; ``--concurrency``
clients sending ``/v1/reason`` best_of_n (n=8) requests for ``--load-seconds``; idle again until both
deployments are back at one replica (or ``--settle-seconds`` pass). ``serve.status()`` is read every
second: the timeline printed is the RUNNING replicas of each deployment (and those starting) and the
requests answered in each second. A replica is an engine (the Verifier's holds two) that takes
15-60 s to start on 2 CPUs, so the rise shows some seconds after the delay.

Serve averages each deployment's ongoing requests over its look-back period (30 s by default) before
it compares them with the target, so the fall starts about that long after the load ends, plus the
downscale delay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEPLOYMENTS = ("Generator", "Verifier")


def replicas(app: str = "reasoner") -> dict[str, tuple[int, int]]:
    """(RUNNING, STARTING) replicas of each engine deployment, from ``serve.status()``."""
    from ray import serve

    deployments = serve.status().applications[app].deployments
    out = {}
    for name in DEPLOYMENTS:
        states = {str(getattr(k, "value", k)): v for k, v in deployments[name].replica_states.items()}
        out[name] = (states.get("RUNNING", 0), states.get("STARTING", 0) + states.get("PENDING_MIGRATION", 0))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", help="a finished run to serve (default: build a tiny one)")
    parser.add_argument("--max-replicas", type=int, default=2, help="most replicas of each engine deployment")
    parser.add_argument("--concurrency", type=int, default=16, help="clients during the load")
    parser.add_argument("--load-seconds", type=float, default=150.0,
                        help="seconds of load (a new replica's engines take 15-90 s to start on 2 busy CPUs)")
    parser.add_argument("--settle-seconds", type=float, default=180.0, help="most idle seconds waited after it")
    parser.add_argument("--upscale-delay", type=float, default=2.0)
    parser.add_argument("--downscale-delay", type=float, default=60.0,
                        help="longer than a replica takes to start, or a starting one may be stopped again")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from benchmarks.serving import bodies, build_tiny_run, drive, start_serving

    run_dir = Path(args.run_dir) if args.run_dir else build_tiny_run(Path(tempfile.mkdtemp(prefix="bench-scaling-")))
    overrides = {"run_dir": str(run_dir), "engine.cpus_per_engine": "0", "engine.max_model_len": "512",
                 "serve.max_tokens": str(args.max_tokens), "serve.max_ongoing_requests": "4",
                 "serve.target_ongoing_requests": "1", "serve.upscale_delay_s": str(args.upscale_delay),
                 "serve.downscale_delay_s": str(args.downscale_delay), "serve.limits.max_queued_requests": "256"}
    for name in ("generator", "verifier"):
        overrides[f"serve.{name}_replicas"] = "1"
        overrides[f"serve.{name}_max_replicas"] = str(args.max_replicas)
    url = start_serving(overrides)
    print(f"serving {run_dir} at {url}: Generator and Verifier autoscale 1..{args.max_replicas}, target 1 ongoing "
          f"requests, upscale after {args.upscale_delay:g} s, downscale after {args.downscale_delay:g} s", flush=True)

    timeline: list[dict] = []
    answered = {"n": 0}
    phase = {"name": "idle"}
    stop = threading.Event()

    def watch() -> None:
        start = time.perf_counter()
        last = 0
        while not stop.is_set():
            counts = replicas()
            done = answered["n"]
            row = {"t": round(time.perf_counter() - start), "phase": phase["name"], "answered_per_s": done - last,
                   **{f"{n}_running": counts[n][0] for n in DEPLOYMENTS},
                   **{f"{n}_starting": counts[n][1] for n in DEPLOYMENTS}}
            last = done
            timeline.append(row)
            print(f"t={row['t']:>4}s {row['phase']:<6} Generator {counts['Generator'][0]} running"
                  f" (+{counts['Generator'][1]} starting), Verifier {counts['Verifier'][0]} running"
                  f" (+{counts['Verifier'][1]} starting), {row['answered_per_s']} answered/s", flush=True)
            stop.wait(1.0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(5)
    phase["name"] = "load"
    route = bodies(args.max_tokens)["reason"]

    async def load() -> dict:
        # drive() counts answers at its end: count them as they come, for the timeline.
        import aiohttp

        original = aiohttp.ClientResponse.read

        async def read(self):
            body = await original(self)
            answered["n"] += self.status == 200
            return body

        aiohttp.ClientResponse.read = read
        try:
            return await drive(url, [route], args.concurrency, args.load_seconds, warmup=False)
        finally:
            aiohttp.ClientResponse.read = original

    result = asyncio.run(load())
    phase["name"] = "after"
    deadline = time.perf_counter() + args.settle_seconds
    while time.perf_counter() < deadline:
        counts = replicas()
        if all(counts[n] == (1, 0) for n in DEPLOYMENTS):
            break
        time.sleep(1.0)
    time.sleep(2)
    stop.set()
    watcher.join()

    peak = {n: max(r[f"{n}_running"] for r in timeline) for n in DEPLOYMENTS}
    under_load = [r for r in timeline if r["phase"] == "load"]
    first_up = {n: next((r["t"] for r in timeline if r[f"{n}_running"] > 1), None) for n in DEPLOYMENTS}
    end = timeline[-1]
    load_end = under_load[-1]["t"] if under_load else 0
    back = {n: next((r["t"] - load_end for r in timeline if r["phase"] == "after" and r[f"{n}_running"] == 1
                     and r[f"{n}_starting"] == 0), None) for n in DEPLOYMENTS}
    summary = {"peak_replicas": peak, "first_above_one_at_s": first_up, "back_to_one_after_load_s": back,
               "final": {n: end[f"{n}_running"] for n in DEPLOYMENTS}, "requests": result["statuses"],
               "lost": sum(result["failures"].values())}
    print(f"\nload from t={under_load[0]['t'] if under_load else '-'} s to t={load_end} s")
    print(f"{'deployment':<10} {'min':>4} {'peak':>5} {'first >1 at':>12} {'back to 1 after load':>21}")
    for n in DEPLOYMENTS:
        up = f"t={first_up[n]} s" if first_up[n] is not None else "-"
        down = f"{back[n]} s" if back[n] is not None else "not yet"
        print(f"{n:<10} {1:>4} {peak[n]:>5} {up:>12} {down:>21}")
    rose = all(peak[n] > 1 for n in DEPLOYMENTS)
    fell = all(end[f"{n}_running"] == 1 for n in DEPLOYMENTS)
    print(f"replicas rose under load: {rose}; fell after it: {fell} "
          f"({sum(result['statuses'].values())} requests answered {dict(result['statuses'])}, {summary['lost']} lost)")
    print(json.dumps({"summary": {**summary, "requests": {str(k): v for k, v in result["statuses"].items()}},
                      "timeline": timeline}))
    from ray import serve

    serve.shutdown()


if __name__ == "__main__":
    main()
