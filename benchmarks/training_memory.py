"""Peak resident memory of the training stages at 1x and 8x the rows: the driver and each worker.

    python benchmarks/training_memory.py                       # 96 and 768 rows, 640 px images
    python benchmarks/training_memory.py --rows 32 --image-size 256 --steps 2     # quick

Four legs, one after the other, each in its own spawned process with its own local Ray cluster
(2 CPUs), so that every peak is its own: SFT on ``--rows`` rows of ``sft_data`` and on 8x as many,
then DPO (the reference pass and training) on ``--rows`` pairs and on 8x as many. Each leg runs
the stage's job (``jobs.train_sft.main``, ``jobs.train_dpo.main``) on the tiny model with two
Ray Train workers under ZeRO-2, fp32, for the same ``--steps`` optimizer steps of 4 rows, with
no evaluation: only the data changes between 1x and 8x.

Every row has its own image, random noise stored as an uncompressed PNG of ``--image-size``
pixels a side (1.2 MB at 640 px; the model resizes it to 32 px), so the data dominates what a
process could hold: 8x is about 0.9 GB of images for each artifact. Parts hold ``--part-rows``
rows each (1x has several), as a stage writes them: a streamed read holds about two parts' images
at a time (``reasoner.training.stream``: the parts' layout decides it), whatever their number.

Each process's peak resident memory is its RSS high-water mark (``VmHWM`` in ``/proc``: images
and the pages of mapped files and libraries included), sampled every 0.2 s from the leg's process
for itself (the driver) and for each Ray Train worker and the DPO reference pass while they live
(the mark only grows, so the last sample is within 0.2 s of a process's end); the largest
anonymous RSS sampled (``RssAnon``, without mapped files) is given beside it. The table gives MiB
per process at 1x and 8x and the ratio 8x/1x: data streamed (no process holds an artifact) keeps
it near 1 (target under 1.3x); data held in memory would grow with the rows.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

SCALES = (1, 8)
WATCHED = {"RayTrainWorker": "worker", "reference_task": "reference"}


def _noise_png(size: int, seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=0)
    return out.getvalue()


def _finish(run, artifact: str, count: int) -> None:
    from reasoner.config import config_hash
    from reasoner.rundir import StageCounts

    run.finish(artifact, stage="benchmark", config={"rows": count}, config_hash=config_hash([artifact, count]),
               counts=StageCounts(count, count))


def make_run(root: str, model_dir: str, rows: int, image_size: int, part_rows: int) -> str:
    """A run with ``rows`` rows of sft_data and of pairs, each with its own image, and the model as
    ``models/base`` (SFT starts from it; DPO too, its reference)."""
    import shutil

    import pyarrow as pa

    from reasoner.prompts import build_prompt
    from reasoner.rundir import RunDir

    run = RunDir(root)
    shutil.copytree(model_dir, run.path("models/base"), dirs_exist_ok=True)
    _finish(run, "models/base", 1)
    prompt = build_prompt("What is the value of the red bar?", None, "cot")
    for start in range(0, rows, part_rows):
        ids = range(start, min(rows, start + part_rows))
        sft = [{"id": f"q{i:06d}", "image": _noise_png(image_size, i), "prompt": prompt,
                "completion": f"The red bar is {i % 9}.\n### Answer: {i % 9}", "mode": ("cot", "direct")[i % 2]}
               for i in ids]
        run.write_part("sft_data", f"part-{start // part_rows:05d}", pa.Table.from_pylist(sft), schema_name="sft_data")
        pairs = [{"id": f"q{i:06d}", "pair_index": 0, "prompt": prompt, "image": _noise_png(image_size, 10**6 + i),
                  "chosen": f"The red bar is {i % 9}.\n### Answer: {i % 9}",
                  "rejected": f"The red bar is {i % 9 + 1}.\n### Answer: {i % 9 + 1}", "accuracy": 0.5} for i in ids]
        run.write_part("pairs", f"part-{start // part_rows:05d}", pa.Table.from_pylist(pairs), schema_name="pairs")
    _finish(run, "sft_data", rows)
    _finish(run, "pairs", rows)
    return root


def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith(key + ":")), None)
    except OSError:
        return None


class PeakWatcher:
    """Samples, every ``interval_s``, the ``VmHWM`` (RSS high-water mark) and ``RssAnon`` of this
    process (the driver) and of its descendants that run a watched Ray actor or task (not of the
    short-lived processes those fork, which carry their title)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.kinds: dict[int, str] = {os.getpid(): "driver"}
        self.peaks: dict[int, int] = {}
        self.anon: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self, pid: int) -> None:
        peak, anon = _status_kib(pid, "VmHWM"), _status_kib(pid, "RssAnon")
        if peak is not None:
            self.peaks[pid] = max(peak, self.peaks.get(pid, 0))
        if anon is not None:
            self.anon[pid] = max(anon, self.anon.get(pid, 0))

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            self.sample(me.pid)
            for process in me.children(recursive=True):
                try:
                    cmdline = " ".join(process.cmdline())
                except psutil.Error:
                    continue
                kind = self.kinds.get(process.pid) or next((k for m, k in WATCHED.items() if m in cmdline), None)
                if kind is None or process.ppid() in self.kinds:  # not a fork of a watched process
                    continue
                self.kinds[process.pid] = kind
                self.sample(process.pid)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample(os.getpid())

    def processes(self) -> list[dict]:
        """``{"kind", "pid", "peak_mib", "anon_mib"}`` of each watched process, by kind then pid."""
        return [{"kind": self.kinds[pid], "pid": pid, "peak_mib": self.peaks[pid] / 1024,
                 "anon_mib": self.anon.get(pid, 0) / 1024}
                for pid in sorted(self.peaks, key=lambda p: (self.kinds[p], p))]


def _leg(stage: str, root: str, steps: int, queue) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    with PeakWatcher() as watcher:  # the driver's own peak from its start (a fresh process: spawn)
        from jobs import train_dpo, train_sft
        from jobs._common import init_ray
        from reasoner.config import RaySection, RunConfig, load_run_config

        section = "sft" if stage == "train_sft" else "dpo"
        overrides = [f"run_dir={root}", f"{section}.num_workers=2", f"{section}.cpus_per_worker=1",
                     f"{section}.per_device_batch_size=2", f"{section}.global_batch_size=4",
                     f"{section}.max_steps={steps}", f"{section}.save_steps={steps}", f"{section}.eval.questions=0",
                     f"{section}.max_failures=0", f"{section}.zero_stage=2"]
        if section == "sft":
            overrides += ["sft.mix=both", "sft.model=models/base"]
        else:
            overrides += ["dpo.model=models/base", "dpo.reference_backend=transformers", "dpo.reference_batch_size=16"]
        config = load_run_config(os.path.join(REPO, "jobs", "configs", "default.yaml"), overrides)
        start = time.perf_counter()
        init_ray(RunConfig(ray=RaySection(num_cpus=2)), progress_bars=False)
        (train_sft if stage == "train_sft" else train_dpo).main(config)
        import ray

        ray.shutdown()
    queue.put({"seconds": time.perf_counter() - start, "processes": watcher.processes()})


def run_leg(stage: str, root: str, steps: int) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_leg, args=(stage, root, steps, queue))
    process.start()
    while True:
        try:
            result = queue.get(timeout=1.0)
            break
        except Exception:  # queue.Empty: still running, or died without a result
            if not process.is_alive():
                raise RuntimeError(f"the {stage} leg on {root} exited with code {process.exitcode}") from None
    process.join()
    return result


def _named(result: dict) -> dict[str, dict]:
    """A leg's processes by name: ``driver``, ``reference``, ``worker 0``, ``worker 1`` (workers in
    the order they started)."""
    out, counts = {}, {}
    for process in result["processes"]:
        kind = process["kind"]
        counts[kind] = counts.get(kind, 0) + 1
        out[f"worker {counts[kind] - 1}" if kind == "worker" else kind] = process
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=96, help="rows of sft_data and pairs at 1x (default 96)")
    parser.add_argument("--image-size", type=int, default=640, help="side of each row's noise image in px (640)")
    parser.add_argument("--part-rows", type=int, default=32, help="rows per Parquet part (32)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps of 4 rows per leg (4)")
    parser.add_argument("--work-dir", default=None,
                        help="where the runs go (default: a temporary directory, removed at the end)")
    args = parser.parse_args(argv)

    from reasoner.data.synthetic import SuiteConfig, generate_items, suite_text
    from reasoner.models import build_base_model

    work = args.work_dir or tempfile.mkdtemp(prefix="bench-memory-")
    start = time.perf_counter()
    texts = list(suite_text(generate_items(SuiteConfig(num_items=400), "train")))
    model_dir = str(build_base_model(os.path.join(work, "model"), "tiny", texts=texts, seed=0))
    roots = {scale: make_run(os.path.join(work, f"run-{scale}x"), model_dir, args.rows * scale, args.image_size,
                             args.part_rows) for scale in SCALES}
    data_s = time.perf_counter() - start
    image_mib = len(_noise_png(args.image_size, 0)) / 2**20
    report = {"rows": args.rows, "image_size": args.image_size, "image_mib": round(image_mib, 3),
              "part_rows": args.part_rows, "steps": args.steps, "data_s": round(data_s, 1), "legs": {}}
    for stage in ("train_sft", "train_dpo"):
        for scale in SCALES:
            result = run_leg(stage, roots[scale], args.steps)
            report["legs"][f"{stage} {scale}x"] = result
            print(f"{stage} {scale}x: {result['seconds']:.0f} s", flush=True)

    print(f"\n{args.rows} and {8 * args.rows} rows of sft_data and of pairs, one {image_mib:.2f} MiB image a row "
          f"({args.rows * image_mib:.0f} and {8 * args.rows * image_mib:.0f} MiB an artifact). MiB: peak RSS "
          "(VmHWM), and the largest anonymous RSS sampled (RssAnon: without mapped files and libraries)")
    print(f"{'stage':<10} {'process':<10} {'peak 1x':>8} {'8x':>6} {'8x/1x':>6}   "
          f"{'anon 1x':>8} {'8x':>6} {'8x/1x':>6}")
    ratios = {}
    for stage in ("train_sft", "train_dpo"):
        one, eight = (_named(report["legs"][f"{stage} {s}x"]) for s in SCALES)
        for name in (n for n in one if n in eight):
            peak = eight[name]["peak_mib"] / one[name]["peak_mib"]
            anon = eight[name]["anon_mib"] / one[name]["anon_mib"]
            ratios[f"{stage} {name}"] = {"peak": round(peak, 3), "anon": round(anon, 3)}
            print(f"{stage:<10} {name:<10} {one[name]['peak_mib']:>8.0f} {eight[name]['peak_mib']:>6.0f} "
                  f"{peak:>6.2f}   "
                  f"{one[name]['anon_mib']:>8.0f} {eight[name]['anon_mib']:>6.0f} {anon:>6.2f}")
    worst = max(r["peak"] for r in ratios.values())
    print(f"largest peak RSS ratio 8x/1x: {worst:.2f} (target < 1.3)")
    report["ratios"] = ratios
    report["largest_ratio"] = worst
    print(json.dumps(report))
    if args.work_dir is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)  # about 2 GB of runs at the default sizes


if __name__ == "__main__":
    main()
