"""Loss functions: pure functions of tensors, one module per paper plus shared ones."""

from .consistency import masked_softmax_mse, softmax_mse

__all__ = ["softmax_mse", "masked_softmax_mse"]
