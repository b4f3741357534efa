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

import logging
import time

from transformers import TrainerCallback

from reasoner.rundir import RunDir
from reasoner.training.metrics import PROGRESS_DIR, progress_file

logger = logging.getLogger(__name__)

SHOWN = ("loss", "rewards/margins", "rewards/accuracies", "grad_norm", "learning_rate", "steps_per_second")


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
