"""Training engine and its handlers."""

from .distributed import DistributedNetwork, distributed_sampler, process_rank, unwrap_network
from .evaluation import SegmentationReport
from .handlers import AtomicCheckpointSaver, FinalWeightsSaver, ProgressBar, TrainingStateLoader, TrainingStateSaver
from .resume import latest_checkpoint, resume_checkpoint
from .trainer import SemiSupervisedTrainer

__all__ = [
    "SemiSupervisedTrainer",
    "ProgressBar",
    "AtomicCheckpointSaver",
    "FinalWeightsSaver",
    "TrainingStateSaver",
    "TrainingStateLoader",
    "SegmentationReport",
    "DistributedNetwork",
    "distributed_sampler",
    "process_rank",
    "unwrap_network",
    "latest_checkpoint",
    "resume_checkpoint",
]
