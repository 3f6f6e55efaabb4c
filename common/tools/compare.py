"""Train and evaluate a set of bundles under identical settings and compare them in one table and plot.

    python -m common.compare --bundles supervised_acdc mean_teacher_acdc --out results/

Each bundle runs in its own subprocess (so wall-clock and peak memory are its own): training with the bundle's
``train.json`` (+ ``demo.json`` unless ``--no-demo``) and the shared overrides, then ``evaluate.json`` on the test
split and ``inference.json`` for the example pictures. The report is ``table.md``/``table.csv`` (method x metric,
mean ± std over test cases, the paper's reported Dice from the bundle's metadata where it has one, wall-clock and
peak memory), ``dice.png`` (per-method Dice with its spread) and ``<bundle>_case.png`` (image, ground truth and
prediction of one test case side by side).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metadata import read_metadata
from .plots import bar_chart_png, case_panel_png

REPO_BUNDLES = Path("bundles")
METRICS = ("dice", "jaccard", "hd95", "asd")


def _config_list(bundle: Path, names: Sequence[str]) -> str:
    return "[" + ",".join(f"'{bundle / 'configs' / f'{n}.json'}'" for n in names) + "]"


def _overrides(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    values = {
        "dataset_dir": args.dataset_dir,
        "num_labeled": args.num_labeled,
        "max_iterations": args.max_iterations,
        "val_interval": args.val_interval,
        "seed": args.seed,
        "ckpt_dir": str(run_dir / "models"),
        "output_dir": str(run_dir / "eval"),
    }
    values.update(dict(_parse_override(text) for text in args.override))
    return {key: value for key, value in values.items() if value is not None}


def _parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a JSON value (``spatial_size=[32,32]``), a bare string otherwise."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--override expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _workflow(configs: list[str], meta: Path, **overrides: Any):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=configs, meta_file=str(meta), logging_file=str(meta.parent / "logging.conf"), **overrides
    )
    workflow.initialize()
    return workflow


def run_one(bundle: Path, run_dir: Path, overrides: dict[str, Any], demo: bool) -> dict[str, Any]:
    """Train, evaluate and segment the test split of one bundle in this process; return its run record."""
    base = ["train", "demo"] if demo else ["train"]
    configs = [str(bundle / "configs" / f"{n}.json") for n in base]
    meta = bundle / "configs" / "metadata.json"
    start = time.perf_counter()
    train = _workflow(configs, meta, workflow_type="train", **overrides)
    train.run()
    dataset_dir = str(train.parser.get_parsed_content("dataset_dir"))
    sizes = {k: train.parser[k] for k in ("spatial_size", "patch_size", "sw_stride") if k in train.parser}
    train.finalize()
    train_seconds = time.perf_counter() - start

    evaluation = _workflow(
        configs + [str(bundle / "configs" / "evaluate.json")], meta, workflow_type="train",
        **{**overrides, "dataset_dir": dataset_dir},
    )  # fmt: skip
    evaluation.run()
    evaluation.finalize()

    inference = _workflow(
        [str(bundle / "configs" / "inference.json")], meta, workflow_type="infer",
        dataset_dir=dataset_dir, ckpt_path=str(run_dir / "models" / "model.pt"),
        output_dir=str(run_dir / "predictions"), num_workers=0, **sizes,
    )  # fmt: skip
    inference.run()
    inference.finalize()
    record = {
        "bundle": bundle.name,
        "dataset_dir": dataset_dir,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    (run_dir / "run.json").write_text(json.dumps(record, indent=2))
    return record


def _reported(bundle: Path) -> str:
    meta = read_metadata(bundle / "configs" / "metadata.json")
    reported = meta.get("paper_reported") or {}
    return f"{reported['dice']} ({reported.get('source', '')})" if "dice" in reported else "–"


def _row(bundle: Path, run_dir: Path) -> dict[str, Any]:
    record = json.loads((run_dir / "run.json").read_text())
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    overall = summary["paper_voxel_units"]["overall"]
    row: dict[str, Any] = {"bundle": bundle.name}
    for key in METRICS:
        row[f"{key}_mean"] = overall[key]["mean"]
        row[f"{key}_std"] = overall[key]["std"]
    row["monai_dice_mean"] = summary["monai_mm"]["overall"]["dice"]["mean"]
    row["empty_predictions"] = summary["empty_predictions"]
    row["reported_dice"] = _reported(bundle)
    row["train_seconds"] = round(record["train_seconds"], 1)
    row["peak_rss_mb"] = round(record["peak_rss_mb"], 1)
    return row


def _case_dice(run_dir: Path) -> list[float]:
    per_case: dict[str, list[float]] = {}
    with open(run_dir / "eval" / "metrics.csv") as f:
        for r in csv.DictReader(f):
            value = float(r["paper_dice"])
            if np.isfinite(value):
                per_case.setdefault(r["case"], []).append(value)
    return [float(np.mean(v)) for v in per_case.values()]


def write_table(rows: list[dict[str, Any]], out: Path, header_note: str) -> None:
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        header_note,
        "",
        "| bundle | Dice | Jaccard | HD95 (vox) | ASD (vox) | MONAI Dice | empty preds | reported Dice (paper) "
        "| train s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{r[f'{k}_mean']:.4f} ± {r[f'{k}_std']:.4f}" for k in METRICS]
        lines.append(
            f"| {r['bundle']} | " + " | ".join(cells) + f" | {r['monai_dice_mean']:.4f} | {r['empty_predictions']} "
            f"| {r['reported_dice']} | {r['train_seconds']} | {r['peak_rss_mb']} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")


def write_case_png(bundle: Path, run_dir: Path, out: Path) -> None:
    """Image, ground truth and prediction of the first test case, at its slice with the most foreground."""
    import nibabel as nib

    dataset_dir = Path(json.loads((run_dir / "run.json").read_text())["dataset_dir"])
    meta = json.loads((dataset_dir / "dataset.json").read_text())
    item = meta["test"][0]
    image = np.asarray(nib.load(str(dataset_dir / item["image"])).dataobj, dtype=np.float32)
    label = np.asarray(nib.load(str(dataset_dir / item["label"])).dataobj).astype(np.int64)
    stem = Path(item["image"]).name.replace(".nii.gz", "").replace(".nii", "")
    pred = np.asarray(nib.load(str(run_dir / "predictions" / f"{stem}_seg.nii.gz")).dataobj).astype(np.int64)
    z = int(np.argmax((label > 0).reshape(-1, label.shape[-1]).sum(0)))
    case_panel_png(out / f"{bundle.name}_case.png", image[..., z], label[..., z], pred[..., z])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", required=True, help="bundle names under bundles/")
    parser.add_argument("--out", default="results", help="output folder")
    parser.add_argument("--dataset-dir", dest="dataset_dir", help="dataset folder (default: the demo's phantoms)")
    parser.add_argument("--num-labeled", dest="num_labeled", type=int)
    parser.add_argument("--max-iterations", dest="max_iterations", type=int)
    parser.add_argument("--val-interval", dest="val_interval", type=int)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--override", action="append", default=[], help="any config id: KEY=JSON_VALUE")
    parser.add_argument("--no-demo", dest="demo", action="store_false", help="paper settings instead of the demo")
    parser.add_argument("--bundles-root", default=str(REPO_BUNDLES))
    parser.add_argument("--run-one", help=argparse.SUPPRESS)  # internal: one bundle in a child process
    args = parser.parse_args(argv)

    out = Path(args.out)
    root = Path(args.bundles_root)
    if args.run_one:
        run_dir = out / "runs" / args.run_one
        run_one(root / args.run_one, run_dir, _overrides(args, run_dir), args.demo)
        return 0

    missing = [b for b in args.bundles if not (root / b / "configs" / "train.json").is_file()]
    if missing:
        parser.error(f"unknown bundle(s) under {root}: {', '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    rows, spreads = [], []
    started = time.perf_counter()
    for index, name in enumerate(args.bundles, start=1):
        print(f"[{index}/{len(args.bundles)}] {name}: training and evaluating ...", flush=True)
        child = [sys.executable, "-m", "common.compare", *(argv if argv is not None else sys.argv[1:])]
        child += ["--run-one", name]
        subprocess.run(child, check=True)
        run_dir = out / "runs" / name
        rows.append(_row(root / name, run_dir))
        spreads.append(_case_dice(run_dir))
        write_case_png(root / name, run_dir, out)
        elapsed = time.perf_counter() - started
        print(f"[{index}/{len(args.bundles)}] {name}: Dice {rows[-1]['dice_mean']:.4f} ({elapsed:.0f} s so far)")
    note = (
        f"Settings: {'demo overlay' if args.demo else 'paper defaults'}, seed {args.seed}, "
        f"num_labeled {args.num_labeled or 'bundle default'}, max_iterations {args.max_iterations or 'bundle default'}."
    )
    write_table(rows, out, note)
    bar_chart_png(out / "dice.png", [r["bundle"] for r in rows], spreads)
    print(f"Wrote {out / 'table.md'}, {out / 'table.csv'}, {out / 'dice.png'} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
