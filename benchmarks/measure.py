"""Measure one bundle: floor, engine and end-to-end training iterations, and inference per case.

All three training measures run in one process on the same batch sizes, interleaved round by round (floor round,
engine round, end-to-end round, repeated) after one warm-up round of each, so slow drifts of the machine affect
them alike:

* **floor** -- :mod:`benchmarks.floors` on batches already in memory;
* **engine** -- the bundle's own ``train#trainer`` (``SemiSupervisedTrainer`` + method object + the bundle's
  per-iteration handlers) fed by in-memory batches drawn once from the bundle's pipeline;
* **end to end** -- the same trainer config with the bundle's own data loaders reading the NIfTI phantoms on disk
  with the bundle's caching settings.

A round of the engine measures is one ``trainer.run()`` that the benchmark interrupts after
``iterations_per_round`` iterations (the next call continues the same run); each iteration is timed from fetching
its batch to its last ITERATION_COMPLETED handler. Epoch-level handlers (validation, checkpoints, resume) are
removed from the config: they are not per-iteration cost.
"""

from __future__ import annotations

import copy
import gc
import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from common.data.phantoms import ensure_phantom_dataset

from .floors import Batch, build_floor, iterate_pairs
from .settings import (
    CPU_INFERENCE_STRIDE_FRACTION,
    TRAINING_SUBJECTS,
    TYPICAL_SHAPE,
    Reference,
    bundle_flavour,
    config_file,
    read_config,
    reference,
)
from .timing import (
    Interrupter,
    IterationClock,
    Stats,
    peak_rss_mib,
    reset_peak_rss,
    rss_mib,
    summarise,
    synchronize,
)

# handlers of train.json that act per epoch or per run, not per iteration
EPOCH_LEVEL_HANDLERS = ("ValidationHandler", "CheckpointSaver", "TrainingStateSaver", "TrainingStateLoader")


@dataclass(frozen=True)
class Options:
    """Settings of one benchmark run (command-line options of :mod:`benchmarks.run`)."""

    device: torch.device
    amp: bool
    work_dir: Path
    rounds: int | None = None  # None: the reference's
    iterations_per_round: int | None = None
    num_workers: int | None = None  # None: the demo overlay's
    inference_settings: str = "reference"  # "reference" (CPU scale) or "bundle" (inference.json as is)
    inference_rounds: int = 3
    skip_inference: bool = False


@dataclass
class BundleResult:
    """Everything measured for one bundle (seconds per iteration / per case, MiB)."""

    bundle: str
    method: str
    dims: int
    batch: str
    floor: Stats
    engine: Stats
    end_to_end: Stats
    inference: Stats | None = None
    inference_case: str = ""
    inference_windows: str = ""
    peak_rss_mib: float | None = None
    peak_gpu_mib: float | None = None
    notes: list[str] = field(default_factory=list)


class _Sized:
    """Stands in for a loader's dataset: the engine only asks for its length (and seeds its random transforms)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


class InMemoryBatches:
    """Batches already in memory (on the device), cycled endlessly; what the engine sees instead of a DataLoader."""

    def __init__(self, batches: Sequence[Batch], dataset_size: int) -> None:
        self.batches = list(batches)
        self.dataset = _Sized(dataset_size)

    def __iter__(self) -> Iterator[Batch]:
        return itertools.cycle(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


# ---- configs -------------------------------------------------------------------------------------------------


def phantom_dirs(flavour: str, root: Path) -> Path:
    """A phantom dataset of ``flavour`` at the typical case size under ``root`` (reused when already there):
    training subjects for the data pipeline and one test case for inference."""
    return Path(
        ensure_phantom_dataset(
            root / f"phantom_{flavour}",
            flavour,
            num_train=TRAINING_SUBJECTS[flavour],
            num_val=0,
            num_test=1,
            seed=0,
            shape=TYPICAL_SHAPE[flavour],
        )
    )


def training_overrides(bundle: str, ref: Reference, dataset_dir: Path, run_dir: Path, opts: Options) -> dict:
    """Config overrides of the training measures: reference size, phantom data, scratch outputs, device."""
    total = (_rounds(ref, opts) + 1) * _per_round(ref, opts)
    values: dict[str, Any] = {
        "dataset_dir": str(dataset_dir),
        "ckpt_dir": str(run_dir / "models"),
        "output_dir": str(run_dir / "eval"),
        "device": f"$torch.device('{opts.device}')",
        "amp": opts.amp,
        "show_progress": False,
        "labeled_batch_size": ref.labeled_batch,
        "unlabeled_batch_size": ref.unlabeled_batch,
        "train#trainer#max_epochs": 1,
        "train#trainer#epoch_length": total,
        "train#trainer#max_iterations": total,
    }
    values["spatial_size" if ref.dims == 2 else "patch_size"] = list(ref.patch)
    train = read_config(bundle, "train")
    if "resize_to" in train:  # ISLES: the demo shrinks the resampled grid below the reference patch
        values["resize_to"] = train["resize_to"]
    if opts.num_workers is not None:
        values["num_workers"] = opts.num_workers
    if method_family_of(bundle) == "CoraNet":  # measure the self-training stage (the costly one)
        values["method#pretrain_iterations"] = 0
    return values


def method_family_of(bundle: str) -> str:
    return str(read_config(bundle, "train")["method"]["_target_"]).rsplit(".", 1)[-1]


def training_parser(bundle: str, overrides: Mapping[str, Any]) -> ConfigParser:
    """``train.json`` + ``demo.json`` of ``bundle`` with ``overrides`` and without epoch-level handlers."""
    parser = ConfigParser()
    parser.read_config([str(config_file(bundle, "train")), str(config_file(bundle, "demo"))])
    parser.resolve_macro_and_relative_ids()  # the shared sections become addressable by id (train#trainer#...)
    parser.update(dict(overrides))
    handlers = [h for h in parser["train#handlers"] if not str(h.get("_target_", "")).endswith(EPOCH_LEVEL_HANDLERS)]
    parser["train#handlers"] = handlers
    return parser


def _rounds(ref: Reference, opts: Options) -> int:
    return opts.rounds if opts.rounds is not None else ref.rounds


def _per_round(ref: Reference, opts: Options) -> int:
    return opts.iterations_per_round if opts.iterations_per_round is not None else ref.iterations_per_round


# ---- batches -------------------------------------------------------------------------------------------------


def _plain(batch: Mapping[str, Any], keys: Sequence[str], device: torch.device) -> dict[str, torch.Tensor]:
    out = {}
    for key in keys:
        if key in batch:
            value = batch[key]
            value = value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
            out[key] = value.to(device).clone()
    return out


def draw_batches(loader: Any, count: int, keys: Sequence[str], device: torch.device) -> list[dict]:
    """``count`` batches of the bundle's own loader, as plain tensors on ``device``."""
    batches = []
    iterator = iter(loader)
    while len(batches) < count:
        try:
            batches.append(_plain(next(iterator), keys, device))
        except StopIteration:
            iterator = iter(loader)
    return batches


# ---- training measures ---------------------------------------------------------------------------------------


class _TrainerRounds:
    """A bundle trainer that runs one round per call."""

    def __init__(self, parser: ConfigParser, per_round: int, device: torch.device) -> None:
        self.trainer = parser.get_parsed_content("train#trainer")
        self.clock = IterationClock(device)
        self.clock.attach(self.trainer)
        Interrupter(per_round).attach(self.trainer)

    def round(self) -> float:
        """Mean seconds per iteration of the next ``per_round`` iterations."""
        self.trainer.run()
        durations = self.clock.take()
        return sum(durations) / len(durations)

    def close(self) -> None:
        """Finish the interrupted run (its generator would otherwise be closed at exit, after the engine)."""
        if getattr(self.trainer, "_internal_run_generator", None) is not None:
            self.trainer.terminate()
            self.trainer.run()


class _FloorRounds:
    """The floor loop on in-memory batches, one round per call."""

    def __init__(self, parser: ConfigParser, labeled, unlabeled, per_round: int, opts: Options) -> None:
        self.step = build_floor(parser, opts.device, opts.amp)
        self.pairs = iterate_pairs(labeled, unlabeled)
        self.per_round = per_round
        self.device = opts.device
        self.iteration = 0

    def round(self) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(self.per_round):
            labeled, unlabeled = next(self.pairs)
            self.step(labeled, unlabeled, self.iteration)
            self.iteration += 1
        synchronize(self.device)
        return (time.perf_counter() - start) / self.per_round


def measure_training(bundle: str, dataset_dir: Path, run_dir: Path, opts: Options) -> tuple[Stats, Stats, Stats]:
    """``(floor, engine, end_to_end)`` seconds per iteration of ``bundle`` at its reference size."""
    ref = reference(bundle)
    rounds, per_round = _rounds(ref, opts), _per_round(ref, opts)
    overrides = training_overrides(bundle, ref, dataset_dir, run_dir, opts)

    e2e_parser = training_parser(bundle, overrides)
    e2e_parser.get_parsed_content("initialize")
    e2e = _TrainerRounds(e2e_parser, per_round, opts.device)
    labeled_loader = e2e_parser.get_parsed_content("train#dataloader")
    unlabeled_loader = e2e.trainer.unlabeled_data_loader
    labeled = draw_batches(labeled_loader, 2, ("image", "label"), opts.device)
    unlabeled = None if unlabeled_loader is None else draw_batches(unlabeled_loader, 2, ("image",), opts.device)

    engine_overrides = dict(overrides)
    engine_overrides["train#dataloader"] = InMemoryBatches(labeled, len(labeled_loader.dataset))
    if unlabeled is not None:
        engine_overrides["train#unlabeled_dataloader"] = InMemoryBatches(unlabeled, len(unlabeled_loader.dataset))
    engine = _TrainerRounds(training_parser(bundle, engine_overrides), per_round, opts.device)
    floor = _FloorRounds(training_parser(bundle, overrides), labeled, unlabeled, per_round, opts)

    measures = {"floor": floor, "engine": engine, "end_to_end": e2e}
    times: dict[str, list[float]] = {name: [] for name in measures}
    for r in range(rounds + 1):
        for name, measure in measures.items():
            value = measure.round()
            if r > 0:  # round 0 is the warm-up
                times[name].append(value)
    engine.close()
    e2e.close()
    return summarise(times["floor"]), summarise(times["engine"]), summarise(times["end_to_end"])


# ---- inference -----------------------------------------------------------------------------------------------


def inference_overrides(bundle: str, dataset_dir: Path, run_dir: Path, opts: Options) -> dict[str, Any]:
    """Config overrides of the inference measure (``reference`` settings shrink 3D windows to CPU scale)."""
    values: dict[str, Any] = {
        "dataset_dir": str(dataset_dir),
        "output_dir": str(run_dir / "predictions"),
        "ckpt_path": str(run_dir / "random_init.pt"),
        "device": f"$torch.device('{opts.device}')",
        "amp": opts.amp,
        "num_workers": 0,
    }
    if opts.inference_settings == "reference":
        ref = reference(bundle)
        if ref.dims == 2:
            values["spatial_size"] = list(ref.patch)
        else:
            values["patch_size"] = list(ref.patch)
            values["sw_stride"] = [max(1, int(p * CPU_INFERENCE_STRIDE_FRACTION)) for p in ref.patch]
    return values


def _window_description(parser: ConfigParser, dims: int) -> str:
    if dims == 2:
        return f"slices {parser.get_parsed_content('spatial_size')}, batch {_sw_batch(parser)}"
    patch, stride = parser.get_parsed_content("patch_size"), parser.get_parsed_content("sw_stride")
    return f"{list(patch)} / {list(stride)}, batch {_sw_batch(parser)}"


def _sw_batch(parser: ConfigParser) -> int:
    return int(parser.get_parsed_content("inferer#inferer#sw_batch_size"))


def measure_inference(bundle: str, dataset_dir: Path, run_dir: Path, opts: Options) -> dict[str, Any]:
    """Seconds per case (load, preprocess, windows, postprocess, write) and peak memory of ``inference.json``."""
    parser = ConfigParser()
    parser.read_config(str(config_file(bundle, "inference")))
    parser.update(inference_overrides(bundle, dataset_dir, run_dir, opts))
    network = parser.get_parsed_content("network")
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(copy.deepcopy(network).cpu().state_dict(), run_dir / "random_init.pt")
    parser.get_parsed_content("initialize")
    evaluator = parser.get_parsed_content("evaluator")
    clock = IterationClock(opts.device)
    clock.attach(evaluator)

    gc.collect()
    reset_peak_rss()
    if opts.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(opts.device)
    times = []
    for r in range(opts.inference_rounds + 1):
        evaluator.run()
        durations = clock.take()
        if r > 0:
            times.extend(durations)
    dims = reference(bundle).dims
    return {
        "stats": summarise(times),
        "case": "x".join(str(s) for s in TYPICAL_SHAPE[bundle_flavour(bundle)]),
        "windows": _window_description(parser, dims),
        "peak_rss": peak_rss_mib(),
        "peak_gpu": torch.cuda.max_memory_allocated(opts.device) / 2**20 if opts.device.type == "cuda" else None,
    }


# ---- one bundle ----------------------------------------------------------------------------------------------


def benchmark_bundle(bundle: str, opts: Options) -> BundleResult:
    """Inference first (in a clean process it measures its own peak memory), then the training measures."""
    ref = reference(bundle)
    dataset_dir = phantom_dirs(bundle_flavour(bundle), opts.work_dir / "data")
    run_dir = opts.work_dir / "runs" / bundle
    inference = None if opts.skip_inference else measure_inference(bundle, dataset_dir, run_dir / "infer", opts)
    gc.collect()
    floor, engine, end_to_end = measure_training(bundle, dataset_dir, run_dir / "train", opts)
    patch = "x".join(str(p) for p in ref.patch)
    result = BundleResult(
        bundle=bundle,
        method=method_family_of(bundle),
        dims=ref.dims,
        batch=f"{ref.labeled_batch}+{ref.unlabeled_batch} @ {patch}",
        floor=floor,
        engine=engine,
        end_to_end=end_to_end,
    )
    if inference is not None:
        result.inference = inference["stats"]
        result.inference_case = inference["case"]
        result.inference_windows = inference["windows"]
        result.peak_rss_mib = inference["peak_rss"]
        result.peak_gpu_mib = inference["peak_gpu"]
    if result.method == "CoraNet":
        result.notes.append("self-training stage (pretrain_iterations=0)")
    if rss_mib() is None:
        result.notes.append("no /proc: peak RSS unavailable")
    return result
