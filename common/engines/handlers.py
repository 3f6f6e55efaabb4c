"""Small ignite handlers that bundles attach by ``_target_``."""

from __future__ import annotations

from collections.abc import Mapping

from ignite.engine import Engine
from ignite.handlers import ProgressBar as _IgniteProgressBar
from monai.handlers import CheckpointSaver


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


class TrainingStateSaver(CheckpointSaver):
    """``CheckpointSaver`` whose checkpoints also hold the engine it is attached to (iteration, epoch).

    A handler cannot name its own trainer in ``save_dict`` from a config (the trainer lists its handlers, which
    would be a circular reference), so the engine is added here when the handler is attached.
    """

    def __init__(self, *args, engine_key: str = "trainer", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        self.save_dict[self.engine_key] = engine  # the Checkpoint objects hold this same dict
        super().attach(engine)
