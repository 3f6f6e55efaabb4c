"""Benchmark the bundles: floor, engine and end-to-end cost of a training iteration, and inference per case.

    python -m benchmarks.run --bundles mean_teacher_acdc dycon_la --out benchmarks/results/
    python -m benchmarks.run --device cuda --out benchmarks/results_gpu/        # GPU, AMP on

For each bundle (default: every bundle of ``bundles/``) at the reference sizes (2D: 4 labeled + 4 unlabeled
slices of 128 x 128; 3D: 2 + 2 patches of 64 x 64 x 64; ``torch.set_num_threads(2)`` on the CPU) it reports the
median and spread over the timed rounds, after a warm-up round, of

1. **floor**: the method's unavoidable work per iteration on in-memory tensors, a hand-written loop per method
   family calling the same networks and loss functions but none of the engine (:mod:`benchmarks.floors`);
2. **engine**: a full training iteration through the bundle's own trainer and method object, instantiated from
   its ``train.json`` (+ ``demo.json``) with ``monai.bundle.ConfigParser`` and overrides, on in-memory tensors;
3. **end to end**: the same with the bundle's data pipeline reading NIfTI phantoms from disk, with the bundle's
   caching settings (``CacheDataset`` / ``VolumeSliceDataset`` with ``cache_rate`` 1, the demo's workers);
4. **inference**: seconds per case of the dataset's typical size through ``inference.json`` and the peak memory
   (process RSS; ``torch.cuda.max_memory_allocated`` on a GPU).

and writes ``table.md``, ``table.csv`` (columns ``engine/floor`` and ``end_to_end/engine``) and ``results.json``
with the machine description. Each bundle runs in its own subprocess (all its measures in that one process), so
its peak memory is its own; ``--in-process`` runs everything in this process. Benchmarks are not unit tests:
pytest does not collect this package and CI does not run it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .measure import Options, benchmark_bundle
from .report import machine, result_from_dict, result_to_dict, write_report
from .settings import CPU_THREADS, DEFAULT_OUT, REPO_ROOT, bundle_names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", nargs="+", default=None, help="bundle names (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder (default benchmarks/results)")
    parser.add_argument("--device", default="cpu", help="cpu (the reference machine) or cuda[:N]")
    parser.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision (default: on for CUDA)"
    )
    parser.add_argument("--threads", type=int, default=CPU_THREADS, help="torch threads on the CPU (default 2)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds after the warm-up (default 5)")
    parser.add_argument("--iterations-per-round", type=int, default=None, help="default 4 for 2D, 1 for 3D")
    parser.add_argument("--num-workers", type=int, default=None, help="data loader workers (default: demo's 0)")
    parser.add_argument(
        "--inference-settings",
        choices=("reference", "bundle"),
        default=None,
        help="reference: 3D windows of the reference patch with half-patch stride, 2D slices at 128 (CPU default); "
        "bundle: inference.json's own patch and stride (GPU default)",
    )
    parser.add_argument("--inference-rounds", type=int, default=3, help="timed inference runs after the warm-up")
    parser.add_argument("--skip-inference", action="store_true", help="training measures only")
    parser.add_argument("--work-dir", type=Path, default=None, help="phantoms and scratch outputs (default: temp)")
    parser.add_argument("--note", default="", help="a note for the machine line of the table")
    parser.add_argument("--in-process", action="store_true", help="run every bundle in this process")
    parser.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result-json", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 3:
        parser.error("--rounds must be at least 3")
    return args


def options(args: argparse.Namespace, work_dir: Path) -> Options:
    """The measurement options of the parsed command line."""
    device = torch.device(args.device)
    amp = device.type == "cuda" if args.amp is None else bool(args.amp)
    settings = args.inference_settings or ("bundle" if device.type == "cuda" else "reference")
    return Options(
        device=device,
        amp=amp,
        work_dir=work_dir,
        rounds=args.rounds,
        iterations_per_round=args.iterations_per_round,
        num_workers=args.num_workers,
        inference_settings=settings,
        inference_rounds=args.inference_rounds,
        skip_inference=args.skip_inference,
    )


def _forwarded(args: argparse.Namespace, work_dir: Path) -> list[str]:
    """The command-line options a bundle subprocess needs."""
    out = ["--device", args.device, "--threads", str(args.threads), "--work-dir", str(work_dir)]
    out += ["--inference-rounds", str(args.inference_rounds)]
    for flag, value in (
        ("--rounds", args.rounds),
        ("--iterations-per-round", args.iterations_per_round),
        ("--num-workers", args.num_workers),
        ("--inference-settings", args.inference_settings),
    ):
        if value is not None:
            out += [flag, str(value)]
    if args.amp is not None:
        out.append("--amp" if args.amp else "--no-amp")
    if args.skip_inference:
        out.append("--skip-inference")
    return out


def configure_threads(args: argparse.Namespace) -> None:
    if torch.device(args.device).type == "cpu":
        torch.set_num_threads(args.threads)


def run_one(args: argparse.Namespace, work_dir: Path) -> int:
    """Benchmark ``args.run_one`` in this process and write its result as JSON."""
    configure_threads(args)
    result = benchmark_bundle(args.run_one, options(args, work_dir))
    text = json.dumps(result_to_dict(result), indent=2)
    if args.result_json is None:
        print(text)
    else:
        args.result_json.write_text(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bundles = args.bundles or bundle_names()
    unknown = sorted(set(bundles) - set(bundle_names()))
    if unknown:
        print(f"unknown bundles: {', '.join(unknown)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="semiseg-bench-") as tmp:
        work_dir = args.work_dir or Path(tmp)
        if args.run_one:
            return run_one(args, work_dir)
        configure_threads(args)
        opts = options(args, work_dir)
        info = machine(opts.device, opts.amp, args.threads if opts.device.type == "cpu" else None)
        results, failures = [], {}
        for bundle in bundles:
            start = time.perf_counter()
            print(f"[benchmarks] {bundle} ...", flush=True)
            try:
                if args.in_process:
                    results.append(benchmark_bundle(bundle, opts))
                else:
                    results.append(_subprocess(bundle, args, work_dir))
            except Exception as error:  # one failing bundle must not lose the others
                failures[bundle] = str(error).splitlines()[-1] if str(error) else type(error).__name__
                print(f"[benchmarks] {bundle} failed: {failures[bundle]}", flush=True)
                continue
            print(f"[benchmarks] {bundle} done in {time.perf_counter() - start:.0f} s", flush=True)
            write_report(results, dict(info), args.out, failures, args.note)  # partial results survive a crash
        write_report(results, info, args.out, failures, args.note)
        print(f"[benchmarks] wrote {args.out / 'table.md'} and {args.out / 'table.csv'}")
    return 0 if not failures else 1


def _subprocess(bundle: str, args: argparse.Namespace, work_dir: Path):
    result_json = work_dir / f"{bundle}.result.json"
    command = [sys.executable, "-m", "benchmarks.run", "--run-one", bundle, "--result-json", str(result_json)]
    subprocess.run(command + _forwarded(args, work_dir), check=True, cwd=REPO_ROOT)
    return result_from_dict(json.loads(result_json.read_text()))


if __name__ == "__main__":
    sys.exit(main())
