"""The comparison command: equal budgets, supervised twins, seed aggregation, reuse of finished runs, overrides
reaching inference, and its matplotlib figures."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import inspect
import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from common.tools import compare, plots
from tests.bundle_utils import BUNDLES, bundle_dir
from tests.conftest import REPO_ROOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def train_config(name):
    return compare.read_train_config(REPO_ROOT / "bundles", name)


def parser_of(name, overrides):
    """The bundle's train.json + demo.json with ``overrides``, as ``ConfigWorkflow`` merges them."""
    parser = ConfigParser()
    parser.read_config([str(bundle_dir(name) / "configs" / f) for f in ("train.json", "demo.json")])
    parser.update(json.loads(json.dumps(overrides)))
    return parser


def budget_args(**values):
    return argparse.Namespace(**{key: values.get(key) for key in compare.BUDGET_FLAGS})


# ----------------------------------------------------------------------------------------------------------------
# equal budget


def method_parameters(class_name):
    """Names a method class accepts (DyCON also takes every field of its loss configuration)."""
    import common.methods
    from common.losses.dycon import DyCONLossConfig

    names = set(inspect.signature(getattr(common.methods, class_name)).parameters)
    if class_name == "DyCON":
        names |= {f.name for f in dataclasses.fields(DyCONLossConfig)}
    return names


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_every_method_has_a_schedule_rule_naming_its_own_parameters(name):
    train = train_config(name)
    rule = compare.schedule_overrides(train)  # KeyError for a method class without a rule
    unknown = {key.split("#", 1)[1] for key in rule} - method_parameters(compare.method_class(train))
    assert not unknown, f"{name}: the schedule rule sets {sorted(unknown)}, which the method does not take"
    if compare.is_semi_supervised(train) and train.get("supervised_loss") is None:
        assert compare.method_class(train) in compare.TWIN_LOSSES, f"{name}: no supervised loss for its twin"


def test_schedule_rule_table_covers_every_method_class():
    import common.methods

    assert set(compare.SCHEDULE_RULES) == set(common.methods.__all__) - {"SemiSupervisedMethod"}


BUDGET_IDS = ("max_iterations", "val_interval", "labeled_batch_size", "unlabeled_batch_size", "num_labeled")
SIZE_IDS = {"acdc": ("spatial_size",), "york": ("spatial_size",)}  # 2D; the 3D datasets: patch_size, sw_stride


@pytest.mark.parametrize("dataset", sorted(set(BUNDLES.values())))
def test_equal_budget_resolves_identically_for_every_bundle_of_a_dataset(dataset):
    budget = compare.equal_budget(dataset, budget_args(max_iterations=90))
    resolved, ramps = {}, {}
    for name in (n for n, d in BUNDLES.items() if d == dataset):
        train = train_config(name)
        assert compare.dataset_of(train) == dataset
        parser = parser_of(name, compare.run_overrides(compare.Run(name, 7), train, budget, {}))
        ids = BUDGET_IDS + SIZE_IDS.get(dataset, ("patch_size", "sw_stride")) + ("seed",)
        resolved[name] = {key: parser.get_parsed_content(key) for key in ids}
        if "method#consistency_rampup" in parser:  # ramps the method defines over its whole run
            ramps[name] = parser.get_parsed_content("method#consistency_rampup")
    first = next(iter(resolved.values()))
    assert first["max_iterations"] == 90 and first["seed"] == 7
    assert all(values == first for values in resolved.values()), resolved
    for name, ramp in ramps.items():
        expected = 30.0 if name.startswith("coranet") else 90.0  # CoraNet ramps after its pretraining third
        assert ramp == expected, name


def test_mean_teacher_delay_keeps_its_fraction_of_the_run():
    train = train_config("mean_teacher_acdc")  # 1000 of 30 000 iterations (the 2D script's delay)
    budget = compare.equal_budget("acdc", budget_args(max_iterations=600))
    parser = parser_of(
        "mean_teacher_acdc", compare.run_overrides(compare.Run("mean_teacher_acdc", 1), train, budget, {})
    )
    assert parser.get_parsed_content("method#consistency_start_iteration") == 20
    assert parser.get_parsed_content("method#iters_per_epoch") == 1


# ----------------------------------------------------------------------------------------------------------------
# supervised twins


@pytest.mark.parametrize("name", ["alhvr_acdc", "coranet_acdc", "cps_la", "dycon_la", "stlu_la", "ua_mt_acdc"])
def test_twin_differs_from_its_bundle_only_in_the_unsupervised_part(name):
    train = train_config(name)
    budget = compare.equal_budget(BUNDLES[name], budget_args())
    bundle_overrides = compare.run_overrides(compare.Run(name, 1), train, budget, {})
    twin_overrides = compare.run_overrides(compare.Run(name, 1, twin=True), train, budget, {})
    changed = {key for key in set(bundle_overrides) | set(twin_overrides) if not key.startswith("method#")}
    changed = {key for key in changed if bundle_overrides.get(key) != twin_overrides.get(key)}
    twin_ids = {"method", "unlabeled_batch_size", "training_state", "inspection_saver", "supervised_loss", "network"}
    assert changed <= twin_ids
    if "network" in changed:  # only to keep an initialisation the method applies to `network` (CPS 3D: Kaiming)
        assert train["method"].get("init") == "kaiming_xavier"
    assert {k: v for k, v in train["training_state"].items() if v != "@method"} == twin_overrides["training_state"]

    tiny = {"device": "cpu", "amp": False}
    bundle = parser_of(name, {**bundle_overrides, **tiny})
    twin = parser_of(name, {**twin_overrides, **tiny})
    network, twin_network = bundle.get_parsed_content("network"), twin.get_parsed_content("network")
    assert type(twin_network) is type(network)
    assert sum(p.numel() for p in twin_network.parameters()) == sum(p.numel() for p in network.parameters())
    method = twin.get_parsed_content("method")
    assert type(method).__name__ == "Supervised" and not method.requires_unlabeled
    assert twin.get_parsed_content("unlabeled_batch_size") == 0

    # one supervised step trains `network` through its evaluated output, and nothing else
    shape = (2, 1, 32, 32) if BUNDLES[name] == "acdc" else (2, 1, 32, 32, 32)
    label = torch.zeros(shape, dtype=torch.long)
    label[..., 8:24, 8:24] = 1
    losses = method.compute_losses({"image": torch.randn(shape), "label": label}, None, 0)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and losses["loss"].ndim == 0
    trained = {id(p) for p in twin_network.parameters() if p.grad is not None}
    assert trained and trained <= {id(p) for m in method.modules.values() for p in m.parameters()}
    others = [twin.get_parsed_content(key) for key in ("network_2", "teacher") if key in twin]
    assert all(p.grad is None for other in others for p in other.parameters())  # only `network` trains
    optimised = {id(p) for group in twin.get_parsed_content("optimizer").param_groups for p in group["params"]}
    assert trained <= optimised


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_every_twin_override_reaches_training(name):
    """What the CLI does before and during a run: ids no config defines are refused, and each step keeps only the
    ids its files define; a twin id dropped there would train the bundle's own method under the twin's label."""
    train = train_config(name)
    if not compare.is_semi_supervised(train):
        pytest.skip("supervised bundles have no twin")
    budget = compare.equal_budget(compare.dataset_of(train), budget_args())
    overrides = compare.run_overrides(compare.Run(name, 1, twin=True), train, budget, {})
    steps = compare.step_files(REPO_ROOT / "bundles", name, demo=True)
    compare.check_overrides(name, steps, overrides)
    assert compare.step_overrides(steps["train"], overrides) == overrides


def test_supervised_bundles_get_no_twin():
    args = argparse.Namespace(
        bundles=["supervised_la", "mean_teacher_la"], budget=None, seeds=[1, 2], repeats=None, twins=True,
        override=[], dataset_dir=None, protocol="clean", **{key: None for key in compare.BUDGET_FLAGS},
    )  # fmt: skip
    runs, budgets, name = compare.plan_runs(args, REPO_ROOT / "bundles")
    assert name == "equal" and set(budgets) == {"la"}
    assert [(r.label, r.seed) for r, _ in runs] == [
        ("supervised_la", 1), ("supervised_la", 2), ("mean_teacher_la", 1), ("mean_teacher_la", 2),
        ("mean_teacher_la_twin", 1), ("mean_teacher_la_twin", 2),
    ]  # fmt: skip


def test_table_notes_bundles_of_one_dataset_on_different_recipes():
    root = REPO_ROOT / "bundles"
    assert compare.recipe_notes(root, ["supervised_la", "mean_teacher_la", "cps_la"]) == []
    (note,) = compare.recipe_notes(root, ["coranet_pancreas", "stlu_pancreas", "supervised_la"])
    assert note.startswith("pancreas:") and "pancreas_coranet.json" in note and "pancreas_mcnet.json" in note


# ----------------------------------------------------------------------------------------------------------------
# seeds and reuse


def fake_record(label, seed, dice, twin=False, dataset="acdc"):
    metrics = {"dice": dice, "jaccard": dice / 2, "hd95": 10 * dice, "asd": dice, "monai_dice": dice}
    metrics["empty_predictions"] = 0.0
    bundle = label.removesuffix("_twin")
    return {"label": label, "bundle": bundle, "twin": twin, "seed": seed, "dataset": dataset, "metrics": metrics,
            "train_seconds": 10.0 * seed, "peak_rss_mb": 100.0 + seed}  # fmt: skip


def test_seeds_aggregate_to_mean_and_sample_std_with_the_difference_to_the_twin():
    records = [fake_record("mt", s, d) for s, d in ((1, 0.70), (2, 0.80), (3, 0.90))]
    records += [fake_record("mt_twin", s, d, twin=True) for s, d in ((1, 0.60), (2, 0.62), (3, 0.64))]
    records += [fake_record("cps", s, d) for s, d in ((1, 0.50), (2, 0.70), (3, 0.90))]
    records += [fake_record("supervised", s, d) for s, d in ((1, 0.64), (2, 0.66), (3, 0.68))]
    rows = {row["label"]: row for row in compare.aggregate(records, {"acdc": "supervised"})}
    mt = rows["mt"]
    assert mt["seeds"] == "1 2 3"
    assert mt["dice_mean"] == pytest.approx(0.80) and mt["dice_std"] == pytest.approx(0.10)  # ddof 1
    assert mt["hd95_mean"] == pytest.approx(8.0) and mt["jaccard_std"] == pytest.approx(0.05)
    assert mt["train_seconds"] == 20.0 and mt["peak_rss_mb"] == 103.0
    assert mt["reference"] == "mt_twin" and mt["delta_dice"] == pytest.approx(0.18)
    assert mt["exceeds_seed_spread"] is True  # 0.18 > max(0.10, 0.02)
    assert mt["delta_per_seed"] == pytest.approx({1: 0.10, 2: 0.18, 3: 0.26})
    cps = rows["cps"]  # no twin: the supervised bundle of the dataset is the reference
    assert cps["reference"] == "supervised" and cps["delta_dice"] == pytest.approx(0.04)
    assert cps["exceeds_seed_spread"] is False  # 0.04 < 0.20
    assert cps["delta_per_seed"] == pytest.approx({1: -0.14, 2: 0.04, 3: 0.22})
    assert rows["mt_twin"]["delta_dice"] is None and rows["supervised"]["delta_dice"] is None


def test_one_seed_has_no_spread_to_exceed():
    rows = compare.aggregate([fake_record("mt", 1, 0.7), fake_record("mt_twin", 1, 0.6, twin=True)])
    assert rows[0]["dice_std"] == 0.0 and rows[0]["delta_dice"] == pytest.approx(0.1)
    assert rows[0]["exceeds_seed_spread"] is None


def test_seed_flags():
    parser = compare.build_parser()
    assert compare.resolve_seeds(parser.parse_args(["--bundles", "x", "--repeats", "3"])) == [1337, 1338, 1339]
    assert compare.resolve_seeds(parser.parse_args(["--bundles", "x", "--seeds", "1337", "2024", "7"])) == [
        1337,
        2024,
        7,
    ]
    assert compare.resolve_seeds(parser.parse_args(["--bundles", "x"])) == [1337]
    with pytest.raises(SystemExit):
        parser.parse_args(["--bundles", "x", "--repeats", "2", "--seeds", "1"])


def test_a_run_is_finished_when_its_record_exists_and_is_reused(tmp_path, monkeypatch):
    run = compare.Run("supervised_acdc", 5)
    settings = {"max_iterations": 4, "seed": 5}
    steps = compare.step_files(REPO_ROOT / "bundles", run.bundle, demo=True)
    calls = []

    def fake_child(command, check):  # stands in for the training subprocess: writes the record at the end
        calls.append(command)
        spec = json.loads((run.directory(tmp_path) / "spec.json").read_text())
        (run.directory(tmp_path) / compare.RUN_RECORD).write_text(json.dumps({"settings": spec["overrides"]}))

    monkeypatch.setattr(compare.subprocess, "run", fake_child)
    partial = run.directory(tmp_path) / "models"
    partial.mkdir(parents=True)
    (partial / "latest_1.pt").write_text("interrupted")  # an unfinished run: no run.json
    assert compare.finished_record(run.directory(tmp_path), settings) is None
    assert compare.execute(run, REPO_ROOT / "bundles", tmp_path, steps, settings)["reused"] is False
    assert len(calls) == 1 and not partial.exists()  # redone from scratch

    assert compare.execute(run, REPO_ROOT / "bundles", tmp_path, steps, settings)["reused"] is True
    assert len(calls) == 1  # no second child process
    with pytest.raises(SystemExit, match="other settings"):
        compare.execute(run, REPO_ROOT / "bundles", tmp_path, steps, {**settings, "max_iterations": 8})


def test_overrides_reach_each_step_that_defines_them():
    steps = compare.step_files(REPO_ROOT / "bundles", "dycon_la", demo=True)
    overrides = {"num_classes": 3, "max_iterations": 5, "method#beta_max": 3.0, "largest_component": False}
    assert compare.step_overrides(steps["train"], overrides) == overrides
    assert compare.step_overrides(steps["inference"], overrides) == {"num_classes": 3, "largest_component": False}
    with pytest.raises(SystemExit, match="no config id num_clases"):
        compare.check_overrides("dycon_la", steps, {"num_clases": 3})


# ----------------------------------------------------------------------------------------------------------------
# figures


def test_dice_figure_has_labelled_axes_values_and_per_seed_points(tmp_path):
    groups = [
        plots.DiceGroup("supervised_acdc", [0.6, 0.64], [0.5, 0.7, 0.6, 0.68]),
        plots.DiceGroup("mean_teacher_acdc_twin", [0.61], [0.6, 0.62]),
    ]
    figure = plots.dice_figure(groups)
    axes = figure.axes[0]
    assert axes.get_title() and axes.get_xlabel() and axes.get_ylabel().startswith("Dice")
    assert [t.get_text() for t in axes.get_xticklabels()] == ["supervised_acdc", "mean_teacher_acdc_twin"]
    assert {t.get_text() for t in axes.texts} == {"0.620", "0.610"}  # the mean written on each bar
    from matplotlib.collections import PathCollection

    offsets = [len(c.get_offsets()) for c in axes.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    assert sorted(offsets) == [1, 2, 2, 4]  # per-seed points and per-case points of both bars
    assert axes.get_legend() is not None
    assert plots.save(figure, tmp_path / "d.png").read_bytes()[:8] == PNG_SIGNATURE


def test_case_montage_shows_three_planes_of_a_volume_and_one_slice_of_a_stack():
    truth = np.zeros((20, 18, 16), np.int64)
    truth[5:12, 6:14, 4:9] = 1
    pred = np.roll(truth, 2, axis=0) * 2
    image = np.random.default_rng(0).normal(size=truth.shape)
    volume = plots.case_montage_figure(image, truth, pred, "dycon_la, seed 1", spatial_dims=3)
    titles = [a.get_title() for a in volume.axes]
    assert len(volume.axes) == 12 and titles[:4] == [f"{c} (z = 6)" for c in plots.COLUMNS]
    assert {t.split(" (")[1] for t in titles} == {"z = 6)", "y = 9)", "x = 8)"}
    assert volume.get_suptitle() == "dycon_la, seed 1" and volume.legends
    stack = plots.case_montage_figure(image, truth, pred, "acdc", spatial_dims=2)
    assert [a.get_title() for a in stack.axes][0] == "image (slice 4)"  # the slice with the most foreground
    assert plots.difference_map(truth, pred)[5, 6, 4] == 2  # missed: false negative
    assert plots.difference_map(truth, pred)[13, 6, 4] == 1  # predicted outside: false positive
    assert plots.difference_map(truth, pred)[8, 6, 4] == 3  # both foreground, other class


def test_learning_curves_are_one_line_per_bundle_over_its_seeds():
    loss = [(step, 1.0 / step) for step in range(1, 41)]
    figure = plots.learning_curve_figure(
        {
            "mt": [([(100, 0.4), (200, 0.6)], loss), ([(100, 0.6), (200, 0.8), (300, 0.9)], loss)],
            "mt_twin": [([(100, 0.5), (200, 0.5)], loss)],
            "mt_la": [([], loss)],
        }
    )
    dice_axes, loss_axes = figure.axes
    assert dice_axes.get_xlabel() == "iteration" and "Dice" in dice_axes.get_ylabel()
    lines = {line.get_label(): line for line in dice_axes.get_lines()}
    assert set(lines) == {"mt", "mt_twin"}
    assert list(lines["mt"].get_xdata()) == [100, 200]  # the iterations every seed has
    assert list(lines["mt"].get_ydata()) == pytest.approx([0.5, 0.7])  # mean over seeds
    assert lines["mt_twin"].get_linestyle() == "--" and lines["mt_twin"].get_color() == lines["mt"].get_color()
    assert len(dice_axes.collections) == 1  # the range of mt's two seeds; one seed has no band
    smoothed = loss_axes.get_lines()[0]
    assert len(loss_axes.get_lines()) == 3 and len(smoothed.get_xdata()) == 39  # running mean over 2 of 40 points
    assert smoothed.get_ydata()[0] == pytest.approx((1.0 + 0.5) / 2)
    assert any("mt_la" in t.get_text() for t in dice_axes.texts)
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["mt", "mt_twin", "mt_la"]


def test_the_old_png_writer_and_font_are_gone():
    source = (REPO_ROOT / "common" / "tools" / "plots.py").read_text()
    assert "zlib" not in source and "_GLYPHS" not in source and "import matplotlib" in source


# ----------------------------------------------------------------------------------------------------------------
# the command, end to end, on a 3-class dataset


@pytest.fixture
def three_class_dataset(phantom_datasets, tmp_path):
    """The ACDC phantom with left ventricle and myocardium merged: 3 classes where the bundles default to 4."""
    root = shutil.copytree(phantom_datasets["acdc"], tmp_path / "three_class")
    meta = json.loads((root / "dataset.json").read_text())
    for item in meta["training"] + meta["validation"] + meta["test"]:
        image = nib.load(str(root / item["label"]))
        label = np.asarray(image.dataobj).astype(np.uint8)
        label[label == 3] = 2
        nib.save(nib.Nifti1Image(label, image.affine, image.header), str(root / item["label"]))
    meta["labels"] = {"0": "background", "1": "right ventricle", "2": "left ventricle with wall"}
    meta.pop("phantom", None)
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


def test_compare_on_a_three_class_dataset_runs_through_inference_and_reuses_finished_runs(
    three_class_dataset, tmp_path
):
    out = tmp_path / "results"
    command = [
        sys.executable, "-m", "common.compare", "--bundles", "supervised_acdc", "mean_teacher_acdc", "--twins",
        "--out", str(out), "--dataset-dir", str(three_class_dataset), "--max-iterations", "2", "--val-interval", "2",
        "--override", "num_classes=3", "--override", "spatial_size=[32,32]", "--override", "num_workers=0",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[3/3] mean_teacher_acdc_twin seed 1337" in result.stdout
    for label in ("supervised_acdc", "mean_teacher_acdc", "mean_teacher_acdc_twin"):
        run_dir = out / "runs" / label / "seed1337"
        predictions = sorted((run_dir / "predictions").glob("*_seg.nii.gz"))
        assert len(predictions) == len(json.loads((three_class_dataset / "dataset.json").read_text())["test"])
        assert np.asarray(nib.load(str(predictions[0])).dataobj).max() <= 2
        assert json.loads((run_dir / "run.json").read_text())["settings"]["num_classes"] == 3
    with open(out / "table.csv") as f:
        rows = {r["label"]: r for r in csv.DictReader(f)}
    assert rows["mean_teacher_acdc"]["reference"] == "mean_teacher_acdc_twin"
    table = (out / "table.md").read_text()
    assert table.startswith("Budget: equal") and "max_iterations 2" in table and "spatial_size [32, 32]" in table
    for png in ("dice.png", "learning_curves.png", "supervised_acdc_case.png", "mean_teacher_acdc_twin_case.png"):
        assert (out / png).read_bytes()[:8] == PNG_SIGNATURE

    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("(reused)") == 3 and "Engine run" not in again.stderr


def test_paper_protocol_overlay_goes_last_and_names_the_run():
    root = REPO_ROOT / "bundles"
    steps = compare.step_files(root, "dycon_brats", demo=True, paper=True)
    overlay = str(root / "dycon_brats" / "configs" / "paper_protocol.json")
    assert steps["train"][-1] == overlay and steps["evaluate"][-1] == overlay  # after evaluate.json's eval_section
    assert overlay not in steps["inference"]
    assert compare.step_files(root, "dycon_brats", demo=True) == {**steps, "train": steps["train"][:-1],
                                                                  "evaluate": steps["evaluate"][:-1]}  # fmt: skip
    assert compare.has_paper_protocol(root, "dycon_brats") and not compare.has_paper_protocol(root, "mean_teacher_la")
    args = compare.build_parser().parse_args(["--bundles", "dycon_brats", "alhvr_brats", "--protocol", "paper"])
    runs, _, _ = compare.plan_runs(args, root)
    assert sorted(run.label for run, _ in runs) == ["alhvr_brats", "dycon_brats_paper"]
