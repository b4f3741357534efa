"""Ray Train wiring: one ``TorchTrainer`` runs a TRL trainer under DeepSpeed ZeRO on every worker.

The same code runs 2 CPU workers with gloo here and 8-GPU nodes with NCCL in production
(``TrainConfig.use_gpu``). Checkpoints go to the run's storage (``<run>/checkpoints/<stage>``,
through the run directory's pyarrow filesystem, so a bucket works as a local path does):

- each HF checkpoint (every ``save_steps``) reaches Ray through ``report_checkpoint_callback``:
  Ray's ``RayTrainReportCallback`` but with the directory named by the step, so every worker's
  part (ZeRO shards optimizer states by rank) lands in one Ray checkpoint (Ray Train 2.60 names
  each worker's directory by its own timestamp otherwise, splitting a checkpoint in two);
- ``FailureConfig(max_failures)``: a killed worker restarts the worker group, which resumes from
  the latest checkpoint (``ray.train.get_checkpoint``);
- a rerun of an interrupted stage (same run name and storage) resumes the same way.

Worker-side helpers (``worker_setup``, ``train_and_resume``, ``worker_teardown``) run inside the
training function; ``fit`` runs on the driver. Ray and torch are imported inside functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from reasoner.rundir import RunDir
from reasoner.training.config import TrainConfig
from reasoner.training.deepspeed import zero_config

if TYPE_CHECKING:
    from transformers import Trainer

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
PRINT_PATCH_ENV = "RAY_TRAIN_ENABLE_PRINT_PATCH"


def checkpoint_storage(run: RunDir, stage: str) -> tuple[str, str]:
    """``(storage_path, name)`` of a stage's Ray Train run inside the run directory."""
    return run.path(CHECKPOINTS), stage


def train_run_name(stage: str, digest: str) -> str:
    """The Ray Train run of a stage with config hash ``digest``: only a run of the same config
    resumes its checkpoints (``<run>/checkpoints/<name>``)."""
    return f"{stage}-{digest}"


def remove_checkpoints(run: RunDir, stage: str) -> None:
    """Delete a finished stage's Ray Train run (its checkpoints) from the run's storage."""
    import pyarrow.fs as pafs

    storage_path, name = checkpoint_storage(run, stage)
    target = f"{storage_path.rstrip('/')}/{name}"
    if run.fs.get_file_info(target).type != pafs.FileType.NotFound:
        run.fs.delete_dir(target)
        logger.info("deleted the checkpoints of %s (%s)", stage, target)


def warn_if_short(config: TrainConfig, stage: str) -> None:
    """Warn when the cluster has fewer CPUs or GPUs than the workers ask for: Ray Train then waits,
    silently, for an autoscaler to add them (the right thing on KubeRay, a hang on a laptop)."""
    import ray

    have = ray.cluster_resources()
    need = {"CPU": config.num_workers * config.cpus_per_worker, "GPU": config.num_workers if config.use_gpu else 0}
    short = {k: (v, have.get(k, 0)) for k, v in need.items() if v > have.get(k, 0)}
    if short:
        logger.warning("%s asks for %s; the cluster has %s now: training waits until an autoscaler adds them "
                       "(or set num_workers / cpus_per_worker of the stage's section to fit)", stage,
                       ", ".join(f"{v[0]:g} {k}" for k, v in short.items()),
                       ", ".join(f"{v[1]:g} {k}" for k, v in short.items()))


def fit(train_fn: Callable[[dict], None], loop_config: dict[str, Any], config: TrainConfig, run: RunDir,
        stage: str):
    """Run ``train_fn(loop_config)`` on ``config.num_workers`` Ray Train workers; the ``ray.train.Result``.

    Raises ``ray.train.TrainingFailedError`` once the workers failed more than
    ``config.max_failures`` times.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    storage_path, name = checkpoint_storage(run, stage)
    warn_if_short(config, stage)
    trainer = TorchTrainer(
        train_fn,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     resources_per_worker={"CPU": config.cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        run_config=RunConfig(
            name=name, storage_path=storage_path, storage_filesystem=run.fs,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=config.save_total_limit),
            # Ray Train patches print() in its workers to copy every line into its logger, which
            # writes each one to the driver twice (and leaks output libraries capture, such as
            # dill's disassembly when datasets fingerprints a table). Our logs go through logging.
            worker_runtime_env={"env_vars": {
                PRINT_PATCH_ENV: os.environ.get(PRINT_PATCH_ENV, "0")}},
        ),
    )
    return trainer.fit()


# --------------------------------------------------------------------------- inside a worker


def worker_setup(config: TrainConfig) -> None:
    """Make DeepSpeed use the process group Ray Train started (ZeRO-3 builds models under
    ``zero.Init``, which otherwise sees a world of one); torch threads per reserved CPU."""
    import deepspeed
    import torch

    if not config.use_gpu:
        torch.set_num_threads(config.cpus_per_worker)
    deepspeed.init_distributed(dist_backend="nccl" if config.use_gpu else "gloo")


def worker_teardown() -> None:
    """Wait for every worker, then close the process group (else an abort at exit on CPU)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def training_arguments(args_cls: type, config: TrainConfig, output_dir: str, **extra: Any):
    """TRL training arguments (``args_cls``: ``trl.SFTConfig`` or ``trl.DPOConfig``) of ``config``."""
    import torch

    return args_cls(
        output_dir=output_dir,
        deepspeed=zero_config(config.zero_stage, bf16=config.dtype == "bfloat16"),
        use_cpu=not torch.cuda.is_available(),
        bf16=config.dtype == "bfloat16",
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        gradient_checkpointing=config.gradient_checkpointing,
        max_length=config.max_length,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **extra,
    )


def local_output_dir(stage: str) -> str:
    """A fresh local directory for a worker's HF checkpoints (uploaded to Ray's storage on save)."""
    return tempfile.mkdtemp(prefix=f"reasoner-{stage.replace('/', '-')}-")


CHECKPOINT_NAME = "checkpoint"


def report_checkpoint_callback():
    """A ``TrainerCallback`` reporting each saved HF checkpoint (and the logged metrics) to Ray Train,
    as ``checkpoint_<step>/checkpoint/``; every worker reports its own files into the same directory."""
    import shutil

    import ray.train
    import transformers
    from ray.train import Checkpoint

    class ReportCheckpoint(transformers.TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            metrics: dict[str, Any] = {}
            for record in state.log_history:
                metrics.update(record)
            source = transformers.trainer_utils.get_last_checkpoint(args.output_dir)
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if source is not None:
                    shutil.copytree(source, os.path.join(tmp, CHECKPOINT_NAME))
                    checkpoint = Checkpoint.from_directory(tmp)
                ray.train.report(metrics=metrics, checkpoint=checkpoint,
                                 checkpoint_dir_name=f"checkpoint_{state.global_step:08d}")

    return ReportCheckpoint()


@contextlib.contextmanager
def train_and_resume(trainer: Trainer) -> Iterator[tuple[int | None, str | None]]:
    """``trainer.train()``, resuming from Ray Train's latest checkpoint if there is one.

    Yields ``(resumed_from_step, finished_checkpoint)``: the step it resumed from (None for a fresh
    start), and, when that checkpoint already ends the training, its HF checkpoint directory (valid
    inside the context) with ``trainer.state`` loaded from it instead of training. (Resuming at
    the last step mid-epoch, the HF Trainer would run one step more.)
    """
    import ray.train
    from transformers import TrainerState

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        trainer.train()
        yield None, None
        return
    with checkpoint.as_directory() as directory:
        path = os.path.join(directory, CHECKPOINT_NAME)
        state = TrainerState.load_from_json(os.path.join(path, "trainer_state.json"))
        if state.max_steps and state.global_step >= state.max_steps:
            logger.info("the checkpoint of step %d ends the training: exporting it", state.global_step)
            trainer.state = state
            yield state.global_step, path
            return
        logger.info("resuming from step %d (%s)", state.global_step, path)
        trainer.train(resume_from_checkpoint=path)
        yield state.global_step, None
