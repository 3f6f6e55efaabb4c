"""Training engine and its handlers."""

from .evaluation import SegmentationReport
from .handlers import ProgressBar, TrainingStateSaver
from .trainer import SemiSupervisedTrainer

__all__ = ["SemiSupervisedTrainer", "ProgressBar", "TrainingStateSaver", "SegmentationReport"]
