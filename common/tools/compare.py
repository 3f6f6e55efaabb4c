"""Train and evaluate bundles under one budget, over several seeds, with supervised twins; one table and figures.

    python -m common.compare --bundles supervised_acdc mean_teacher_acdc cps_acdc --seeds 1337 2024 7 --twins \\
        --out results/acdc

Every run (bundle x seed, and its supervised twin with ``--twins``) trains in its own subprocess (wall-clock and
peak memory are its own): ``train.json`` (+ ``demo.json`` unless ``--no-demo``) with the run's overrides, then
``evaluate.json`` on the test split and ``inference.json`` for the case montages, all three with the same
overrides. A run is finished when its ``run.json`` exists (written after inference); a rerun into the same
``--out`` reuses finished runs and redoes unfinished ones from scratch.

Budgets (``--budget``):
  equal  (default for several bundles of one dataset) the same iterations, patch/slice size, labeled and unlabeled
         batch sizes and labeled cases for every bundle of a dataset (``EQUAL_BUDGETS``, changed by the flags
         below), and each method's schedules scaled to that budget by its rule in ``SCHEDULE_RULES``;
  demo   each bundle's own demo overlay (or, with ``--no-demo``, its paper settings).

Outputs in ``--out``: ``table.md``/``table.csv`` (per bundle and twin: mean ± std over seeds of the per-run mean of
each metric, the difference in Dice to the supervised reference and whether it exceeds the seed spread),
``runs.csv`` (one row per run), ``dice.png``, ``<label>_case.png`` (one montage per bundle and twin) and
``learning_curves.png``; the runs are in ``runs/<label>/seed<seed>/``.

``--protocol paper`` runs each bundle that has ``configs/paper_protocol.json`` under the protocol its paper's number
came from (labels ``<bundle>_paper``); the others run as usual.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from .metadata import read_metadata
from .protocols import paper_protocol_configs

REPO_BUNDLES = Path("bundles")
METRICS = ("dice", "jaccard", "hd95", "asd")
DEFAULT_SEED = 1337
RUN_RECORD = "run.json"

# The equal budget of each dataset at phantom scale (about the demos' size); flags and --override change it.
_BUDGET_3D = {
    "max_iterations": 300,
    "val_interval": 100,
    "labeled_batch_size": 2,
    "unlabeled_batch_size": 2,
    "num_labeled": 2,
    "patch_size": [32, 32, 32],
    "sw_stride": [16, 16, 16],
}
_BUDGET_2D = {
    "max_iterations": 300,
    "val_interval": 100,
    "labeled_batch_size": 4,
    "unlabeled_batch_size": 4,
    "num_labeled": 2,
    "spatial_size": [128, 128],
}
EQUAL_BUDGETS: dict[str, dict[str, Any]] = {
    "acdc": _BUDGET_2D,
    "york": _BUDGET_2D,
    "la": _BUDGET_3D,
    "pancreas": _BUDGET_3D,
    "brats": _BUDGET_3D,
    "isles": _BUDGET_3D,
    "abdomenct1k": _BUDGET_3D,
}
BUDGET_FLAGS = ("max_iterations", "val_interval", "labeled_batch_size", "unlabeled_batch_size", "num_labeled")

WHOLE_RUN = "$float(@max_iterations)"


def _consistency_over_run(train: dict[str, Any]) -> dict[str, Any]:
    """SSL4MIS ramps (MT, UA-MT, CPS) span 200 epochs of 150 iterations = the whole 30 000-iteration run."""
    return {"method#iters_per_epoch": 1, "method#consistency_rampup": WHOLE_RUN}


def _mean_teacher(train: dict[str, Any]) -> dict[str, Any]:
    """As CPS, and the consistency delay (2D: 1000 of 30 000 iterations, 3D: none) keeps its fraction of the run."""
    fraction = float(train["method"].get("consistency_start_iteration", 0)) / float(train["max_iterations"])
    return {**_consistency_over_run(train), "method#consistency_start_iteration": f"$int(@max_iterations * {fraction})"}


def _alhvr(train: dict[str, Any]) -> dict[str, Any]:
    """ALHVR's ramp is 200 epochs of 150 iterations: the whole run."""
    return {"method#rampup_epoch_len": 1, "method#consistency_rampup": WHOLE_RUN}


def _dycon(train: dict[str, Any]) -> dict[str, Any]:
    """DyCON's beta schedule follows ``method#max_iterations`` itself; its MT and FeCL ramps span the run (demos)."""
    return {
        "method#consistency_iters_per_unit": 1,
        "method#consistency_rampup": WHOLE_RUN,
        "method#fecl_rampup_epochs": WHOLE_RUN,
    }


def _coranet(train: dict[str, Any]) -> dict[str, Any]:
    """CoraNet pretrains on a third of the run (2D 10k of 30k), then refreshes the snapshot ten times (demos)."""
    return {
        "method#pretrain_iterations": "$@max_iterations // 3",
        "method#refresh_every": "$max(1, @max_iterations // 10)",
        "method#iters_per_epoch": 1,
        "method#consistency_rampup": "$float(@max_iterations // 3)",
    }


def _stlu(train: dict[str, Any]) -> dict[str, Any]:
    """STLU-Net's gamma ramp spans the run (demos; the paper's 40 x 150 of 15 000 iterations is 40 %)."""
    return {"method#iters_per_epoch": 1, "method#rampup_length": WHOLE_RUN}


# Method class name -> overrides of its schedules for a budget of @max_iterations iterations (what the demos do).
SCHEDULE_RULES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "Supervised": lambda train: {},
    "MeanTeacher": _mean_teacher,
    "UAMT": _mean_teacher,  # its uncertainty threshold ramps over @max_iterations already
    "CPS": _consistency_over_run,
    "ALHVR": _alhvr,
    "DyCON": _dycon,
    "CoraNet": _coranet,
    "STLU": _stlu,
}

# A twin trains with the bundle's ``supervised_loss``; CoraNet computes its supervised loss itself (it defines none),
# so its twin gets the main head's terms of that loss.
TWIN_LOSSES: dict[str, dict[str, Any]] = {
    "CoraNet": {  # (CE + soft Dice of the main head, per sample, background included) / 4, as in its L_sup
        "_target_": "DiceCELoss",
        "to_onehot_y": True,
        "softmax": True,
        "include_background": True,
        "batch": False,
        "smooth_nr": 1e-05,
        "smooth_dr": 1e-05,
        "lambda_dice": 0.25,
        "lambda_ce": 0.25,
    },
}


class EvaluatedOutput(nn.Module):
    """A twin trains its network through the plain forward (the evaluated logits), not a method's ``forward_train``
    (ALHVR, CoraNet, DyCON and STLU return several outputs there); the weights stay those of ``network``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)


@dataclass(frozen=True)
class Run:
    bundle: str
    seed: int
    twin: bool = False
    paper: bool = False  # the bundle's paper-protocol overlay (``--protocol paper``, bundles that have one)

    @property
    def label(self) -> str:
        return f"{self.bundle}{'_paper' if self.paper else ''}{'_twin' if self.twin else ''}"

    def directory(self, out: Path) -> Path:
        return out / "runs" / self.label / f"seed{self.seed}"


# ----------------------------------------------------------------------------------------------------------------
# settings of a run


def read_train_config(root: Path, bundle: str) -> dict[str, Any]:
    path = root / bundle / "configs" / "train.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such bundle config")
    return json.loads(path.read_text())


def method_class(train: dict[str, Any]) -> str:
    return str(train["method"]["_target_"]).rsplit(".", 1)[-1]


def dataset_of(train: dict[str, Any]) -> str:
    """The dataset a bundle trains on: the last part of its name, ``<method>_<dataset>`` (``ua_mt_la`` -> ``la``).
    Not its recipe: the York bundles train on ACDC's 2D recipe, but on other data."""
    return Path(str(train["bundle_root"])).name.rsplit("_", 1)[-1]


def is_semi_supervised(train: dict[str, Any]) -> bool:
    return method_class(train) != "Supervised"


def equal_budget(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    if dataset not in EQUAL_BUDGETS:
        raise ValueError(f"no equal budget for dataset {dataset!r}; known: {', '.join(EQUAL_BUDGETS)}")
    budget = dict(EQUAL_BUDGETS[dataset])
    budget.update({key: getattr(args, key) for key in BUDGET_FLAGS if getattr(args, key, None) is not None})
    return budget


def budget_overrides(train: dict[str, Any], budget: dict[str, Any]) -> dict[str, Any]:
    """The budget's ids that the bundle defines (2D bundles have ``spatial_size``, 3D ones ``patch_size``)."""
    return {key: value for key, value in budget.items() if key in train}


def schedule_overrides(train: dict[str, Any]) -> dict[str, Any]:
    name = method_class(train)
    if name not in SCHEDULE_RULES:
        raise KeyError(f"no schedule rule for method {name}: add one to SCHEDULE_RULES in {__file__}")
    return SCHEDULE_RULES[name](train)


def twin_overrides(train: dict[str, Any]) -> dict[str, Any]:
    """Top-level ids that turn a semi-supervised bundle into its supervised twin.

    The same ``network`` (and data, labeled cases, budget) trained by ``common.methods.Supervised`` on its
    evaluated output with the bundle's supervised loss; no unlabeled stream; a second network or teacher is still
    built but never trained; the training state no longer names the method (Supervised keeps no state).
    """
    state = {key: value for key, value in train["training_state"].items() if value != "@method"}
    overrides = {
        key: _inline_method_settings(value, train["method"])
        for key, value in train.items()
        if key != "method" and "@method#" in json.dumps(value)
    }  # e.g. STLU's supervised loss takes the method's include_background
    # an id of the twin's own (not one the bundle defines): a step keeps only the ids its config files define
    loss = "@supervised_loss" if train.get("supervised_loss") is not None else TWIN_LOSSES[method_class(train)]
    if method_class(train) == "CPS" and train["method"].get("init") == "kaiming_xavier":
        # the SSL4MIS 3D CPS script re-initialises network 1 Kaiming-normal inside the method: the twin keeps that
        overrides["network"] = {
            "_target_": "common.methods.cps.init_conv_weights_",
            "network": train["network"],
            "scheme": "kaiming",
        }
    return {
        **overrides,
        "method": {
            "_target_": "common.methods.Supervised",
            "network": {"_target_": "common.tools.compare.EvaluatedOutput", "network": "@network"},
            "supervised_loss": loss,
        },
        "unlabeled_batch_size": 0,
        "training_state": state,
        "inspection_saver": None,
    }


def _inline_method_settings(value: Any, method: dict[str, Any]) -> Any:
    """``value`` with each ``"@method#key"`` replaced by the method's own value (the twin replaces the method)."""
    if isinstance(value, dict):
        return {k: _inline_method_settings(v, method) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline_method_settings(v, method) for v in value]
    if isinstance(value, str) and value.startswith("@method#"):
        return method[value.removeprefix("@method#")]
    return value


def run_overrides(run: Run, train: dict[str, Any], budget: dict[str, Any] | None, user: dict[str, Any]) -> dict:
    """Every id a run sets, in the order they apply: budget, method schedules, twin, the user's, the seed."""
    overrides: dict[str, Any] = {}
    if budget is not None:
        overrides.update(budget_overrides(train, budget))
        if not run.twin:
            overrides.update(schedule_overrides(train))
    if run.twin:
        overrides.update(twin_overrides(train))
    for key, value in user.items():
        if run.twin and key.startswith("method#"):
            continue  # the replaced method's own settings do not apply to its twin
        overrides[key] = value
    overrides["seed"] = run.seed
    return overrides


def _parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a JSON value (``spatial_size=[32,32]``), a bare string otherwise."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--override expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def config_ids(files: Sequence[str]) -> set[str]:
    ids: set[str] = set()
    for name in files:
        ids |= set(json.loads(Path(name).read_text()))
    return ids


def step_overrides(files: Sequence[str], overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides whose id (or, for ``a#b``, whose root ``a``) a step's config files define."""
    ids = config_ids(files)
    return {key: value for key, value in overrides.items() if key.split("#", 1)[0] in ids}


def check_overrides(bundle: str, steps: dict[str, list[str]], overrides: dict[str, Any]) -> None:
    """Refuse, before any training, an override that no step of the bundle defines (a typo would be ignored)."""
    known = set().union(*(config_ids(files) for files in steps.values()))
    unknown = sorted(key for key in overrides if key.split("#", 1)[0] not in known)
    if unknown:
        files = sorted(set(sum(steps.values(), [])))
        raise SystemExit(f"{bundle}: no config id {', '.join(unknown)} in {', '.join(files)}")


def step_files(root: Path, bundle: str, demo: bool, paper: bool = False) -> dict[str, list[str]]:
    """The config files of each step. The paper-protocol overlay goes last in training and evaluation: it may
    replace what ``evaluate.json`` sets (the list the paper reported on, ``eval_section``)."""
    configs = root / bundle / "configs"
    train = [str(configs / "train.json")] + ([str(configs / "demo.json")] if demo else [])
    evaluate = train + [str(configs / "evaluate.json")]
    if paper:
        train, evaluate = paper_protocol_configs(root / bundle, train), paper_protocol_configs(root / bundle, evaluate)
    return {"train": train, "evaluate": evaluate, "inference": [str(configs / "inference.json")]}


def has_paper_protocol(root: Path, bundle: str) -> bool:
    """Whether the bundle's reported number came from a protocol other than its default (it has an overlay)."""
    return paper_protocol_configs(root / bundle, []) != []


# ----------------------------------------------------------------------------------------------------------------
# one run, in a child process


def _workflow(files: list[str], meta: Path, workflow_type: str, overrides: dict[str, Any]):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=files, meta_file=str(meta), logging_file=str(REPO_BUNDLES / "shared" / "logging.conf"),
        workflow_type=workflow_type, **overrides,
    )  # fmt: skip
    workflow.initialize()
    return workflow


def _plain(value: Any) -> bool:
    """A literal config value (no reference, expression or object), safe to carry from one step to another."""
    if isinstance(value, str):
        return not value.startswith(("$", "@", "%"))
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float))


# ids a step sets for itself: never carried from training to inference
STEP_OWN_IDS = {"imports", "bundle_root", "ckpt_dir", "ckpt_path", "output_dir", "dataset_dir", "datalist_file"}


def carried_settings(train_parser, inference_files: list[str]) -> dict[str, Any]:
    """Training's literal values of the ids inference also defines (demo sizes, classes, AMP, workers, device)."""
    carried = {}
    for key in sorted(config_ids(inference_files) - STEP_OWN_IDS):
        if key in train_parser and _plain(train_parser[key]):
            carried[key] = train_parser[key]
    return carried


def run_one(spec_path: Path) -> dict[str, Any]:
    """Train, evaluate and segment the test split for one run described by ``spec.json``; write its ``run.json``."""
    spec = json.loads(spec_path.read_text())
    run_dir = spec_path.parent
    steps, meta = spec["steps"], Path(spec["meta"])
    overrides = copy.deepcopy(spec["overrides"])  # MONAI rewrites ids inside the values it is given
    start = time.perf_counter()
    paths = {"ckpt_dir": str(run_dir / "models"), "output_dir": str(run_dir / "train")}
    train = _workflow(steps["train"], meta, "train", {**step_overrides(steps["train"], overrides), **paths})
    train.run()
    dataset_dir = str(train.parser.get_parsed_content("dataset_dir"))
    carried = carried_settings(train.parser, steps["inference"])
    spatial_dims = 2 if "spatial_size" in train.parser else 3
    schedule = {key: int(train.parser.get_parsed_content(key)) for key in ("max_iterations", "val_interval")}
    train.finalize()
    train_seconds = time.perf_counter() - start

    evaluation_overrides = {**step_overrides(steps["evaluate"], overrides), "dataset_dir": dataset_dir}
    evaluation_overrides.update(ckpt_dir=str(run_dir / "models"), output_dir=str(run_dir / "eval"))
    evaluation = _workflow(steps["evaluate"], meta, "train", evaluation_overrides)
    evaluation.run()
    evaluation.finalize()

    inference_overrides = {**carried, **step_overrides(steps["inference"], overrides), "dataset_dir": dataset_dir}
    inference_overrides.update(
        ckpt_path=str(run_dir / "models" / "model.pt"), output_dir=str(run_dir / "predictions"), num_workers=0
    )
    inference = _workflow(steps["inference"], meta, "infer", inference_overrides)
    inference.run()
    inference.finalize()
    record = {
        **spec["run"],
        "dataset_dir": dataset_dir,
        "spatial_dims": spatial_dims,
        **schedule,
        "settings": spec["overrides"],
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    (run_dir / RUN_RECORD).write_text(json.dumps(record, indent=2))
    return record


def finished_record(run_dir: Path, overrides: dict[str, Any]) -> dict[str, Any] | None:
    """The record of a finished run of these settings (``run.json`` exists: inference, the last step, is done).

    A finished run of other settings is an error: reusing it would mix budgets in one table.
    """
    path = run_dir / RUN_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("settings") != json.loads(json.dumps(overrides)):
        raise SystemExit(f"{path} was run with other settings than this comparison; use another --out or remove it")
    return record


def execute(run: Run, root: Path, out: Path, steps: dict[str, list[str]], overrides: dict[str, Any]) -> dict:
    """Reuse the finished run, or (re)do it from scratch in a child process."""
    run_dir = run.directory(out)
    record = finished_record(run_dir, overrides)
    if record is not None:
        return {**record, "reused": True}
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted run: its checkpoints and logs are partial
    run_dir.mkdir(parents=True)
    spec = {
        "run": {"bundle": run.bundle, "seed": run.seed, "twin": run.twin, "paper": run.paper, "label": run.label},
        "steps": steps,
        "overrides": overrides,
        "meta": str(root / run.bundle / "configs" / "metadata.json"),
    }
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=2))
    subprocess.run([sys.executable, "-m", "common.compare", "--run-one", str(run_dir / "spec.json")], check=True)
    return {**json.loads((run_dir / RUN_RECORD).read_text()), "reused": False}


# ----------------------------------------------------------------------------------------------------------------
# results


def run_metrics(run_dir: Path) -> dict[str, float]:
    """Per-run means over the test cases (paper metrics, voxel units) and MONAI's Dice."""
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    overall = summary["paper_voxel_units"]["overall"]
    values = {key: float(overall[key]["mean"]) for key in METRICS}
    values["monai_dice"] = float(summary["monai_mm"]["overall"]["dice"]["mean"])
    values["empty_predictions"] = float(summary["empty_predictions"])
    return values


def case_dice(run_dir: Path) -> list[float]:
    """Each test case's Dice (mean over its classes) of one run."""
    per_case: dict[str, list[float]] = {}
    with open(run_dir / "eval" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            value = float(row["paper_dice"])
            if np.isfinite(value):
                per_case.setdefault(row["case"], []).append(value)
    return [float(np.mean(v)) for v in per_case.values()]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single run)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def reference_label(record: dict[str, Any], labels: set[str], supervised: dict[str, str]) -> str | None:
    """The supervised reference of a run: its twin when run, else the supervised bundle of its dataset."""
    if record["twin"] or record["label"] in supervised.values():
        return None
    if f"{record['bundle']}_twin" in labels:
        return f"{record['bundle']}_twin"
    return supervised.get(record.get("dataset", ""))


def aggregate(records: list[dict[str, Any]], supervised: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per bundle or twin: mean ± std over seeds of each per-run metric, and Δ Dice to its reference.

    ``records`` hold ``label``, ``bundle``, ``twin``, ``seed``, ``dataset`` and ``metrics`` (per-run means);
    ``supervised`` maps a dataset to the label of its supervised bundle. The difference exceeds the seed spread
    when ``|Δ|`` is larger than the larger of the two standard deviations over seeds (needs two seeds or more).
    """
    supervised = supervised or {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(record["label"], []).append(record)
    rows = []
    for label, runs in groups.items():
        row: dict[str, Any] = {"label": label, "bundle": runs[0]["bundle"], "twin": runs[0]["twin"]}
        row["seeds"] = " ".join(str(r["seed"]) for r in runs)
        for key in (*METRICS, "monai_dice", "empty_predictions"):
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([r["metrics"][key] for r in runs])
        row["train_seconds"] = round(float(np.mean([r["train_seconds"] for r in runs])), 1)
        row["peak_rss_mb"] = round(max(r["peak_rss_mb"] for r in runs), 1)
        row["reference"] = reference_label(runs[0], set(groups), supervised)
        rows.append(row)
    by_label = {row["label"]: row for row in rows}
    for row in rows:
        reference = by_label.get(row["reference"] or "")
        row["delta_dice"], row["exceeds_seed_spread"], row["delta_per_seed"] = None, None, {}
        if reference is not None:
            row["delta_dice"] = row["dice_mean"] - reference["dice_mean"]
            spread = max(row["dice_std"], reference["dice_std"])
            enough = len(groups[row["label"]]) > 1 and len(groups[reference["label"]]) > 1
            row["exceeds_seed_spread"] = (abs(row["delta_dice"]) > spread) if enough else None
            row["delta_per_seed"] = paired_differences(groups[row["label"]], groups[reference["label"]])
    return rows


def paired_differences(runs: list[dict[str, Any]], references: list[dict[str, Any]]) -> dict[int, float]:
    """Dice minus the reference's Dice seed by seed, for the seeds both ran: a seed that is hard for the supervised
    part (its initialisation, its order of patches) is often hard for both, which the spread over seeds hides."""
    reference = {r["seed"]: r["metrics"]["dice"] for r in references}
    return {r["seed"]: r["metrics"]["dice"] - reference[r["seed"]] for r in runs if r["seed"] in reference}


def _reported(root: Path, bundle: str) -> str:
    meta = read_metadata(root / bundle / "configs" / "metadata.json")
    reported = meta.get("paper_reported") or {}
    return f"{reported['dice']} ({reported.get('source', '')})" if "dice" in reported else "–"


def _yes_no(value: bool | None) -> str:
    return "n/a (one seed)" if value is None else ("yes" if value else "no")


def write_table(rows: list[dict[str, Any]], out: Path, header: str, root: Path) -> None:
    for row in rows:
        row["reported_dice"] = "twin" if row["twin"] else _reported(root, row["bundle"])
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        header,
        "",
        "| run | seeds | Dice | Jaccard | HD95 (vox) | ASD (vox) | MONAI Dice | empty preds | Δ Dice vs supervised "
        "| exceeds seed spread | Δ per seed | reported Dice (paper) | train s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{r[f'{k}_mean']:.4f} ± {r[f'{k}_std']:.4f}" for k in (*METRICS, "monai_dice")]
        delta = "–" if r["delta_dice"] is None else f"{r['delta_dice']:+.4f} ({r['reference']})"
        exceeds = "–" if r["delta_dice"] is None else _yes_no(r["exceeds_seed_spread"])
        per_seed = " / ".join(f"{d:+.3f}" for d in r["delta_per_seed"].values()) or "–"
        lines.append(
            f"| {r['label']} | {r['seeds']} | " + " | ".join(cells) + f" | {r['empty_predictions_mean']:g} | {delta} "
            f"| {exceeds} | {per_seed} | {r['reported_dice']} "
            f"| {r['train_seconds']} | {r['peak_rss_mb']} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")


def write_runs_csv(records: list[dict[str, Any]], out: Path) -> None:
    fields = ["label", "bundle", "twin", "seed", *METRICS, "monai_dice", "train_seconds", "peak_rss_mb", "reused"]
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in records:
            writer.writerow({**{k: r.get(k) for k in fields}, **{k: r["metrics"][k] for k in (*METRICS, "monai_dice")}})


def budget_header(name: str, budgets: dict[str, dict[str, Any] | None], seeds: Sequence[int], twins: bool) -> str:
    lines = [f"Budget: {name}; seeds {', '.join(map(str, seeds))} (mean ± std over seeds of each run's mean)."]
    for dataset, budget in budgets.items():
        if budget is not None:
            settings = ", ".join(f"{key} {json.dumps(value)}" for key, value in budget.items())
            lines.append(f"{dataset}: {settings}; method schedules scaled to max_iterations (compare.SCHEDULE_RULES).")
        else:
            lines.append(f"{dataset}: each bundle's own {'demo overlay' if name == 'demo' else 'settings'}.")
    lines.append(
        "Δ Dice: difference to the supervised twin (`_twin`: same network, data and budget, no unsupervised part)"
        if twins
        else "Δ Dice: difference to the supervised bundle of the dataset"
    )
    lines[-1] += (
        "; it exceeds the seed spread when |Δ| is larger than both runs' std over seeds. Δ per seed: the same"
        " difference for each seed (in the order of the seeds column)."
    )
    return "  \n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# figures


def read_scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of one scalar tag in the tensorboard event files of ``log_dir`` (empty if none)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not log_dir.is_dir():
        return []
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    if tag not in accumulator.Tags().get("scalars", []):
        return []
    return [(int(event.step), float(event.value)) for event in accumulator.Scalars(tag)]


def validation_curve(run_dir: Path) -> list[tuple[int, float]]:
    """Validation Dice against the iteration: the trainer validates at the end of each epoch of ``epoch_length``
    iterations and logs the metric at that epoch number."""
    record = json.loads((run_dir / RUN_RECORD).read_text())
    resolved = {**record["settings"], **record}  # records before the resolved values were kept: the overrides
    epoch_length = min(int(resolved.get("val_interval", 1)), int(resolved.get("max_iterations", 1)))
    points = read_scalars(run_dir / "train" / "tensorboard", "val_mean_dice")
    return [(epoch * epoch_length, value) for epoch, value in points]


def supervised_loss_curve(run_dir: Path) -> list[tuple[int, float]]:
    """The supervised loss per iteration (every method logs it as ``loss_sup``; totals differ between methods)."""
    return read_scalars(run_dir / "train" / "tensorboard", "loss_sup")


def load_case(run_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Image, ground truth and prediction of the run's first test case, and its name."""
    import nibabel as nib

    dataset_dir = Path(json.loads((run_dir / RUN_RECORD).read_text())["dataset_dir"])
    item = json.loads((dataset_dir / "dataset.json").read_text())["test"][0]
    image = np.asarray(nib.load(str(dataset_dir / item["image"])).dataobj, dtype=np.float32)
    label = np.asarray(nib.load(str(dataset_dir / item["label"])).dataobj).astype(np.int64)
    stem = Path(item["image"]).name.replace(".nii.gz", "").replace(".nii", "")
    pred = np.asarray(nib.load(str(run_dir / "predictions" / f"{stem}_seg.nii.gz")).dataobj).astype(np.int64)
    if image.ndim == 4:  # channel-last multi-modal image: show the first channel
        image = image[..., 0]
    return image, label, pred, stem


def write_figures(records: list[dict[str, Any]], rows: list[dict[str, Any]], out: Path) -> list[Path]:
    from . import plots

    written = []
    by_label: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_label.setdefault(record["label"], []).append(record)
    groups = [
        plots.DiceGroup(
            label=row["label"],
            run_means=[r["metrics"]["dice"] for r in by_label[row["label"]]],
            case_values=[v for r in by_label[row["label"]] for v in case_dice(Path(r["run_dir"]))],
        )
        for row in rows
    ]
    written.append(plots.save(plots.dice_figure(groups), out / "dice.png"))
    for label, runs in by_label.items():
        run_dir = Path(runs[0]["run_dir"])
        image, truth, pred, case = load_case(run_dir)
        title = f"{label}, seed {runs[0]['seed']}, test case {case}"
        figure = plots.case_montage_figure(image, truth, pred, title, spatial_dims=runs[0]["spatial_dims"])
        written.append(plots.save(figure, out / f"{label}_case.png"))
    curves = {
        label: [(validation_curve(Path(r["run_dir"])), supervised_loss_curve(Path(r["run_dir"]))) for r in runs]
        for label, runs in by_label.items()
    }
    written.append(plots.save(plots.learning_curve_figure(curves), out / "learning_curves.png"))
    return written


# ----------------------------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundles", nargs="+", help="bundle names under bundles/")
    parser.add_argument("--out", default="results", help="output folder (finished runs in it are reused)")
    parser.add_argument("--budget", choices=("equal", "demo"), help="default: equal for several bundles of one dataset")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", nargs="+", type=int, help=f"one run per seed (default: {DEFAULT_SEED})")
    seeds.add_argument("--repeats", type=int, help=f"N runs with seeds {DEFAULT_SEED}, {DEFAULT_SEED + 1}, ...")
    parser.add_argument("--twins", action="store_true", help="a supervised twin of each semi-supervised bundle")
    parser.add_argument(
        "--protocol",
        choices=("clean", "paper"),
        default="clean",
        help="paper: bundles with configs/paper_protocol.json run the protocol their paper's number came from",
    )
    parser.add_argument("--dataset-dir", dest="dataset_dir", help="dataset folder (default: the demo's phantoms)")
    parser.add_argument("--max-iterations", dest="max_iterations", type=int, help="equal budget: iterations")
    parser.add_argument("--val-interval", dest="val_interval", type=int, help="equal budget: validation interval")
    parser.add_argument("--num-labeled", dest="num_labeled", type=int, help="equal budget: labeled cases")
    parser.add_argument("--labeled-batch-size", dest="labeled_batch_size", type=int)
    parser.add_argument("--unlabeled-batch-size", dest="unlabeled_batch_size", type=int)
    parser.add_argument("--override", action="append", default=[], help="any config id for every run: KEY=JSON_VALUE")
    parser.add_argument("--no-demo", dest="demo", action="store_false", help="leave out demo.json (real data, GPU)")
    parser.add_argument("--bundles-root", default=str(REPO_BUNDLES))
    parser.add_argument("--run-one", help=argparse.SUPPRESS)  # internal: one run's spec.json, in a child process
    return parser


def resolve_seeds(args: argparse.Namespace) -> list[int]:
    if args.repeats is not None:
        if args.repeats < 1:
            raise SystemExit("--repeats must be >= 1")
        return [DEFAULT_SEED + i for i in range(args.repeats)]
    seeds = args.seeds or [DEFAULT_SEED]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds repeats a seed: {seeds}")
    return seeds


def plan_runs(args: argparse.Namespace, root: Path) -> tuple[list[tuple[Run, dict]], dict, str]:
    """Every run of the comparison with its overrides, the budget per dataset and the budget's name."""
    trains = {name: read_train_config(root, name) for name in args.bundles}
    datasets = {name: dataset_of(train) for name, train in trains.items()}
    budget_name = args.budget or ("equal" if len(set(datasets.values())) == 1 and len(args.bundles) > 1 else "demo")
    budgets = {d: equal_budget(d, args) if budget_name == "equal" else None for d in dict.fromkeys(datasets.values())}
    user = dict(_parse_override(text) for text in args.override)
    for budget in budgets.values():  # the header states the budget as run, with the user's sizes
        if budget is not None:
            budget.update({key: value for key, value in user.items() if key in budget})
    if args.dataset_dir:
        user["dataset_dir"] = args.dataset_dir
    if budget_name == "demo":
        user.update({key: getattr(args, key) for key in BUDGET_FLAGS if getattr(args, key) is not None})
    runs = []
    for name, train in trains.items():
        variants = [False] + ([True] if args.twins and is_semi_supervised(train) else [])
        for twin in variants:
            for seed in resolve_seeds(args):
                run = Run(name, seed, twin, paper=args.protocol == "paper" and has_paper_protocol(root, name))
                runs.append((run, run_overrides(run, train, budgets[datasets[name]], user)))
    return runs, budgets, budget_name


def recipe_notes(root: Path, bundles: Sequence[str]) -> list[str]:
    """A note per dataset whose bundles use different data recipes (code lineages: Pancreas has CoraNet's, DyCON's
    and MC-Net's lists): the phantoms are the same, but on real data their cases and preprocessing differ."""
    recipes: dict[str, set[str]] = {}
    for name in bundles:
        train = read_train_config(root, name)
        recipes.setdefault(dataset_of(train), set()).add(Path(str(train["recipe"]).lstrip("%")).name)
    return [
        f"{dataset}: the bundles use different recipes ({', '.join(sorted(names))}); on real data their split lists "
        "or preprocessing differ, so the labeled and test cases may not be the same."
        for dataset, names in recipes.items()
        if len(names) > 1
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.run_one:
        run_one(Path(args.run_one))
        return 0
    if not args.bundles:
        parser.error("--bundles is required")
    root, out = Path(args.bundles_root), Path(args.out)
    missing = [b for b in args.bundles if not (root / b / "configs" / "train.json").is_file()]
    if missing:
        parser.error(f"unknown bundle(s) under {root}: {', '.join(missing)}")
    runs, budgets, budget_name = plan_runs(args, root)
    for run, overrides in runs:
        check_overrides(run.bundle, step_files(root, run.bundle, args.demo, run.paper), overrides)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records = []
    for index, (run, overrides) in enumerate(runs, start=1):
        print(f"[{index}/{len(runs)}] {run.label} seed {run.seed} ...", flush=True)
        record = execute(run, root, out, step_files(root, run.bundle, args.demo, run.paper), overrides)
        record.update(
            run_dir=str(run.directory(out)),
            dataset=dataset_of(read_train_config(root, run.bundle)),
            metrics=run_metrics(run.directory(out)),
        )
        records.append(record)
        state = "reused" if record["reused"] else f"{time.perf_counter() - started:.0f} s so far"
        print(f"[{index}/{len(runs)}] {run.label} seed {run.seed}: Dice {record['metrics']['dice']:.4f} ({state})")
    supervised = {
        dataset_of(read_train_config(root, name)): name
        for name in args.bundles
        if not is_semi_supervised(read_train_config(root, name))
    }
    rows = aggregate(records, supervised)
    header = budget_header(budget_name, budgets, resolve_seeds(args), args.twins)
    header += "".join(f"  \n{note}" for note in recipe_notes(root, args.bundles))
    write_table(rows, out, header, root)
    write_runs_csv(records, out)
    figures = write_figures(records, rows, out)
    print(f"Wrote {out / 'table.md'}, {out / 'table.csv'}, {out / 'runs.csv'} and {len(figures)} figures "
          f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
