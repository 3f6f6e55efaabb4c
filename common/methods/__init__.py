"""Method objects: one per semi-supervised method, each returning its named losses per iteration."""

from .base import SemiSupervisedMethod
from .mean_teacher import MeanTeacher
from .supervised import Supervised

__all__ = ["SemiSupervisedMethod", "Supervised", "MeanTeacher"]
