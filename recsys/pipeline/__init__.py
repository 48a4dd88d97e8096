"""The training pipeline behind ``scripts/train.py``, usable without Hydra.

``run(cfg, output_dir)`` does, in order (one module per stage):

1. validate the config (:func:`recsys.config.validate`; a bad value fails before data loads);
2. load the data and split it (``cfg.data``, ``cfg.split``), then carve a validation split from
   the training part (``cfg.split.validation``) for early stopping (:mod:`.data`);
3. train :class:`recsys.als.ALS`, one epoch at a time (:mod:`.fit`, with the epoch callbacks of
   :mod:`.callbacks`): TensorBoard scalars and histograms, a progress bar, an evaluation on the
   validation split every ``eval.every`` epochs, early stopping after ``eval.patience``
   evaluations without improvement (the best epoch's factors are kept), an atomic checkpoint
   every ``checkpoint.every`` epochs (:mod:`.checkpoints`);
4. optionally refit on the whole training split for the best number of epochs (``eval.refit``)
   or sample the posterior (``als.posterior_samples``);
5. evaluate on the test split (:mod:`.evaluate`), export the item embeddings into the configured
   Faiss index (:mod:`.export`);
6. write the artifacts into `output_dir`, each atomically (temp file + ``os.replace``), the model
   first and ``metrics.json`` last, so a killed run never leaves a half-written file and a run
   folder with ``metrics.json`` is complete (:mod:`.artifacts`, :mod:`.metadata`).

Artifacts: ``model.npz`` (``ALS.save``), ``items.faiss`` + ``items.faiss.json`` (the index and its
sidecar), ``metrics.json`` (flat ``{"recall@20": ..., "train_seconds": ...}``), ``metadata.json``
(resolved config, data statistics, versions, device, git commit, loss history, evaluations),
``tb/`` (TensorBoard, :mod:`.tracking`), ``report.md`` with its PNG plots (:mod:`.report`) and
``checkpoints/`` (removed when the run completes). A sweep's folder gets ``summary.md``, its
jobs best first (:mod:`.sweep`).

Distributed (``als.distributed=true`` under ``torchrun``): rank 0 alone evaluates, checkpoints,
logs and writes the artifacts (:mod:`.ranks`).

Resuming (``cfg.resume`` or ``cfg.run_dir``): training continues from the newest checkpoint in
`output_dir` with the configuration saved in it and, on the CPU, ends with the same factors as an
uninterrupted run.
"""

from recsys.pipeline.artifacts import (
    CHECKPOINT_DIR,
    INDEX_FILE,
    METADATA_FILE,
    METRICS_FILE,
    MODEL_FILE,
    TB_DIR,
    TRAIN_FILE,
    ArtifactError,
    atomic_write_json,
    atomic_write_text,
    lock_run_folder,
)
from recsys.pipeline.callbacks import EarlyStopping, EpochHook
from recsys.pipeline.checkpoints import Checkpointer
from recsys.pipeline.data import Prepared, load_data, prepare_data
from recsys.pipeline.evaluate import evaluate_model
from recsys.pipeline.export import export_index
from recsys.pipeline.run import RunResult, run
from recsys.pipeline.saved import SavedRun, load_run, parse_key_values
from recsys.pipeline.sweep import write_sweep_summary

__all__ = [
    "CHECKPOINT_DIR",
    "INDEX_FILE",
    "METADATA_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "TB_DIR",
    "TRAIN_FILE",
    "ArtifactError",
    "Checkpointer",
    "EarlyStopping",
    "EpochHook",
    "Prepared",
    "RunResult",
    "SavedRun",
    "atomic_write_json",
    "atomic_write_text",
    "evaluate_model",
    "export_index",
    "load_data",
    "load_run",
    "lock_run_folder",
    "parse_key_values",
    "prepare_data",
    "run",
    "write_sweep_summary",
]
