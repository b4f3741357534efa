"""Training stages on Ray Train: SFT (B) and DPO (C3) with TRL under DeepSpeed ZeRO.

- ``config``: the ``sft`` and ``dpo`` config sections (``TrainConfig`` shared);
- ``data``: checking ``sft_data`` / ``pairs`` / ``dpo_ref``, the SFT mix, TRL-form datasets;
  ``stream``: artifacts read a batch at a time, a worker's data as a memory-mapped Arrow file;
- ``deepspeed``: ZeRO-2 / ZeRO-3 configs; ``raytrain``: the ``TorchTrainer`` wiring, checkpoints,
  recovery; ``worker``: the per-worker train-and-export body;
- ``sft``, ``dpo``: the stages; ``reference``: the DPO reference pass into ``<run>/dpo_ref``;
- ``progress``: per-step metrics; ``export``: the model into the run (vLLM layout, LoRA adapter).

torch, TRL, DeepSpeed and Ray are imported inside functions: importing the package is cheap.
"""
