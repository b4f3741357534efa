"""The training stages' metric files, readable without the training stack (transformers, TRL).

``metrics.jsonl`` beside an exported model holds the trainer's per-step records as JSON lines
(``write_metrics``, by ``reasoner.training.export``); the report and the jobs read them back.
During training, rank 0 writes ``<run>/logs/progress-<stage>.json`` (``progress_file``), which the
job's driver polls for its progress line (``reasoner.training.progress.StepMetrics`` writes both).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from reasoner.rundir import RunDir

METRICS_FILE = "metrics.jsonl"
PROGRESS_DIR = "logs"


def progress_file(stage: str) -> str:
    """The name of a training stage's progress file under ``<run>/logs``: ``{"step", "max_steps"}``."""
    return f"progress-{stage}.json"


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


def run_metrics(run: RunDir, artifact: str) -> list[dict[str, Any]]:
    """The records of ``<run>/<artifact>/metrics.jsonl``, read through the run's filesystem (a
    bucket's model is not downloaded for it); FileNotFoundError if it has none."""
    with run.fs.open_input_stream(run.path(artifact, METRICS_FILE)) as fh:
        return _records(fh.read().decode("utf-8"))


def last_metrics(run: RunDir, artifact: str) -> dict[str, Any]:
    """The last record of ``<run>/<artifact>/metrics.jsonl`` ({} if it has none)."""
    records = run_metrics(run, artifact)
    return records[-1] if records else {}
