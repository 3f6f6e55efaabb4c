"""Clocks, round statistics and process memory for the benchmark."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from ignite.engine import Engine, Events


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that a wall-clock reading covers it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Stats:
    """Median and spread of per-iteration (or per-case) times in seconds over the timed rounds."""

    median: float
    minimum: float
    maximum: float
    rounds: int

    @property
    def spread(self) -> float:
        """Relative range ``(max - min) / median`` of the rounds."""
        return (self.maximum - self.minimum) / self.median if self.median > 0 else float("nan")


def summarise(values: Sequence[float]) -> Stats:
    """:class:`Stats` of the timed rounds (the warm-up is never passed here)."""
    if not values:
        raise ValueError("no timed rounds")
    return Stats(float(statistics.median(values)), float(min(values)), float(max(values)), len(values))


def ratio(numerator: Stats, denominator: Stats) -> float:
    """Ratio of two medians."""
    return numerator.median / denominator.median


class IterationClock:
    """Times the iterations of an ignite engine from fetching the batch to the last ITERATION_COMPLETED handler.

    ``attach`` after every other handler, so the bundle's own per-iteration handlers (LR schedule, logging) are
    inside the measured span; epoch- and run-level events are outside it. ``take()`` returns and clears the
    durations collected since the last call.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._start = 0.0
        self._durations: list[float] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)

    def _started(self, _engine: Engine) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def _completed(self, _engine: Engine) -> None:
        synchronize(self.device)
        self._durations.append(time.perf_counter() - self._start)

    def take(self) -> list[float]:
        durations, self._durations = self._durations, []
        return durations


class Interrupter:
    """Interrupts an ignite engine every ``every`` iterations, so that each ``engine.run()`` is one round and the
    next call continues the same run (same epoch, same data iterators)."""

    def __init__(self, every: int) -> None:
        self.every = every

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), lambda e: e.interrupt())


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mib() -> float | None:
    """Current resident set size of this process in MiB (Linux), else None."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS; False where that is not possible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float | None:
    """Peak resident set size since the last :func:`reset_peak_rss` (or process start) in MiB, else None."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib / 1024
