"""Training engine and its handlers."""

from .distributed import DistributedNetwork
from .evaluation import SegmentationReport
from .handlers import AtomicCheckpointSaver, ProgressBar, TrainingStateLoader, TrainingStateSaver
from .resume import latest_checkpoint, resume_checkpoint
from .trainer import SemiSupervisedTrainer

__all__ = [
    "SemiSupervisedTrainer",
    "ProgressBar",
    "AtomicCheckpointSaver",
    "TrainingStateSaver",
    "TrainingStateLoader",
    "SegmentationReport",
    "DistributedNetwork",
    "latest_checkpoint",
    "resume_checkpoint",
]
