"""jobs.train_sft: TRL's SFTTrainer through Ray Train, 2 CPU workers under ZeRO-2 and ZeRO-3."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from jobs import train_sft
from reasoner.rundir import RunDir
from tests.jobs.conftest import run_config
from tests.jobs.training_support import check_greedy_evaluation, copy_run, make_training_run, stage_overrides

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sft_run(ray_local, tmp_path_factory, tiny_model_dir):
    return make_training_run(tmp_path_factory.mktemp("sft") / "run", tiny_model_dir)


def _weights(model_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(f"{model_dir}/model.safetensors")


def _driver_lines(capfd, until: str, timeout_s: float = 20.0) -> list[str]:
    """The lines the driver printed (Ray forwards worker output asynchronously), up to one holding
    ``until``; each without Ray's "(RayTrainWorker pid=...)" prefix."""
    text, deadline = "", time.monotonic() + timeout_s
    while until not in text and time.monotonic() < deadline:
        time.sleep(0.5)
        captured = capfd.readouterr()
        text += captured.out + captured.err
    return [re.sub(r"^.*?\(\w+ pid=\d+(?:, ip=[\d.]+)?\)\S*\s*", "", line) for line in text.splitlines()]


def test_sft_zero2_and_zero3_agree_and_export_loads(sft_run, tmp_path, tiny_model_dir, capfd) -> None:
    losses = {}
    for stage in (2, 3):
        root = copy_run(sft_run, tmp_path / f"zero{stage}")
        config = run_config(root, *stage_overrides("sft", f"sft.zero_stage={stage}"))
        capfd.readouterr()
        train_sft.main(config)
        if stage == 2:
            # The log shows one progress line per step, and none of the noise that buried it:
            # raw HF log dicts (printed twice through Ray Train's print patch), the bytecode
            # dill prints when datasets fingerprints a table, and the placement group cleaner's
            # warning every second when Ray's state API is not served.
            lines = _driver_lines(capfd, until="step 4/4")
            assert any(line.startswith("step 4/4 loss=") for line in lines)
            assert not [line for line in lines if line.startswith("{'loss'")]
            assert not [line for line in lines if "LOAD_GLOBAL" in line]
            assert not [line for line in lines if "Failed to query Ray Train Controller" in line]
        run = RunDir(root)
        manifest = run.manifest("models/sft")
        assert manifest["steps"] == 4
        records = [json.loads(line) for line in open(run.path("models/sft", "metrics.jsonl"))]
        assert [r["step"] for r in records] == [1, 2, 3, 4]
        assert all(r["steps_per_second"] > 0 for r in records)
        losses[stage] = [r["loss"] for r in records]
        before, after = _weights(tiny_model_dir), _weights(run.path("models/sft"))
        assert set(after) == {k.replace("vision_tower.", "vision_tower.vision_model.", 1)
                              if "vision_tower." in k and "vision_model" not in k else k for k in before}
        changed = [k for k in after if k in before and not (after[k] == before[k]).all()]
        assert changed, "no parameter changed"
        # Once the model is exported, the stage's checkpoints are deleted (sft.keep_checkpoints=false).
        assert list(Path(root, "checkpoints").iterdir()) == []
    assert losses[2] == pytest.approx(losses[3], rel=1e-4), losses
    # A rerun of a finished stage does nothing.
    manifest = run.manifest("models/sft")
    train_sft.main(config)
    assert run.manifest("models/sft")["finished"] == manifest["finished"]
    _scores_agree_in_transformers_and_vllm(run.path("models/sft"), run)


def _scores_agree_in_transformers_and_vllm(model_dir, run: RunDir) -> None:
    """The export loads in transformers and in vLLM, and both score a response alike."""
    import os

    from reasoner.models import ScoreRequest, TransformersScorer, VLLMScorer, make_vllm_engine, shutdown_vllm_engine
    from tests.conftest import VLLM_CPU_ENV

    row = run.read_table("sft_data").to_pylist()[0]
    request = [ScoreRequest(row["image"], row["prompt"], row["completion"])]
    expected = TransformersScorer.from_pretrained(model_dir).score(request)[0]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in VLLM_CPU_ENV.items():
            patch.setenv(key, os.environ.get(key, value))
        llm = make_vllm_engine(model_dir, max_model_len=512)
        try:
            got = VLLMScorer(llm).score(request)[0]
        finally:
            shutdown_vllm_engine(llm)
    assert got.token_ids == expected.token_ids
    assert got.total == pytest.approx(expected.total, abs=1e-3)


def _ray_train_workers() -> list:
    """This test session's Ray Train workers (descendants of this process: its own Ray cluster)."""
    import psutil

    workers = []
    for process in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(process.cmdline()):
                workers.append(process)
        except psutil.Error:  # exited meanwhile, or a zombie
            continue
    return workers


@pytest.mark.slow
def test_killed_worker_resumes_from_the_last_checkpoint(sft_run, tmp_path) -> None:
    import os
    import signal
    import threading
    import time
    from pathlib import Path

    root = copy_run(sft_run, tmp_path / "kill")
    config = run_config(root, *stage_overrides("sft", "sft.max_steps=20", "sft.save_steps=2", "sft.max_failures=1",
                                               "sft.keep_checkpoints=true"))
    errors: list[BaseException] = []

    def target() -> None:
        try:
            train_sft.main(config)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    killed = None
    deadline = time.time() + 300
    while killed is None and thread.is_alive() and time.time() < deadline:
        # Once the step-6 checkpoint shows up, Ray has registered an earlier one: kill a worker mid-run.
        if any(Path(root, "checkpoints").glob("*/checkpoint_00000006")):
            workers = _ray_train_workers()
            if workers:
                killed = workers[-1].pid
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    thread.join(timeout=300)
    assert not errors, errors
    assert killed is not None, "training finished before a worker could be killed"
    run = RunDir(root)
    training = json.loads(open(run.path("models/sft", "training.json")).read())
    assert training["global_step"] == 20
    assert training["resumed_from_step"] is not None and training["resumed_from_step"] >= 2
    steps = [json.loads(line)["step"] for line in open(run.path("models/sft", "metrics.jsonl"))]
    assert steps == list(range(1, 21))

    # An interrupted stage (trained, not finished) resumes on a rerun: from the final checkpoint here.
    run.fs.delete_file(run.path("models/sft", "_manifest.json"))
    train_sft.main(config)
    assert json.loads(open(run.path("models/sft", "training.json")).read())["resumed_from_step"] == 20
    assert run.manifest("models/sft")["steps"] == 20


def test_sft_one_step_on_tiny_llava_next(sft_run, tmp_path, tiny_next_model_dir) -> None:
    """The production model class (LLaVA-NeXT: image tiles, image_sizes) through the same path."""
    from reasoner.models import load_model
    from tests.jobs.conftest import install_model

    root = copy_run(sft_run, tmp_path / "next")
    install_model(RunDir(root), tiny_next_model_dir, "models/next")
    config = run_config(root, *stage_overrides("sft", "sft.model=models/next", "sft.max_steps=1",
                                               "sft.save_steps=1", "sft.zero_stage=3"))
    train_sft.main(config)
    run = RunDir(root)
    assert run.manifest("models/sft")["steps"] == 1
    assert type(load_model(run.path("models/sft"))).__name__ == "LlavaNextForConditionalGeneration"


@pytest.mark.slow
def test_checkpoint_selection_by_sampled_validation_accuracy(sft_run, tmp_path) -> None:
    from reasoner.models import check_model_dir
    from reasoner.training.select import choose
    root = copy_run(sft_run, tmp_path / "select")
    # The sampling engines are built as stage sample's (the default config's engine section).
    train_sft.main(run_config(root, *stage_overrides("sft", "sft.select.enabled=true", "sft.select.questions=4",
                                                     "sft.select.samples=2", "sft.select.max_tokens=8",
                                                     "sft.eval.questions=3", "sft.eval.max_tokens=8")))
    run = RunDir(root)
    selection = json.loads(open(run.path("models/sft", "selection.json")).read())
    assert sorted(s["step"] for s in selection["scores"]) == [2, 4]
    assert selection["chosen_step"] == choose(selection["scores"])["step"]
    assert run.manifest("models/sft")["selected_step"] == selection["chosen_step"]
    check_model_dir(run.path("models/sft"))
    check_greedy_evaluation(run, "models/sft", questions=3, max_tokens=8)
