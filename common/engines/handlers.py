"""Small ignite handlers that bundles attach by ``_target_``: progress, atomic checkpoints, training state."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint, DiskSaver
from ignite.handlers import ProgressBar as _IgniteProgressBar
from monai.handlers import CheckpointLoader, CheckpointSaver

from .resume import atomic_torch_save

logger = logging.getLogger(__name__)


def _loss_values(output) -> dict[str, float]:
    if isinstance(output, Mapping):
        return {key: float(value) for key, value in output.items()}
    return {}


class ProgressBar:
    """A tqdm progress bar over iterations that shows the current value of every loss component."""

    def __init__(self, persist: bool = False) -> None:
        self.persist = persist

    def attach(self, engine: Engine) -> None:
        _IgniteProgressBar(persist=self.persist).attach(engine, output_transform=_loss_values)


class AtomicDiskSaver(DiskSaver):
    """Disk writer of ignite ``Checkpoint`` objects that never leaves a missing or half-written file behind.

    Ignite removes the file it replaces *before* writing the new one, and MONAI's ``CheckpointSaver`` writes in
    place (``atomic=False``). Here each file is written to a temporary file and ``os.replace``-d onto its name,
    and removals are deferred until the next write has succeeded, so a crash at any moment leaves the previous
    checkpoint complete and loadable.

    Args:
        dirname: folder of the checkpoints.
        filename: fixed file name (``model.pt``) instead of ignite's generated names, as MONAI's saver allows.
        save_on_rank: the only distributed rank that writes.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, save_on_rank: int = 0) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False, create_dir=True, save_on_rank=save_on_rank)
        self.filename = filename
        self._stale: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != self.save_on_rank:
            return
        name = self.filename or filename
        atomic_torch_save(checkpoint, Path(self.dirname) / name)
        for stale in self._stale:
            if stale != name:
                (Path(self.dirname) / stale).unlink(missing_ok=True)
        self._stale.clear()

    def remove(self, filename: str) -> None:
        if idist.get_rank() == self.save_on_rank:
            self._stale.append(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) writing every file through :class:`AtomicDiskSaver`.

    Used for ``model.pt`` (final or best-metric weights) and the training state: an interrupted save never
    costs the previous file. ``state_dict`` holds the best-metric tracker (scores and files kept), so a bundle
    lists this saver in its training state and a resumed run keeps comparing against the best score so far
    instead of overwriting ``model.pt`` at its first validation.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in self._checkpoints():
            fixed_name = getattr(checkpoint.save_handler, "filename", None)
            checkpoint.save_handler = AtomicDiskSaver(self.save_dir, filename=fixed_name)

    def state_dict(self) -> dict[str, list[tuple[float, str]]]:
        tracker = self._key_metric_checkpoint
        # plain floats: metrics may be NumPy scalars, which weights-only loading refuses
        return {"_saved": [] if tracker is None else [(float(item.priority), item.filename) for item in tracker._saved]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if self._key_metric_checkpoint is not None:
            self._key_metric_checkpoint.load_state_dict(state_dict)

    def _checkpoints(self) -> list[Checkpoint]:
        candidates = (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint)
        return [checkpoint for checkpoint in candidates if checkpoint is not None]


class FinalWeightsSaver(AtomicCheckpointSaver):
    """The final weights as ``model.pt`` for a run that does not validate, logged as a warning.

    Without validation no best-model saver writes ``model.pt``; this one does at the end (and on an exception), so
    a training that ends always leaves new weights, e.g. a MONAI Label training whose validation split is empty.
    """

    def attach(self, engine: Engine) -> None:
        logger.warning(
            "No validation in this run (the validation list is empty or val_interval exceeds max_iterations): "
            "no best-model selection, the final weights become %s.",
            Path(self.save_dir) / (self._final_filename or "model.pt"),
        )
        super().attach(engine)


class TrainingStateSaver(AtomicCheckpointSaver):
    """Atomic ``CheckpointSaver`` of the full training state, including the engine it is attached to.

    A handler cannot name its own trainer in ``save_dict`` from a config (the trainer lists its handlers, which
    would be a circular reference), so the engine (iteration, epoch) is added here when the handler is attached.

    Saving is epoch-level only: the trainer restarts its data streams and reseeds every generator at each epoch
    start (``SemiSupervisedTrainer(seed=...)``), so an epoch boundary is the only point from which a resumed run
    draws exactly what the uninterrupted run drew. After each save, ``<file_prefix>_*.pt`` files other than the
    ``n_saved`` kept ones (left by a crash between write and clean-up, by an earlier run in the same folder, or by
    the run this one resumed) are deleted, so the newest file is always this run's.
    """

    def __init__(self, *args: Any, engine_key: str = "trainer", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._interval_checkpoint is not None and not self.epoch_level:
            raise ValueError(
                "TrainingStateSaver saves at epoch ends only (epoch_level=true): a resumed run continues exactly "
                "only from an epoch boundary, where the trainer reseeds and restarts its data streams."
            )
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        self.save_dict[self.engine_key] = engine  # the Checkpoint objects hold this same dict
        super().attach(engine)

    def interval_completed(self, engine: Engine) -> None:
        super().interval_completed(engine)
        self._delete_unkept_files()

    def _delete_unkept_files(self) -> None:
        checkpoint = self._interval_checkpoint
        if checkpoint is None or idist.get_rank() != 0:
            return
        kept = {item.filename for item in checkpoint._saved}
        for path in Path(self.save_dir).glob(f"{checkpoint.filename_prefix}_*.pt"):
            if path.name not in kept:
                path.unlink(missing_ok=True)


class TrainingStateLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` for a :class:`TrainingStateSaver` file: also restores the engine it is
    attached to (iteration, epoch), checks the file before training starts and names it in every error.

    Args:
        load_path: the checkpoint (a bundle's ``resume_from``).
        load_dict: the objects to restore, the saver's ``save_dict`` without the engine.
        engine_key: key of the engine state in the checkpoint.
        map_location: ``torch.load`` location; ``"cpu"`` by default, ``load_state_dict`` then copies every
            tensor to its module's/optimiser's device, so GPU checkpoints resume on CPU-only machines too.
        strict: strict ``load_state_dict`` of modules.
    """

    def __init__(
        self,
        load_path: str | os.PathLike,
        load_dict: Mapping[str, Any],
        engine_key: str = "trainer",
        name: str | None = None,
        map_location: Any = "cpu",
        strict: bool = True,
    ) -> None:
        if load_path is None or not Path(load_path).is_file():
            raise FileNotFoundError(f"Cannot resume: training checkpoint {load_path} does not exist.")
        super().__init__(str(load_path), dict(load_dict), name=name, map_location=map_location, strict=strict)
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        self.load_dict[self.engine_key] = engine
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        path = self.load_path
        try:
            checkpoint = torch.load(path, map_location=self.map_location, weights_only=True)
        except Exception as error:
            raise RuntimeError(f"Cannot read training checkpoint {path}: {error}") from error
        missing = sorted(key for key in self.load_dict if key not in checkpoint)
        if missing:
            raise ValueError(
                f"Training checkpoint {path} lacks {missing} (it holds {sorted(checkpoint)}); it was written by a "
                "different bundle or an older version of this one."
            )
        saved_length = checkpoint[self.engine_key].get("epoch_length")
        if engine.state.epoch_length is not None and saved_length != engine.state.epoch_length:
            raise ValueError(
                f"Training checkpoint {path} was written with epoch_length={saved_length} but this run has "
                f"epoch_length={engine.state.epoch_length}: resume with the same val_interval and max_iterations."
            )
        prior_max_epochs = engine.state.max_epochs
        try:
            Checkpoint.load_objects(to_load=self.load_dict, checkpoint=checkpoint, strict=self.strict)
        except (RuntimeError, ValueError, KeyError) as error:
            raise RuntimeError(f"Cannot restore the training state from {path}: {error}") from error
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise ValueError(
                f"Training checkpoint {path} is at epoch {engine.state.epoch}, beyond this run's {prior_max_epochs} "
                "epochs: raise max_iterations to train further."
            )
        engine.state.max_epochs = prior_max_epochs
        logging.getLogger(__name__).info("Resumed from %s at iteration %d.", path, engine.state.iteration)
