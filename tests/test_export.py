"""``python -m common.export``: self-contained bundles that pass the model zoo's checks offline (issue #10).

Every bundle folder of ``bundles/`` is exported once per module (with freshly initialised weights standing in for
trained ones) and checked as the zoo CI checks a bundle (bundle-conventions.md §7, §9): files and changelog,
``verify_metadata`` against the shipped schema copy, ``verify_net_in_out``, ``ckpt_export`` to TorchScript and
back, and ``ConfigWorkflow`` properties of train and infer, with only the exported folder
providing ``scripts``.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

from common.datasets.abdomenct1k import ABDOMENCT1K_LABELS
from common.datasets.acdc import ACDC_LABELS
from common.datasets.brats import BRATS_LABELS
from common.datasets.isles import ISLES_LABELS
from common.datasets.la import LA_LABELS
from common.datasets.pancreas import PANCREAS_LABELS
from common.datasets.york import YORK_LABELS
from common.tools.export import (
    DATASET_TOOLING_PARTS,
    RUNTIME_PARTS,
    ExportError,
    check_metadata,
    export_bundle,
    main,
    plain_state_dict,
    rewrite_config,
)
from common.tools.metadata import read_metadata
from tests.bundle_utils import BUNDLES, TINY
from tests.conftest import REPO_ROOT
from tests.export_utils import (
    COMMON_REFERENCE,
    SCHEMA,
    bundle_names,
    bundle_on_path,
    initial_weights,
    scripts_origin,
)

NAMES = bundle_names()
PACKAGE = REPO_ROOT / "common"
# the repository tools and the entry modules of their commands: never exported
TOOL_PARTS = ("tools", "export.py", "compare.py")
DATASET_LABELS = {"acdc": ACDC_LABELS, "la": LA_LABELS, "brats": BRATS_LABELS, "pancreas": PANCREAS_LABELS}
DATASET_LABELS["isles"] = ISLES_LABELS
DATASET_LABELS.update(abdomenct1k=ABDOMENCT1K_LABELS, york=YORK_LABELS)
# the model zoo's readme template headings (bundle-conventions.md §1)
ZOO_HEADINGS = (
    "Model Description",
    "Data",
    "Preprocessing",
    "Performance",
    "System Configuration",
    "Limitations",
    "Citation",
    "References",
)
# MONAI Label switches behaviour on these substrings of a bundle name
LABEL_RESERVED = ("deepedit", "deepgrow", "detection", "classification")


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """Every bundle exported through the command line, each with initial weights as ``models/model.pt``."""
    root = tmp_path_factory.mktemp("exports")
    weights = root / "weights"
    weights.mkdir()
    out = {}
    for name in NAMES:
        model = initial_weights(name, weights / f"{name}.pt")
        assert main([str(REPO_ROOT / "bundles" / name), str(root / name), "--model-file", str(model)]) == 0
        out[name] = root / name
    return out


def metadata(bundle: Path) -> dict:
    return json.loads((bundle / "configs" / "metadata.json").read_text())


def test_every_bundle_folder_is_known_to_the_tests():
    assert NAMES == sorted(BUNDLES)


def test_common_imports_itself_only_relatively():
    """An absolute ``import common...`` inside ``common/`` would break once the package is called ``scripts``."""
    absolute = []
    for path in (REPO_ROOT / "common").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            absolute += [f"{path}:{node.lineno}" for n in names if n.split(".")[0] in ("common", "scripts")]
    assert absolute == []


@pytest.mark.parametrize("name", NAMES)
def test_export_is_self_contained(exports, name):
    bundle, source = exports[name], REPO_ROOT / "bundles" / name
    for required in ("LICENSE", "configs/metadata.json", "configs/inference.json", "configs/train.json"):
        assert (bundle / required).is_file(), required
    assert (bundle / "configs" / "logging.conf").is_file()
    assert (bundle / "scripts" / "__init__.py").is_file()
    assert (bundle / "scripts" / "networks" / "__init__.py").is_file()
    shipped = sorted(p.name for p in (source / "configs").iterdir()) + ["logging.conf"]  # kept once in bundles/shared
    assert sorted(shipped) == sorted(p.name for p in (bundle / "configs").iterdir())
    flat = "\n".join(p.read_text() for p in (bundle / "configs").glob("*.json"))
    assert "bundles/shared" not in flat, "shared blocks must be inlined"
    files = [p for p in bundle.rglob("*")]
    assert not [p for p in files if p.is_symlink()]
    relative = [p.relative_to(bundle) for p in files if p.is_file()]
    assert not [p for p in relative if {"eval", "runs", "__pycache__", ".cache"} & set(p.parts)]
    assert not [p for p in relative if p.name.startswith("latest_") or p.suffix == ".pyc"]
    assert not [p for p in relative if p.parts[0] != "models" and (bundle / p).stat().st_size > 1024 * 1024]
    assert not (bundle / "scripts" / "compare.py").exists() and not (bundle / "scripts" / "export.py").exists()
    for path in relative:
        if path.suffix in (".py", ".json", ".md", ".conf", ".txt"):
            assert not COMMON_REFERENCE.search((bundle / path).read_text()), f"{path} still names common"


@pytest.mark.parametrize("name", NAMES)
def test_exported_configs_follow_zoo_conventions(exports, name):
    configs = exports[name] / "configs"
    for path in configs.glob("*.json"):
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=4) + "\n", f"{path.name}: not the zoo's JSON format"
    for config in ("train", "inference"):
        assert json.loads((configs / f"{config}.json").read_text())["bundle_root"] == "."
    for path in configs.glob("*.json"):  # bundle code is on sys.path only once `run` starts (§3.2, §3.3)
        config = json.loads(path.read_text())
        assert "scripts" not in json.dumps([config.get("imports", []), config.get("initialize", [])]), path.name
    train, infer = (json.loads((configs / f"{c}.json").read_text()) for c in ("train", "inference"))
    assert train["network_def"] == infer["network_def"]
    assert infer["network_def"]["_target_"].startswith("scripts.networks.")


@pytest.mark.filterwarnings("ignore:No hash value provided")  # the schema is the shipped copy, not a download
@pytest.mark.parametrize("name", NAMES)
def test_metadata_verifies_against_schema_and_is_complete(exports, name):
    bundle = exports[name]
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))
    meta = metadata(bundle)
    assert check_metadata(meta) == []
    assert meta["version"] in meta["changelog"]
    assert meta["supported_apps"] == {"monai-label": "0.8.5"}
    for key in ("name", "task", "description", "authors", "data_source", "data_license", "copyright"):
        assert isinstance(meta[key], str) and len(meta[key]) > 10, key
    assert "method:" in meta["authors"]
    assert len(meta["references"]) >= 2
    intended = meta["intended_use"].lower()
    assert "research" in intended and "not for" in intended and "diagnosis" in intended
    assert not any(word in name for word in LABEL_RESERVED)

    fmt, flavour = meta["network_data_format"], BUNDLES[name]
    assert list(fmt["inputs"])[0] == "image" and list(fmt["outputs"])[0] == "pred"
    image, pred = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    assert image["modality"] == ("CT" if flavour in ("pancreas", "abdomenct1k") else "MR")
    assert len(image["channel_def"]) == image["num_channels"]
    assert pred["channel_def"] == DATASET_LABELS[flavour], "class names must be the dataset's"
    assert pred["num_channels"] == len(pred["channel_def"])
    assert len(image["spatial_shape"]) == (2 if flavour in ("acdc", "york") else 3)


@pytest.mark.parametrize("name", NAMES)
def test_zoo_files_and_readme_headings(exports, name):
    bundle = exports[name]
    assert "Apache License" in (bundle / "LICENSE").read_text()
    readme = (bundle / "docs" / "README.md").read_text()
    headings = [line.lstrip("#").strip().strip("*").strip() for line in readme.splitlines() if line.startswith("#")]
    for heading in ZOO_HEADINGS:
        assert any(h.startswith(heading) for h in headings), f"docs/README.md lacks '{heading}'"
    references = readme.split("# References", 1)[1]
    assert references.count("\n- ") >= 2
    assert "Data license:" in (bundle / "docs" / "data_license.txt").read_text()
    assert "bundles/" not in readme


@pytest.mark.parametrize("name", NAMES)
def test_net_in_out_and_torchscript_export(exports, name):
    """The zoo's GPU premerge steps 7 and 8 on CPU: shapes/dtypes of the metadata, TorchScript equal to eager."""
    bundle = exports[name]
    configs = bundle / "configs"
    meta_file, inference = str(configs / "metadata.json"), str(configs / "inference.json")
    weights = torch.load(bundle / "models" / "model.pt", weights_only=True)
    with bundle_on_path(bundle):
        verify_net_in_out(
            net_id="network_def", meta_file=meta_file, config_file=inference, device="cpu", bundle_root=str(bundle)
        )
        ckpt_export(
            net_id="network_def",
            filepath=str(bundle / "models" / "verify_model.ts"),
            ckpt_file=str(bundle / "models" / "model.pt"),
            meta_file=meta_file,
            config_file=inference,
            bundle_root=str(bundle),
        )
        parser = ConfigParser()
        parser.read_config(inference)
        network = parser.get_parsed_content("network_def")
        assert scripts_origin() == bundle / "scripts"
    network.load_state_dict(weights)
    scripted = torch.jit.load(str(bundle / "models" / "verify_model.ts"))  # no Python code needed any more
    image = metadata(bundle)["network_data_format"]["inputs"]["image"]
    # the metadata's smallest valid shape ("16*n" -> 16, "16*n+16" -> 32), as verify_net_in_out builds it
    spatial = [eval(str(size), {"__builtins__": {}}, {"n": 1}) for size in image["spatial_shape"]]
    x = torch.rand(1, image["num_channels"], *spatial, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(scripted(x), network.eval()(x), atol=1e-5)
    (bundle / "models" / "verify_model.ts").unlink()  # a zoo CI output, not part of the bundle


@pytest.mark.parametrize("name", NAMES)
def test_workflow_properties_train_and_infer(exports, name, phantom_datasets):
    check_train_and_infer_workflows(exports[name], BUNDLES[name], phantom_datasets[BUNDLES[name]])


def check_train_and_infer_workflows(bundle: Path, flavour: str, dataset_dir: Path) -> None:
    """Train and infer workflows of an exported bundle initialise with every property, from its own ``scripts``."""
    configs = bundle / "configs"
    common = {"bundle_root": str(bundle), "dataset_dir": str(dataset_dir), "num_workers": 0}
    tiny = {**TINY[flavour], "amp": False}
    runs = [
        (["train"], "train", {**tiny}),
        (["inference"], "infer", {k: v for k, v in tiny.items() if k not in ("num_labeled", "labeled_batch_size")}),
    ]
    with bundle_on_path(bundle):
        for files, workflow_type, overrides in runs:
            workflow = ConfigWorkflow(
                config_file=[str(configs / f"{f}.json") for f in files],
                meta_file=str(configs / "metadata.json"),
                logging_file=str(configs / "logging.conf"),
                workflow_type=workflow_type,
                **common,
                **overrides,
            )
            workflow.initialize()
            assert workflow.check_properties() == [], files
            assert scripts_origin() == bundle / "scripts"


def fake_bundle(tmp_path: Path, name: str = "supervised_la") -> Path:
    """A copy of a repository bundle with run outputs lying around, as after a few local runs."""
    source = tmp_path / name
    shutil.copytree(REPO_ROOT / "bundles" / name, source, ignore=shutil.ignore_patterns(".cache", "models", "eval"))
    for junk in ("eval/metrics.csv", "runs/x/events.out.tfevents.1", "models/latest_10.pt", "docs/__pycache__/a.pyc"):
        (source / junk).parent.mkdir(parents=True, exist_ok=True)
        (source / junk).write_text("run output")
    (source / "configs" / "monailabel_train.json").write_text("{}")
    return source


def test_export_excludes_run_outputs_and_unwraps_checkpoint(tmp_path):
    source = fake_bundle(tmp_path)
    network = torch.nn.Conv3d(1, 2, 3)
    torch.save({"model": network.state_dict()}, source / "models" / "model.pt")  # CheckpointSaver-style dict
    out = export_bundle(source, tmp_path / "out" / "supervised_la")
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert "models/model.pt" in files
    assert not [f for f in files if f.startswith(("eval/", "runs/")) or "latest_" in f or f.endswith(".pyc")]
    assert "configs/monailabel_train.json" not in files
    weights = torch.load(out / "models" / "model.pt", weights_only=True)
    assert set(weights) == {"weight", "bias"} and torch.equal(weights["weight"], network.weight)


def test_export_refuses_weights_that_need_pickled_code(tmp_path):
    source = fake_bundle(tmp_path)
    torch.save(torch.nn.Conv3d(1, 2, 3), source / "models" / "model.pt")  # a whole module, not a state dict
    with pytest.raises(ExportError, match="weights_only"):
        export_bundle(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    torch.save({"model": {"w": torch.zeros(1)}, "optimizer": {"lr": 0.1}}, tmp_path / "state.pt")
    with pytest.raises(ExportError, match="non-tensor"):
        plain_state_dict(tmp_path / "state.pt")


def test_export_replaces_only_an_earlier_export_and_only_with_overwrite(tmp_path):
    source, out = fake_bundle(tmp_path), tmp_path / "out"
    assert main([str(source), str(out)]) == 0
    (out / "old.txt").write_text("x")
    assert main([str(source), str(out)]) == 1
    assert main([str(source), str(out), "--overwrite"]) == 0
    assert not (out / "old.txt").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a bundle")
    assert main([str(source), str(tmp_path / "other"), "--overwrite"]) == 1
    assert (tmp_path / "other" / "notes.txt").is_file()


def test_metadata_pins_must_install_on_the_zoo_python():
    meta = read_metadata(REPO_ROOT / "bundles" / "mean_teacher_la" / "configs" / "metadata.json")
    assert check_metadata(meta) == []
    bad = {**meta, "numpy_version": "2.4.6", "monai_version": "1.4.9", "version": "0.2.0"}
    bad["required_packages_version"] = {k: v for k, v in meta["required_packages_version"].items() if k != "scipy"}
    bad["required_packages_version"]["scikit-image"] = ">=0.22"
    problems = "\n".join(check_metadata(bad))
    for expected in ("numpy==2.4.6 does not install on Python 3.10", "ends in .9", "no 'scipy' pin", "0.2.0"):
        assert expected in problems
    assert "scikit-image pin '>=0.22' is not an exact release number" in problems


def test_dataset_dir_option_sets_plain_defaults_only():
    demo = {"dataset_dir": {"_target_": "common.data.phantoms.ensure_phantom_dataset"}, "bundle_root": "x"}
    assert rewrite_config(demo, dataset_dir="/data/LA")["dataset_dir"]["_target_"].startswith("scripts.")
    train = rewrite_config({"dataset_dir": "/workspace/data/LA", "bundle_root": "bundles/x"}, dataset_dir="/data/LA")
    assert train == {"dataset_dir": "/data/LA", "bundle_root": "."}


def part_of(relative: Path, parts: tuple[str, ...]) -> bool:
    """Whether a path relative to the package lies in one of export's ``parts`` (a file, or a folder's content)."""
    return any(relative.as_posix() == part or relative.as_posix().startswith(part + "/") for part in parts)


def package_files() -> list[Path]:
    return [p.relative_to(PACKAGE) for p in sorted(PACKAGE.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]


def test_every_package_file_is_runtime_dataset_tooling_or_a_tool():
    """The export allow-list stays complete: a new file must be placed in one of the groups on purpose."""
    groups = RUNTIME_PARTS + DATASET_TOOLING_PARTS + TOOL_PARTS
    assert [p for p in package_files() if not part_of(p, groups)] == []
    assert not set(RUNTIME_PARTS) & set(DATASET_TOOLING_PARTS + TOOL_PARTS)


def relative_imports(path: Path) -> list[tuple[Path, list[str]]]:
    """``(package-relative module path without suffix, imported names)`` of each relative import in ``path``."""
    module = path.relative_to(PACKAGE).with_suffix("")
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = module.parents[node.level - 1]  # level 1: the module's own package
            target = base.joinpath(*node.module.split(".")) if node.module else base
            found.append((target, [alias.name for alias in node.names]))
    return found


def resolve(target: Path, names: list[str]) -> list[Path]:
    """The package files a relative import loads: the module or package, and any submodules it names."""
    files = [target.with_suffix(".py")] if (PACKAGE / target.with_suffix(".py")).is_file() else []
    files += [target / "__init__.py"] if (PACKAGE / target / "__init__.py").is_file() else []
    files += [target / f"{n}.py" for n in names if (PACKAGE / target / f"{n}.py").is_file()]
    return files


def test_runtime_imports_nothing_outside_the_runtime():
    """What every export ships is closed under its own imports: no runtime module needs tooling or tools."""
    outside = []
    for relative in package_files():
        if relative.suffix == ".py" and part_of(relative, RUNTIME_PARTS):
            for target, names in relative_imports(PACKAGE / relative):
                loaded = resolve(target, names)
                assert loaded, f"{relative}: cannot resolve the import of {target}"
                outside += [f"{relative} -> {f}" for f in loaded if not part_of(f, RUNTIME_PARTS)]
    assert outside == []


def test_export_without_a_tooling_reference_ships_the_runtime_only(tmp_path, phantom_datasets):
    """No demo.json (the only config naming the phantom generator): scripts/ is exactly the runtime, and runs."""
    source = fake_bundle(tmp_path)
    (source / "configs" / "demo.json").unlink()
    out = export_bundle(source, tmp_path / "out" / "supervised_la")
    shipped = [p.relative_to(out / "scripts") for p in (out / "scripts").rglob("*") if p.is_file()]
    expected = [p for p in package_files() if part_of(p, RUNTIME_PARTS) and p.suffix != ".pyc"]
    assert sorted(shipped) == sorted(expected)
    assert not [p for p in shipped if part_of(p, DATASET_TOOLING_PARTS + TOOL_PARTS)]
    assert not (out / "scripts" / "tools").exists() and not (out / "scripts" / "data" / "phantoms.py").exists()
    check_train_and_infer_workflows(out, BUNDLES["supervised_la"], phantom_datasets["la"])


def test_export_ships_the_dataset_tooling_its_demo_names_and_no_tools(exports, tmp_path):
    """demo.json's dataset_dir is the phantom generator: it runs from the exported bundle's own scripts/."""
    bundle = exports["mean_teacher_la"]
    scripts = bundle / "scripts"
    shipped = [p.relative_to(scripts) for p in scripts.rglob("*") if p.is_file()]
    assert not [p for p in shipped if part_of(p, TOOL_PARTS)] and not (scripts / "tools").exists()
    assert [p for p in package_files() if part_of(p, DATASET_TOOLING_PARTS)] == sorted(
        p for p in shipped if part_of(p, DATASET_TOOLING_PARTS)
    )
    generator = json.loads((bundle / "configs" / "demo.json").read_text())["dataset_dir"]
    tiny = {"num_train": 1, "num_val": 0, "num_test": 0, "shape": [16, 16, 16]}
    # the cache folder is under the bundle root, which train.json sets
    parser = ConfigParser({"bundle_root": str(tmp_path), "dataset_dir": {**generator, **tiny}})
    with bundle_on_path(bundle):
        dataset_dir = Path(parser.get_parsed_content("dataset_dir"))
        assert scripts_origin() == scripts
    assert dataset_dir == tmp_path / ".cache" / "phantom_la"
    assert [item["case"] for item in json.loads((dataset_dir / "dataset.json").read_text())["training"]] == [
        "LA:phantom001"
    ]


def test_command_line_zip_holds_the_bundle_folder(tmp_path):
    out = tmp_path / "mean_teacher_la"
    command = [sys.executable, "-m", "common.export", "bundles/mean_teacher_la", str(out), "--zip"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    archive = tmp_path / f"mean_teacher_la_v{metadata(out)['version']}.zip"
    assert str(archive) in result.stdout
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
    files = {f"mean_teacher_la/{p.relative_to(out).as_posix()}" for p in out.rglob("*") if p.is_file()}
    assert names == files
    assert "mean_teacher_la/scripts/__init__.py" in names and "mean_teacher_la/configs/metadata.json" in names
