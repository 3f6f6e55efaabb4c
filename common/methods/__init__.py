"""Method objects: one per semi-supervised method, each returning its named losses per iteration."""

from .alhvr import ALHVR
from .base import SemiSupervisedMethod
from .coranet import CoraNet
from .cps import CPS
from .dycon import DyCON
from .mean_teacher import MeanTeacher
from .stlu import STLU
from .supervised import Supervised
from .uamt import UAMT

__all__ = ["SemiSupervisedMethod", "Supervised", "MeanTeacher", "UAMT", "CPS", "ALHVR", "DyCON", "CoraNet", "STLU"]
