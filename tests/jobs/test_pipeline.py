"""jobs.pipeline, the README's main command, through `python -m` on a cut-down default config: the
whole recipe from a pretrained checkpoint (a tiny LLaVA-NeXT laid out as a hub release, imported by
``model.path``), every stage's artifact and manifest, a rerun that skips every stage, a terminal
without engine logs, and a stop at build_pairs when no pair can be made."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jobs.pipeline import ARTIFACTS
from reasoner.config import IMPLEMENTED_STAGES
from reasoner.rundir import RunDir
from tests.conftest import VLLM_CPU_ENV
from tests.jobs.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENGINE_ENV = "{" + ", ".join(f"{k}: '{v}'" for k, v in VLLM_CPU_ENV.items()) + "}"
# The default config, cut to minutes: 80 items, 300 SFT steps of 16 (enough to learn the answer
# format), 24 questions x 8 candidates, any accuracy kept for pairs, 2 DPO steps, no greedy
# evaluations after training, and an evaluation of 4 questions with pools of 4.
CUT = ["examples.synthetic.num_items=80", "examples.items_per_part=40", "model.preset=tiny",
       "sft.max_steps=300", "sft.global_batch_size=16", "sft.per_device_batch_size=16", "sft.eval.questions=0",
       "sft.save_steps=1000", "sample.max_questions=24", "sample.num_samples=8", "sample.max_tokens=48",
       "sample.questions_per_part=12", "pairs.min_accuracy=0.0", "pairs.max_accuracy=1.0",
       "pairs.min_chosen_samples=1", "dpo.max_steps=2", "dpo.global_batch_size=2", "dpo.per_device_batch_size=2",
       "dpo.eval.questions=0", "evaluate.questions=4", "evaluate.pool_size=4", "evaluate.ns=[1,2,4]",
       "evaluate.max_tokens=16", "evaluate.draws=16", "evaluate.bootstrap=100", "engine.max_model_len=512",
       f"engine.env={ENGINE_ENV}"]


def pipeline(ray_local, run_dir, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.pipeline", "--config", "jobs/configs/default.yaml", f"run_dir={run_dir}",
           *CUT, f"ray.address={ray_local.get_runtime_context().gcs_address}", *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)


def hub_release(run_dir, target):
    """A tiny LLaVA-NeXT whose tokenizer knows the run's examples, written as a hub release."""
    import pyarrow.compute as pc

    from reasoner.data.synthetic import suite_text
    from reasoner.models import build_base_model
    from tests.support.models import hub_checkpoint

    table = RunDir(str(run_dir)).read_table("examples", columns=["split", "question", "choices", "rationale"])
    train = table.filter(pc.equal(table.column("split"), "train")).to_pylist()
    built = build_base_model(target.parent / "built", "tiny-next", texts=suite_text(train), seed=0)
    return hub_checkpoint(built, target)


def test_whole_recipe_from_a_pretrained_checkpoint_then_a_rerun_skips_every_stage(ray_local, tmp_path) -> None:
    """Every stage (SFT, sampling, pairs, DPO, evaluation) on the imported model's own processor and
    Llama-3 chat template."""
    run_dir = tmp_path / "pipeline"
    examples = pipeline(ray_local, run_dir, "stages=[make_examples]")
    assert examples.returncode == 0, examples.stderr[-3000:]
    checkpoint = hub_release(run_dir, tmp_path / "hub" / "tiny-llava-next")
    done = pipeline(ray_local, run_dir, f"model.path={checkpoint}")
    assert done.returncode == 0, done.stderr[-3000:]
    run = RunDir(str(run_dir))
    imported = run.manifest("models/base")["pretrained"]
    assert imported["architecture"] == "LlavaNextForConditionalGeneration" and imported["source"] == str(checkpoint)
    from reasoner.models import load_processor
    from reasoner.models.inputs import format_prompt

    for model in ("models/sft", "models/dpo"):  # the trained models keep the checkpoint's own template
        assert format_prompt(load_processor(run.path(model)), "Q").startswith(
            "<s><|start_header_id|>user<|end_header_id|>\n\n<image>\nQ<|eot_id|>"), model
    for stage in IMPLEMENTED_STAGES:
        manifest = run.manifest(ARTIFACTS[stage])
        assert manifest is not None, stage
        assert {"config_hash", "counts", "git_commit", "packages", "finished"} <= set(manifest), stage
        assert {"ray", "torch", "transformers", "pyarrow"} <= set(manifest["packages"])
    assert run.manifest("models/sft")["steps"] == 300 and run.manifest("models/dpo")["steps"] == 2
    assert run.manifest("pairs")["pairs"] > 0 and run.parts("pairs")
    terminal = done.stderr + done.stdout
    # The terminal: the stages, the summary table, the log's path; not the engines' or Ray's lines.
    for stage in IMPLEMENTED_STAGES:
        assert f"] {stage}" in terminal
    assert "stage" in terminal and "rejected" in terminal and "serve run serve_apps.reason:build_app" in terminal
    assert "vLLM" not in terminal and "EngineCore" not in terminal and "(pid=" not in terminal
    assert len(terminal.splitlines()) < 80, terminal
    logs = sorted((run_dir / "logs").glob("pipeline-*.log"))
    assert logs and "EngineCore" in logs[-1].read_text()  # what the terminal left out is in the log
    # A rerun finds every stage complete and makes nothing.
    stamps = {stage: json.loads(open(run.path(ARTIFACTS[stage], "_manifest.json")).read())["finished"]
              for stage in IMPLEMENTED_STAGES}
    again = pipeline(ray_local, run_dir, f"model.path={checkpoint}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stderr + again.stdout).count("is complete with this config: skipped") == len(IMPLEMENTED_STAGES)
    assert {stage: run.manifest(ARTIFACTS[stage])["finished"] for stage in IMPLEMENTED_STAGES} == stamps


def test_stops_at_build_pairs_when_no_pair_can_be_made(ray_local, tmp_path) -> None:
    """The untrained base model answers nothing right: every question is too hard, and the pipeline
    stops there with the reason and the fix instead of failing in train_dpo."""
    run_dir = tmp_path / "no-pairs"
    done = pipeline(ray_local, run_dir, "stages=[make_examples,init_model,sample,build_pairs,train_dpo]",
                    "sample.model=models/base", "pairs.min_accuracy=0.25")
    assert done.returncode == 1
    terminal = done.stderr + done.stdout
    assert "the pipeline stops after build_pairs: no question gave a chosen/rejected pair" in terminal
    assert "too hard" in terminal and "sft.max_steps" in terminal
    run = RunDir(str(run_dir))
    assert run.manifest("pairs") is not None and run.manifest("models/dpo") is None
