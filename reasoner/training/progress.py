"""Visible progress: per-step metrics in the log and a metrics file beside the exported model.

``StepMetrics`` adds the throughput (``steps_per_second`` over the last logging interval) to each
logged record and logs it as one line (rank 0), and logs the final step too, so the metrics file
and the manifest's step count end where training did (the trainer logs only every
``logging_steps``); ``write_metrics`` writes the trainer's log history
(which survives a resume: it is part of every checkpoint) as JSON lines. For DPO the records hold
TRL's ``loss``, ``rewards/margins`` (reward margin) and ``rewards/accuracies`` (chosen over
rejected accuracy).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from reasoner.rundir import RunDir

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SHOWN = ("loss", "rewards/margins", "rewards/accuracies", "grad_norm", "learning_rate", "steps_per_second")


PROGRESS_DIR = "logs"


def progress_file(stage: str) -> str:
    """The name of a training stage's progress file under ``<run>/logs``: ``{"step", "max_steps"}``."""
    return f"progress-{stage}.json"


class StepMetrics(TrainerCallback):
    """Throughput per logging interval, added to the trainer's log history and logged on rank 0.

    With ``run`` and ``stage``, rank 0 also writes ``<run>/logs/progress-<stage>.json`` at every
    logging step, which the job's driver polls for its progress line.
    """

    def __init__(self, run: RunDir | None = None, stage: str | None = None) -> None:
        self._time: float | None = None
        self._step = 0
        self._progress = (run, progress_file(stage)) if run is not None and stage else None

    def on_train_begin(self, args, state, control, **kwargs):
        self._time, self._step = time.perf_counter(), state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        now = time.perf_counter()
        if self._time is not None and state.global_step > self._step and state.log_history:
            record = state.log_history[-1]
            record["steps_per_second"] = round((state.global_step - self._step) / (now - self._time), 4)
            self._time, self._step = now, state.global_step
            if state.is_world_process_zero:
                shown = " ".join(f"{k}={record[k]:.4g}" for k in SHOWN if isinstance(record.get(k), (int, float)))
                logger.info("step %d/%d %s", state.global_step, state.max_steps, shown)
                if self._progress is not None:
                    run, name = self._progress
                    try:
                        run.write_json({"step": state.global_step, "max_steps": state.max_steps,
                                        "loss": record.get("loss")}, PROGRESS_DIR, name)
                    except OSError:  # progress is for show: never stop training for it
                        logger.debug("could not write %s", name, exc_info=True)


def step_records(log_history: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The per-step training records of a log history (the run summary record left out)."""
    return [dict(r) for r in log_history if "loss" in r and "step" in r]


def write_metrics(log_history: Iterable[Mapping[str, Any]], directory: str | Path) -> Path:
    """Write the per-step records as JSON lines to ``<directory>/metrics.jsonl``."""
    path = Path(directory) / METRICS_FILE
    with path.open("w", encoding="utf-8") as fh:
        for record in step_records(log_history):
            fh.write(json.dumps(record, sort_keys=True) + "\n")
    return path


def _records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics file."""
    return _records(Path(path).read_text(encoding="utf-8"))


def last_metrics(run: RunDir, artifact: str) -> dict[str, Any]:
    """The last record of ``<run>/<artifact>/metrics.jsonl`` ({} if it has none), read through the
    run's filesystem: a bucket's model is not downloaded for it."""
    with run.fs.open_input_stream(run.path(artifact, METRICS_FILE)) as fh:
        records = _records(fh.read().decode("utf-8"))
    return records[-1] if records else {}
