"""Pieces of exact resume: seeds derived from (seed, iteration), atomic checkpoint files, finding the latest one.

A resumed run must draw the same random numbers as an uninterrupted one. The trainer therefore starts every
epoch from a state that depends only on ``(seed, iteration)`` and on what the checkpoint holds (see
``SemiSupervisedTrainer``); the helpers here derive those seeds and apply them.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.utils import set_rnd

__all__ = [
    "atomic_torch_save",
    "derived_seed",
    "latest_checkpoint",
    "parse_flag",
    "reseed_global_generators",
    "resume_checkpoint",
    "seed_loader",
]

_MAX_SEED = 2**32  # numpy's global generator accepts seeds below 2**32
_STEP_NUMBER = re.compile(r"=(\d+)\.pt$")


def derived_seed(seed: int, iteration: int, stream: int = 0) -> int:
    """A well-mixed 32-bit seed of ``(seed, iteration, stream)``; ``stream`` separates independent consumers."""
    return int(np.random.SeedSequence([int(seed) % _MAX_SEED, int(iteration), int(stream)]).generate_state(1)[0])


def reseed_global_generators(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy's and Python's global generators with one seed."""
    torch.manual_seed(seed)
    np.random.seed(seed % _MAX_SEED)
    random.seed(seed)


def seed_loader(loader: Iterable, seed: int) -> None:
    """Seed the random transforms of a loader's dataset (MONAI ``set_random_state``) and its own generator.

    With ``num_workers=0`` the transforms run in this process and draw from the states set here; with workers,
    MONAI's ``worker_init_fn`` reseeds them from the loader's base seed, itself drawn from the torch generator.
    """
    dataset = getattr(loader, "dataset", None)
    if dataset is not None:
        set_rnd(dataset, seed)
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the target folder, then ``os.replace`` it onto ``path``.

    ``os.replace`` is atomic on one file system, so ``path`` always holds either the previous complete file or
    the new complete file, whatever happens during the write (exception, SIGKILL, full disk).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; checkpoints are shared like any other output
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(folder: Path) -> None:
    # makes the rename itself durable across a power loss; not available on every platform
    if not hasattr(os, "O_DIRECTORY"):
        return
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _step_number(path: Path) -> int:
    match = _STEP_NUMBER.search(path.name)
    return int(match.group(1)) if match else -1


def latest_checkpoint(ckpt_dir: str | os.PathLike, file_prefix: str = "latest") -> str:
    """The newest ``<file_prefix>_*.pt`` in ``ckpt_dir``: highest epoch/iteration number in its name, then newest.

    Raises:
        FileNotFoundError: naming the folder, when it holds no such checkpoint.
    """
    folder = Path(ckpt_dir)
    candidates = sorted(folder.glob(f"{file_prefix}_*.pt"), key=lambda p: (_step_number(p), p.stat().st_mtime_ns))
    if not candidates:
        raise FileNotFoundError(
            f"Cannot resume: no training checkpoint {file_prefix}_*.pt in {folder} (a run writes one at the end of "
            "every epoch of val_interval iterations). Train without --resume, or pass --resume_from <file>."
        )
    return str(candidates[-1])


def parse_flag(value: bool | int | str, name: str = "resume") -> bool:
    """A boolean from a config value or a command-line string (``--resume true`` arrives as ``"true"``)."""
    if isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ValueError(f"{name} must be true or false, got {value!r}.")


def resume_checkpoint(resume: bool | int | str, ckpt_dir: str | os.PathLike, file_prefix: str = "latest") -> str | None:
    """The checkpoint a run resumes from: the latest in ``ckpt_dir`` when ``resume`` is true, else ``None``."""
    return latest_checkpoint(ckpt_dir, file_prefix) if parse_flag(resume) else None
