"""DPO with the precomputed reference vs TRL's resident reference model: steps/s and peak memory.

    python benchmarks/dpo_reference.py                      # small preset, 30 steps of 8 pairs
    python benchmarks/dpo_reference.py --preset tiny --steps 10

Both legs train the same model on the same pairs with the same TRL arguments (fp32 on CPU, one
process, no DeepSpeed, no checkpoints), one after the other, each in its own spawned process so
that its peak memory is its own:

(a) precomputed: ``reasoner.training.dpo``'s trainer reading ``ref_chosen_logps`` /
    ``ref_rejected_logps`` from the batch (scored once beforehand by the shared scorer, the
    ``<run>/dpo_ref`` pass; its time is reported apart): no reference model;
(b) resident: TRL's ``DPOTrainer`` as it comes, which loads a second copy of the model and runs
    its forward on every step.

Steps/s is over the steps after ``--warmup`` (the first steps pay one-off costs); peak memory is
the process's peak RSS after training minus its RSS before the model was loaded. The reference
forward is at most about a quarter of a step (forward + backward of the policy), so expect (a)/(b)
up to ~1.3x steps/s; target >= 1.15x and a lower peak memory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="utf-8") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def make_pairs(count: int, image_size: int) -> list[dict]:
    """Pairs from the synthetic suite: chosen the ground-truth rationale, rejected it with another answer."""
    from reasoner.data.synthetic import SuiteConfig, generate_items
    from reasoner.prompts import ANSWER_MARKER, build_prompt

    items = generate_items(SuiteConfig(num_items=max(4 * count, 64), image_size=max(image_size, 48)), "train")[:count]
    pairs = []
    for index, item in enumerate(items):
        rationale = item["rationale"]
        wrong = "A" if item["answers"][0] != "A" else "B"
        pairs.append({"id": item["id"], "pair_index": 0, "image": item["image"],
                      "prompt": build_prompt(item["question"], item["choices"], "cot"), "chosen": rationale,
                      "rejected": rationale.rsplit(ANSWER_MARKER, 1)[0] + f"{ANSWER_MARKER} {wrong}{index}"})
    return pairs


def _leg(leg: str, model_dir: str, rows: list[dict], args: dict, queue) -> None:
    import torch
    import trl
    from transformers import TrainerCallback

    from reasoner.models import load_model, load_processor
    from reasoner.training.data import preference_dataset
    from reasoner.training.dpo import make_dpo_trainer

    torch.manual_seed(0)
    times: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_begin(self, a, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, a, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)

    base_rss = _rss_kib()
    processor = load_processor(model_dir)
    training = trl.DPOConfig(output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, report_to=[],
                             save_strategy="no", remove_unused_columns=False, gradient_checkpointing=False,
                             disable_tqdm=True, logging_steps=10**6, **args)
    model = load_model(model_dir).train()
    if leg == "precomputed":
        trainer = make_dpo_trainer(model=model, processor=processor, args=training, dataset=preference_dataset(rows),
                                   peft_config=None, callbacks=[StepTimes()])
    else:
        plain = [{k: v for k, v in r.items() if not k.startswith("ref_")} for r in rows]
        trainer = trl.DPOTrainer(model=model, args=training, train_dataset=preference_dataset(plain),
                                 processing_class=processor, callbacks=[StepTimes()])
    resident = trainer.ref_model is not None
    trainer.train()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"leg": leg, "step_times": times, "peak_mib": (peak_kib - base_rss) / 1024, "resident_ref": resident,
               "final_loss": trainer.state.log_history[-1].get("train_loss")})


def run_leg(leg: str, model_dir: str, rows: list[dict], args: dict) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_leg, args=(leg, model_dir, rows, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", help="model preset (default small)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per leg")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of steps/s")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)

    import torch

    from reasoner.data.synthetic import SuiteConfig, generate_items, suite_text
    from reasoner.models import TransformersScorer, build_base_model, get_preset
    from reasoner.training.data import attach_reference
    from reasoner.training.reference import score_pairs

    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    preset = get_preset(args.preset)
    pairs = make_pairs(args.steps * args.batch, preset.image_size)
    work = tempfile.mkdtemp(prefix="bench-dpo-")
    model_dir = build_base_model(os.path.join(work, "model"), args.preset,
                                 texts=list(suite_text(generate_items(SuiteConfig(num_items=400, image_size=max(preset.image_size, 48)),
                                                                      "train"))), seed=0)
    start = time.perf_counter()
    reference = score_pairs(TransformersScorer.from_pretrained(model_dir, batch_size=16), pairs)
    reference_s = time.perf_counter() - start
    rows = attach_reference(pairs, reference)
    trl_args = {"max_steps": args.steps, "per_device_train_batch_size": args.batch, "learning_rate": 1e-4,
                "beta": 0.1, "seed": 0}
    results = {leg: run_leg(leg, str(model_dir), rows, trl_args) for leg in ("precomputed", "resident")}
    report = {"preset": args.preset, "steps": args.steps, "batch": args.batch, "reference_pass_s": round(reference_s, 2)}
    for leg, result in results.items():
        timed = result["step_times"][args.warmup:]
        report[leg] = {"steps_per_s": round(len(timed) / sum(timed), 3), "peak_mib": round(result["peak_mib"], 1),
                       "resident_reference_model": result["resident_ref"], "train_loss": result["final_loss"]}
    a, b = report["precomputed"], report["resident"]
    report["ratio_steps_per_s"] = round(a["steps_per_s"] / b["steps_per_s"], 3)
    report["ratio_peak_mib"] = round(a["peak_mib"] / b["peak_mib"], 3)
    print(f"{'leg':<12} {'steps/s':>9} {'peak MiB':>9}  reference model")
    for leg in ("precomputed", "resident"):
        r = report[leg]
        print(f"{leg:<12} {r['steps_per_s']:>9.3f} {r['peak_mib']:>9.1f}  {r['resident_reference_model']}")
    print(f"ratio (a/b)  {report['ratio_steps_per_s']:>9.3f} {report['ratio_peak_mib']:>9.3f}"
          f"   (reference pass, done once for (a): {reference_s:.1f} s)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
