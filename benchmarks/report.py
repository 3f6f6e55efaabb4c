"""Results of a benchmark run as ``table.md``, ``table.csv`` and ``results.json``, with the machine description."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ignite
import monai
import torch

from .measure import BundleResult
from .timing import Stats

# issue #11 targets (the same ratios with AMP on a GPU)
TARGET_ENGINE_FLOOR = 1.10
TARGET_E2E_ENGINE = 1.5

CSV_COLUMNS = (
    "bundle",
    "method",
    "dims",
    "batch",
    "floor_s",
    "floor_spread",
    "engine_s",
    "engine_spread",
    "end_to_end_s",
    "end_to_end_spread",
    "engine/floor",
    "end_to_end/engine",
    "engine/floor_ok",
    "end_to_end/engine_ok",
    "inference_s_per_case",
    "inference_spread",
    "inference_case",
    "inference_windows",
    "peak_rss_mib",
    "peak_gpu_mib",
    "rounds",
    "notes",
    "cpu",
    "torch_threads",
    "device",
    "torch",
    "monai",
)


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (Linux) or ``platform``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device, amp: bool, threads: int | None) -> dict[str, Any]:
    """Description of the machine and software the benchmark ran on."""
    info: dict[str, Any] = {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "device": str(device),
        "amp": bool(amp) and device.type == "cuda",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "ignite": ignite.__version__,
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def result_to_dict(result: BundleResult) -> dict[str, Any]:
    return dataclasses.asdict(result)


def result_from_dict(data: dict[str, Any]) -> BundleResult:
    values = dict(data)
    for key in ("floor", "engine", "end_to_end", "inference"):
        if values.get(key) is not None:
            values[key] = Stats(**values[key])
    return BundleResult(**values)


def _ms(stats: Stats | None) -> str:
    return "–" if stats is None else f"{stats.median * 1000:.0f}"


def _pct(stats: Stats | None) -> str:
    return "–" if stats is None else f"{stats.spread * 100:.0f} %"


def _mark(value: float, target: float) -> str:
    return f"{value:.3f} {'✓' if value <= target else '✗'}"


def csv_row(result: BundleResult, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """One CSV row (seconds, relative spreads, ratios of medians; the machine columns from ``info``)."""
    info = info or {}
    engine_floor = result.engine.median / result.floor.median
    e2e_engine = result.end_to_end.median / result.engine.median
    inference = result.inference
    return {
        "bundle": result.bundle,
        "method": result.method,
        "dims": result.dims,
        "batch": result.batch,
        "floor_s": f"{result.floor.median:.4f}",
        "floor_spread": f"{result.floor.spread:.3f}",
        "engine_s": f"{result.engine.median:.4f}",
        "engine_spread": f"{result.engine.spread:.3f}",
        "end_to_end_s": f"{result.end_to_end.median:.4f}",
        "end_to_end_spread": f"{result.end_to_end.spread:.3f}",
        "engine/floor": f"{engine_floor:.3f}",
        "end_to_end/engine": f"{e2e_engine:.3f}",
        "engine/floor_ok": engine_floor <= TARGET_ENGINE_FLOOR,
        "end_to_end/engine_ok": e2e_engine <= TARGET_E2E_ENGINE,
        "inference_s_per_case": "" if inference is None else f"{inference.median:.3f}",
        "inference_spread": "" if inference is None else f"{inference.spread:.3f}",
        "inference_case": result.inference_case,
        "inference_windows": result.inference_windows,
        "peak_rss_mib": "" if result.peak_rss_mib is None else f"{result.peak_rss_mib:.0f}",
        "peak_gpu_mib": "" if result.peak_gpu_mib is None else f"{result.peak_gpu_mib:.0f}",
        "rounds": result.floor.rounds,
        "notes": "; ".join(result.notes),
        "cpu": info.get("cpu", ""),
        "torch_threads": info.get("torch_threads", ""),
        "device": info.get("device", ""),
        "torch": info.get("torch", ""),
        "monai": info.get("monai", ""),
    }


def write_csv(results: Sequence[BundleResult], info: dict[str, Any], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for result in results:
            writer.writerow(csv_row(result, info))


def _machine_lines(info: dict[str, Any], note: str) -> list[str]:
    lines = [
        f"- Machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']}, "
        f"device {info['device']}" + (f" ({info['gpu']})" if "gpu" in info else "") + f", AMP {info['amp']}",
        f"- Software: Python {info['python']}, torch {info['torch']}, MONAI {info['monai']}, "
        f"ignite {info['ignite']} ({info['platform']})",
        f"- Run: {info['date_utc']}; load average at start {info.get('load_average_at_start', '–')}, "
        f"at end {info.get('load_average_at_end', '–')}",
    ]
    if note:
        lines.append(f"- Note: {note}")
    return lines


def markdown(results: Sequence[BundleResult], info: dict[str, Any], failures: dict[str, str], note: str) -> str:
    """The Markdown report: one row per bundle, medians in ms, spreads as relative ranges."""
    lines = [
        "# Benchmarks",
        "",
        "Per training iteration at the reference sizes (2D: 4 labeled + 4 unlabeled slices of 128 x 128; 3D: 2 + 2 "
        "patches of 64 x 64 x 64): **floor** = the method's unavoidable work as a hand-written loop on in-memory "
        "tensors (`benchmarks/floors.py`), **engine** = a full iteration through the bundle's trainer and method "
        "object on in-memory tensors, **end to end** = a full iteration with the bundle's data pipeline from NIfTI "
        "phantoms on disk. Medians of the timed rounds after a warm-up round (spread = (max - min) / median). "
        f"Targets: engine/floor <= {TARGET_ENGINE_FLOOR}, end_to_end/engine <= {TARGET_E2E_ENGINE}. "
        "Inference: seconds per case of the dataset's typical size (load, preprocessing, windows, postprocessing, "
        "writing), peak process RSS during inference.",
        "",
        *_machine_lines(info, note),
        "",
        "| bundle | method | batch | floor ms | engine ms | end to end ms | engine/floor | end_to_end/engine "
        "| inference s/case | case | windows (patch / stride) | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        row = csv_row(result)
        inference = result.inference
        lines.append(
            f"| `{result.bundle}` | {result.method} | {result.batch} "
            f"| {_ms(result.floor)} ± {_pct(result.floor)} | {_ms(result.engine)} ± {_pct(result.engine)} "
            f"| {_ms(result.end_to_end)} ± {_pct(result.end_to_end)} "
            f"| {_mark(float(row['engine/floor']), TARGET_ENGINE_FLOOR)} "
            f"| {_mark(float(row['end_to_end/engine']), TARGET_E2E_ENGINE)} "
            f"| {'–' if inference is None else f'{inference.median:.2f} ± {_pct(inference)}'} "
            f"| {result.inference_case or '–'} | {result.inference_windows or '–'} "
            f"| {row['peak_rss_mib'] or '–'} |"
        )
    for bundle, error in failures.items():
        lines.append(f"| `{bundle}` | failed: {error} |" + " |" * 10)
    notes = [f"- `{r.bundle}`: {'; '.join(r.notes)}" for r in results if r.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    lines += ["", "Reproduce: `python -m benchmarks.run --out benchmarks/results/` (see `benchmarks/run.py`).", ""]
    return "\n".join(lines)


def write_report(
    results: Sequence[BundleResult], info: dict[str, Any], out: Path, failures: dict[str, str], note: str = ""
) -> None:
    """Write ``table.md``, ``table.csv`` and ``results.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    write_csv(results, info, out / "table.csv")
    (out / "table.md").write_text(markdown(results, info, failures, note))
    payload = {
        "machine": info,
        "note": note,
        "results": [result_to_dict(r) for r in results],
        "failures": failures,
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
