"""Training engine and its handlers."""

from .handlers import ProgressBar, TrainingStateSaver
from .trainer import SemiSupervisedTrainer

__all__ = ["SemiSupervisedTrainer", "ProgressBar", "TrainingStateSaver"]
