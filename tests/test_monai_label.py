"""MONAI Label contract (bundle-conventions.md §8, §9.8): exported bundles loaded the way its bundle app does.

MONAI Label (0.8.5, ``monailabel/tasks/{infer,train}/bundle.py``) is not a dependency; its loading steps are
reproduced here with MONAI only:

- training: ``monai.bundle.run`` of ``configs/train.json`` with Label's overrides: ``bundle_root``, a string
  ``device``, ``train#trainer#max_epochs``, its labeled 3D studies in ``train#dataset#data`` and its ``val_split``
  share in ``validate#dataset#data`` (``partition_dataset``, so 2 studies at 0.2 leave the validation list empty),
  ``train#handlers`` with a ``CheckpointLoader`` of the served ``models/model.pt`` prepended when there is one, and
  ``displayable_configs`` with the request's values. The server exports ``MONAI_LABEL_STUDIES`` (the studies folder)
  to the training process: the studies without ``labels/final/<id>.*`` feed the unlabeled stream, plus the optional
  ``dataset_dir`` pool (set by ``common.export --dataset-dir``).
- inference: ``configs/inference.json`` read alone; ``network_def`` with ``models/model.pt`` (or ``models/model.ts``
  when there is no ``model.pt``); the ``preprocessing`` transforms one by one on ``{"image": path}``, ``inferer``
  on the batched image, the ``postprocessing`` transforms without ``SaveImaged``.

Both run with only the exported folder providing ``scripts``. The sizes are shrunk by overrides (CI only).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import monai.bundle
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export
from monai.data import partition_dataset
from monai.transforms import Compose, SaveImaged

from common.data import semi_supervised_datalists, unlabeled_studies
from common.tools.export import main as export_main
from tests.bundle_utils import BUNDLES, TINY
from tests.conftest import REPO_ROOT
from tests.export_utils import bundle_on_path, export, initial_weights, scripts_origin

LABEL_BUNDLES = ["mean_teacher_acdc", "mean_teacher_la"]  # a 2D network fed 3D studies, and a 3D one
ITERATIONS = 2


def settings(name: str) -> dict:
    """What a CI user would set in the exported configs: tiny sizes and batches, CPU-friendly loading."""
    batches = {"labeled_batch_size": 2, "unlabeled_batch_size": 2} if name.endswith("acdc") else {}
    batches = batches or {"labeled_batch_size": 1, "unlabeled_batch_size": 1}
    return {**TINY[BUNDLES[name]], **batches, "num_workers": 0, "amp": False, "cache_rate": 1.0}


def inference_settings(name: str) -> dict:
    training_only = ("num_labeled", "labeled_batch_size", "unlabeled_batch_size", "cache_rate")
    return {k: v for k, v in settings(name).items() if k not in training_only}


def label_train(
    bundle: Path, studies: list[dict], overrides: dict, max_epochs: int = 1, val_split: float = 0.2, request=None
) -> None:
    """MONAI Label's ``BundleTrainTask`` (single device): partition, add a checkpoint loader, ``monai.bundle.run``.

    ``request``: option values of the train request; Label passes every ``displayable_configs`` key from it (a
    request without one fails in Label with a ``KeyError``; its clients send the whole train panel).
    """
    config = ConfigParser()
    config.read_config(str(bundle / "configs" / "train.json"))
    train_ds, val_ds = partition_dataset(studies, ratios=[1 - val_split, val_split], shuffle=False)
    handlers = config.get("train#handlers", [])
    served = bundle / "models" / "model.pt"
    if served.exists() and not [h for h in handlers if h.get("_target_") == "CheckpointLoader"]:
        loader = {"_target_": "CheckpointLoader", "load_path": str(served), "load_dict": {"model": "$@network"}}
        handlers.insert(0, {**loader, "strict": False})
    label_overrides = {
        "bundle_root": str(bundle),
        "train#trainer#max_epochs": max_epochs,
        "train#dataset#data": train_ds,
        "device": "cpu",
        "train#handlers": handlers,
        "validate#dataset#data": val_ds,
    }
    shown = config.get("displayable_configs")
    if shown:
        request = {**shown, **(request or {})}  # Label's clients send every option of the train panel
        label_overrides["displayable_configs"] = {key: request[key] for key in shown}  # Label: KeyError if absent
    with bundle_on_path(bundle):
        monai.bundle.run(
            run_id="run",
            init_id=None,
            final_id=None,
            meta_file=str(bundle / "configs" / "metadata.json"),
            config_file=str(bundle / "configs" / "train.json"),
            **overrides,
            **label_overrides,
        )
        assert scripts_origin() == bundle / "scripts"


def label_infer(bundle: Path, image: Path, overrides: dict) -> np.ndarray:
    """MONAI Label's ``BundleInferTask``: the label map (spatial dims only) it would write for ``image``."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    image_key = next(iter(meta["network_data_format"]["inputs"]))
    pred_key = next(iter(meta["network_data_format"]["outputs"]))
    with bundle_on_path(bundle):
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "inference.json"))
        parser.config.update({"bundle_root": str(bundle), "device": "cpu", **overrides})
        if (bundle / "models" / "model.pt").exists():
            network = parser.get_parsed_content("network_def", instantiate=True)
            checkpoint = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
            network.load_state_dict(checkpoint.get("model", checkpoint), strict=True)
        else:
            network = torch.jit.load(str(bundle / "models" / "model.ts"), map_location="cpu")
        network.eval()
        data: dict = {image_key: str(image)}
        pre = parser.get_parsed_content("preprocessing", instantiate=True)
        for transform in pre.transforms if isinstance(pre, Compose) else pre:
            data = transform(data)
        inferer = parser.get_parsed_content("inferer", instantiate=True)
        with torch.no_grad():
            data[pred_key] = inferer(data[image_key][None], network)[0]
        post = parser.get_parsed_content("postprocessing", instantiate=True)
        for transform in post.transforms if isinstance(post, Compose) else post:
            if not isinstance(transform, SaveImaged):
                data = transform(data)
        assert scripts_origin() == bundle / "scripts"
    pred = np.asarray(data[pred_key])
    assert pred.shape[0] == 1, "postprocessing must end with a one-channel label map"
    return pred[0]


def bundle_inference(bundle: Path, images: Path, out: Path, overrides: dict) -> Path:
    """The bundle's own ``inference.json`` run (``monai.bundle run`` in process) on a folder of NIfTI images."""
    configs = bundle / "configs"
    with bundle_on_path(bundle):
        workflow = ConfigWorkflow(
            config_file=str(configs / "inference.json"),
            meta_file=str(configs / "metadata.json"),
            logging_file=str(configs / "logging.conf"),
            workflow_type="infer",
            bundle_root=str(bundle),
            dataset_dir=str(images),
            output_dir=str(out),
            device="cpu",
            **overrides,
        )
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    return out


@pytest.fixture(scope="module", params=LABEL_BUNDLES)
def label_trained(request, phantom_datasets, tmp_path_factory):
    """An exported bundle trained twice by the Label training task (the second run from the served model)."""
    name = request.param
    dataset = phantom_datasets[BUNDLES[name]]
    bundle = export(name, tmp_path_factory.mktemp(f"label_{name}"), dataset_dir=str(dataset))
    meta = json.loads((dataset / "dataset.json").read_text())
    studies = [{"image": str(dataset / i["image"]), "label": str(dataset / i["label"])} for i in meta["training"]]
    overrides = {**settings(name), "max_iterations": 2 * ITERATIONS, "val_interval": ITERATIONS}
    label_train(bundle, studies, overrides)
    first = torch.load(bundle / "models" / "model.pt", weights_only=True)
    label_train(bundle, studies, overrides)
    return {"name": name, "bundle": bundle, "dataset": dataset, "studies": studies, "first": first}


def test_label_trains_volumes_into_served_model(label_trained):
    bundle = label_trained["bundle"]
    assert nib.load(label_trained["studies"][0]["image"]).ndim == 3  # Label's studies are volumes, also for 2D
    weights = torch.load(bundle / "models" / "model.pt", weights_only=True)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    with bundle_on_path(bundle):
        parser.get_parsed_content("network_def").load_state_dict(weights)  # strict: a plain network_def state dict
    assert set(weights) == set(label_trained["first"])
    changed = [k for k in weights if not torch.equal(weights[k], label_trained["first"][k])]
    assert changed, "the second Label training did not update the served model.pt"
    assert list((bundle / "checkpoints").glob("latest_*.pt")), "no resumable training state"
    assert sorted(p.name for p in (bundle / "models").iterdir()) == ["model.pt"], "models/ holds only loadable weights"


def test_label_training_takes_unlabeled_stream_from_dataset_dir(label_trained):
    """The exported default ``dataset_dir`` (``--dataset-dir``) is where the unlabeled images come from."""
    train = json.loads((label_trained["bundle"] / "configs" / "train.json").read_text())
    assert train["dataset_dir"] == str(label_trained["dataset"])
    lists = semi_supervised_datalists(train["dataset_dir"], settings(label_trained["name"])["num_labeled"])
    assert lists["unlabeled"] and all("label" not in item for item in lists["unlabeled"])


def test_label_reads_model_description_from_metadata(label_trained):
    """``/info`` of MONAI Label: label names from ``channel_def`` (background dropped), dimension, first keys."""
    meta = json.loads((label_trained["bundle"] / "configs" / "metadata.json").read_text())
    image_key, image = next(iter(meta["network_data_format"]["inputs"].items()))
    pred_key, pred = next(iter(meta["network_data_format"]["outputs"].items()))
    assert (image_key, pred_key) == ("image", "pred")
    labels = {v.lower(): int(k) for k, v in pred["channel_def"].items() if v.lower() != "background"}
    dataset_labels = json.loads((label_trained["dataset"] / "dataset.json").read_text())["labels"]
    assert labels == {v: int(k) for k, v in dataset_labels.items() if k != "0"}
    assert len(image["spatial_shape"]) == (2 if label_trained["name"].endswith("acdc") else 3)


def test_label_inference_and_torchscript_match_bundle_inference(label_trained, tmp_path):
    """Label's pipeline with ``model.pt``, with ``model.ts`` only, and the bundle's inference.json agree."""
    bundle, name = label_trained["bundle"], label_trained["name"]
    case = json.loads((label_trained["dataset"] / "dataset.json").read_text())["test"][0]
    image = label_trained["dataset"] / case["image"]
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(image, images / image.name)
    overrides = inference_settings(name)

    out = bundle_inference(bundle, images, tmp_path / "predictions", overrides)
    saved = nib.load(str(out / image.name.replace(".nii.gz", "_seg.nii.gz")))
    source = nib.load(str(image))
    assert saved.shape == source.shape and np.allclose(saved.affine, source.affine)
    expected = np.asarray(saved.dataobj)

    eager = label_infer(bundle, image, overrides)
    assert eager.shape == source.shape, "Label appends only a resize; the bundle must restore the geometry itself"
    np.testing.assert_array_equal(eager, expected)

    configs = bundle / "configs"
    with bundle_on_path(bundle):
        ckpt_export(
            net_id="network_def",
            filepath=str(bundle / "models" / "model.ts"),
            ckpt_file=str(bundle / "models" / "model.pt"),
            meta_file=str(configs / "metadata.json"),
            config_file=str(configs / "inference.json"),
            bundle_root=str(bundle),
        )
    served = bundle / "models" / "model.pt"
    served.rename(tmp_path / "model.pt")  # Label falls back to model.ts when there is no model.pt
    try:
        scripted = label_infer(bundle, image, overrides)
    finally:
        (tmp_path / "model.pt").rename(served)
        (bundle / "models" / "model.ts").unlink()
    np.testing.assert_array_equal(scripted, expected)
    num_classes = json.loads((configs / "inference.json").read_text())["num_classes"]
    assert expected.min() >= 0 and expected.max() < num_classes


def test_exported_bundle_runs_without_the_repository(label_trained, tmp_path):
    """``python -m monai.bundle run`` from another folder with no repository on the path (zoo CI / Label)."""
    if label_trained["name"] != "mean_teacher_la":
        pytest.skip("one subprocess run is enough")
    bundle = label_trained["bundle"]
    case = json.loads((label_trained["dataset"] / "dataset.json").read_text())["test"][0]
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(label_trained["dataset"] / case["image"], images / "case.nii.gz")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('common') is not None)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env).returncode == 0
    args = []
    for key, value in inference_settings(label_trained["name"]).items():
        args += [f"--{key}", repr(value)]  # Python literals, as the command line (fire) parses them
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json")]
    command += ["--bundle_root", str(bundle), "--dataset_dir", str(images), "--output_dir", str(tmp_path / "out")]
    command += ["--device", "cpu", *args]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    pred = nib.load(str(tmp_path / "out" / "case_seg.nii.gz"))
    assert pred.shape == nib.load(str(images / "case.nii.gz")).shape


def _nifti(path: Path, shape=(8, 8, 4)) -> Path:
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
    return path


def datastore(root: Path, labeled: list[str], unlabeled: list[str], suffix: str = ".nii.gz") -> Path:
    """A folder laid out like MONAI Label's local datastore: studies at the top, labels in labels/final/<id>."""
    (root / "labels" / "final").mkdir(parents=True)
    for name in labeled + unlabeled:
        _nifti(root / f"{name}{suffix}")
    for name in labeled:
        _nifti(root / "labels" / "final" / f"{name}.nii.gz")
    (root / "datastore_v2.json").write_text("{}")  # Label's own files are not studies
    return root


def test_unlabeled_studies_are_the_studies_without_a_final_label(tmp_path):
    studies = datastore(tmp_path / "studies", ["a", "c"], ["b", "d"])
    _nifti(studies / "e.nii")  # .nii studies count too
    (studies / "labels" / "original").mkdir()
    _nifti(studies / "labels" / "original" / "b.nii.gz")  # only a final label makes a study labeled
    names = [Path(item["image"]).name for item in unlabeled_studies(studies)]
    assert names == ["b.nii.gz", "d.nii.gz", "e.nii"]


def _only_unlabeled_section(folder: Path, count: int) -> Path:
    folder.mkdir()
    items = [{"image": _nifti(folder / f"u{i}.nii.gz").name} for i in range(count)]
    meta = {"labels": {"0": "background", "1": "fg"}, "unlabeled": items}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("num_labeled", [0, 2, 50])
def test_label_unlabeled_stream_from_studies_env_and_dataset_dir(tmp_path, monkeypatch, num_labeled):
    """Under Label (``MONAI_LABEL_STUDIES`` set) the pool is the unlabeled studies plus dataset_dir's images; a
    folder with only an ``unlabeled`` section and any num_labeled work without edits."""
    studies = datastore(tmp_path / "studies", ["a"], ["b", "c"])
    pool = _only_unlabeled_section(tmp_path / "pool", 2)
    monkeypatch.setenv("MONAI_LABEL_STUDIES", str(studies))
    parser = ConfigParser(
        {"datalists": ConfigParser.load_config_file(str(REPO_ROOT / "bundles" / "shared" / "train.json"))["datalists"]}
    )
    parser.update(
        {"dataset_dir": str(pool), "num_labeled": num_labeled, "allow_supervised_only": False, "num_classes": 2}
    )
    parser["method"] = "$type('M', (), {'requires_unlabeled': True})"
    lists = parser.get_parsed_content("datalists")
    names = sorted(Path(item["image"]).name for item in lists["unlabeled"])
    assert names == ["b.nii.gz", "c.nii.gz", "u0.nii.gz", "u1.nii.gz"]
    assert all("label" not in item for item in lists["unlabeled"])


def test_label_empty_pool_is_refused_with_what_to_do_in_the_last_line(tmp_path, monkeypatch):
    """Label's train status shows the last output lines: the message ends the process alone (no traceback after)."""
    studies = datastore(tmp_path / "studies", ["a", "b"], [])
    monkeypatch.setenv("MONAI_LABEL_STUDIES", str(studies))
    with pytest.raises(SystemExit, match="add unannotated studies to the datastore") as raised:
        semi_supervised_datalists(tmp_path / "missing", 7, require_unlabeled=True, studies_dir=str(studies))
    assert str(raised.value).startswith("error: MONAI Label's studies folder")
    lists = semi_supervised_datalists(tmp_path / "missing", 7, require_unlabeled=False, studies_dir=str(studies))
    assert lists["unlabeled"] == []  # allow_supervised_only: the trainer then trains the supervised part


def test_label_training_with_empty_validation_writes_new_model_from_studies(
    phantom_datasets, tmp_path, monkeypatch, capfd
):
    """2 annotated studies and Label's default val_split 0.2: no validation list, yet a new model.pt; the
    unlabeled stream is the datastore's unannotated studies; resume states stay out of models/."""
    name = "mean_teacher_acdc"
    dataset = phantom_datasets[BUNDLES[name]]
    meta = json.loads((dataset / "dataset.json").read_text())
    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for i, item in enumerate(meta["training"] + meta["test"]):
        shutil.copy(dataset / item["image"], studies / f"case{i}.nii.gz")
        if i < 2:
            shutil.copy(dataset / item["label"], studies / "labels" / "final" / f"case{i}.nii.gz")
    labeled = [
        {"image": str(studies / f"case{i}.nii.gz"), "label": str(studies / "labels/final" / f"case{i}.nii.gz")}
        for i in range(2)
    ]
    weights = initial_weights(name, tmp_path / "initial.pt")
    bundle = export(name, tmp_path / "out", model_file=weights)  # dataset_dir: the neutral default, absent here
    before = torch.load(bundle / "models" / "model.pt", weights_only=True)
    monkeypatch.setenv("MONAI_LABEL_STUDIES", str(studies))
    overrides = {**settings(name), "max_iterations": ITERATIONS, "val_interval": ITERATIONS}
    label_train(bundle, labeled, overrides, val_split=0.2)
    log = "".join(capfd.readouterr())  # the exported logging.conf logs to the console
    after = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert any(not torch.equal(after[k], before[k]) for k in before), "model.pt was not replaced"
    unlabeled = len(meta["training"]) + len(meta["test"]) - 2
    assert f"unlabeled stream of {unlabeled} images, {unlabeled} from the studies folder {studies}" in log
    assert "No validation in this run" in log
    assert sorted(p.name for p in (bundle / "models").iterdir()) == ["model.pt"]
    assert list((bundle / "checkpoints").glob("latest_*.pt"))


def test_displayable_configs_reach_training_and_inference(tmp_path):
    """Label lists displayable_configs in its panels and passes them back; --override bakes sizes in."""
    out = tmp_path / "acdc"
    args = [
        "bundles/mean_teacher_acdc",
        str(out),
        "--override",
        "spatial_size=[128,128]",
        "--override",
        "num_workers=0",
    ]
    assert export_main(args) == 0
    train = ConfigParser.load_config_file(str(out / "configs" / "train.json"))
    infer = ConfigParser.load_config_file(str(out / "configs" / "inference.json"))
    expected = {"val_interval", "labeled_batch_size", "unlabeled_batch_size", "spatial_size", "num_labeled"}
    assert expected | {"num_workers", "learning_rate"} == set(train["displayable_configs"])
    assert (
        train["displayable_configs"]["spatial_size"] == "128,128" and train["displayable_configs"]["num_workers"] == 0
    )
    assert infer["displayable_configs"] == {"spatial_size": "128,128"}
    with bundle_on_path(out):
        parser = ConfigParser(train)
        parser["displayable_configs"] = {**train["displayable_configs"], "val_interval": "7", "spatial_size": "96,64"}
        assert parser.get_parsed_content("val_interval") == 7
        assert parser.get_parsed_content("train#epoch_length") == 7  # one Label "epoch"
        assert parser.get_parsed_content("spatial_size") == [96, 64]
    assert export_main(["bundles/mean_teacher_acdc", str(tmp_path / "x"), "--override", "no_such_id=1"]) == 1


def test_export_lists_3d_patch_and_stride_for_inference(tmp_path):
    out = export("mean_teacher_la", tmp_path, overrides={"patch_size": [32, 32, 32], "sw_stride": [16, 16, 16]})
    infer = ConfigParser.load_config_file(str(out / "configs" / "inference.json"))
    assert infer["displayable_configs"] == {"patch_size": "32,32,32", "sw_stride": "16,16,16"}
    with bundle_on_path(out):
        parser = ConfigParser(infer)
        parser.update({"bundle_root": str(out), "device": "cpu"})
        parser["displayable_configs"].update({"patch_size": "24,24,16"})  # as Label's infer task does
        assert list(parser.get_parsed_content("inferer").inferer.roi_size) == [24, 24, 16]
