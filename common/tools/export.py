"""Export a repository bundle as a self-contained MONAI bundle (model zoo and MONAI Label layout).

    python -m common.export bundles/<name> <out_dir> [--zip] [--model-file FILE] [--dataset-dir DIR] [--overwrite]
        [--override KEY=VALUE ...]

``<out_dir>`` becomes the bundle folder: ``LICENSE``, ``configs/``, ``docs/``, ``models/model.pt`` (when the
bundle has trained weights or ``--model-file`` names some) and ``scripts/``, the runtime part of the package
(``RUNTIME_PARTS``; the dataset tooling only when an exported config names it, the repository tools never). Every
``common.`` reference in the exported configs and docs is rewritten to ``scripts.`` and ``bundle_root`` is set to
``"."``, so the folder runs with only itself on the Python path, as the model zoo's CI and MONAI Label load it
(README.md, "Export and share"). Run outputs (``eval/``, logs, tensorboard runs, resume checkpoints, caches) are never
copied. ``--zip`` also writes ``<name>_v<version>.zip`` next to ``<out_dir>``, holding the folder as ``<name>/``.
The export refuses weights that do not load with ``torch.load(weights_only=True)`` and metadata whose version
pins cannot be installed on the model zoo's Python (3.10).

``--override KEY=VALUE`` (repeatable, VALUE in JSON or a plain string) sets a top-level id in every exported config
that has it (not the demo overlay), e.g. the sizes a demo-trained model was trained with. The options MONAI Label may
set (``TRAIN_OPTIONS``, ``INFER_OPTIONS``) become ``displayable_configs`` of train.json and inference.json: MONAI
Label 0.8.5 shows them in its train and infer panels and passes the request's values back as that dict.
"""

from __future__ import annotations

import argparse
import ast
import copy
import fnmatch
import functools
import json
import re
import shutil
import sys
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.bundle.utils import MACRO_KEY

from .metadata import read_metadata

__all__ = [
    "PACKAGE_NAME",
    "RUNTIME_PARTS",
    "DATASET_TOOLING_PARTS",
    "ExportError",
    "rewrite_references",
    "rewrite_config",
    "plain_state_dict",
    "third_party_imports",
    "check_metadata",
    "package_parts",
    "export_bundle",
    "zip_bundle",
    "with_displayable_configs",
    "parse_overrides",
    "main",
]

PACKAGE_NAME = "scripts"
SOURCE_PACKAGE = Path(__file__).resolve().parents[1]  # the package this tools/ folder belongs to
SOURCE_NAME = SOURCE_PACKAGE.name
REPOSITORY = SOURCE_PACKAGE.parent  # macros in bundle configs name shared files relative to the repository root
SHARED_LOGGING = "bundles/shared/logging.conf"
SHARED_FILES = {"LICENSE": REPOSITORY / "LICENSE", "configs/logging.conf": REPOSITORY / SHARED_LOGGING}

BUNDLE_FILES = ("LICENSE", "large_files.yml", "large_files.yaml")
BUNDLE_DIRS = ("configs", "docs")
# run outputs and caches: never part of a shared bundle
EXCLUDED_DIRS = {
    "eval",
    "checkpoints",
    "runs",
    "logs",
    "mlruns",
    "tensorboard",
    "__pycache__",
    ".cache",
    ".pytest_cache",
}
EXCLUDED_FILES = (
    "*.pyc",
    "*.log",
    "events.out.tfevents*",
    "latest_*",
    "training_state*",
    "verify_model.ts",
    "monailabel_train.json",
    ".DS_Store",
)
# What every exported bundle runs, relative to the package (a folder stands for everything below it). An explicit
# list: a new module reaches exported bundles only once it is added here, and the repository tools never do.
RUNTIME_PARTS = (
    "__init__.py",
    "inferers.py",
    "schedules.py",
    "engines",
    "losses",
    "methods",
    "metrics",
    "networks",
    "data/__init__.py",
    "data/check.py",
    "data/contract.py",
    "data/datasets.py",
    "data/recipes.py",
    "data/transforms.py",
)
# Dataset tooling (preparers, phantoms, split lists): exported only when an exported config names one of its
# modules. Every bundle's demo.json does (its dataset_dir is ensure_phantom_dataset), so the demo still runs from
# the exported folder; the tooling then travels whole, so the prepare commands in the bundle's docs run there too.
DATASET_TOOLING_PARTS = ("datasets", "data/phantoms.py", "data/prepare.py", "data/splits")
TEXT_SUFFIXES = (".py", ".md", ".txt", ".json", ".list", ".yaml", ".yml")

# The model zoo's CPU premerge runs on Python 3.10: the newest release series of these packages that still
# ships for it (numpy 2.3, scipy 1.16 and scikit-image 0.26 need Python 3.11).
PY310_LATEST_SERIES = {"numpy": (2, 2), "scipy": (1, 15), "scikit-image": (0, 25)}
# top-level import name -> PyPI distribution, for the packages MONAI does not install itself
DISTRIBUTIONS = {
    "ignite": "pytorch-ignite",
    "nibabel": "nibabel",
    "scipy": "scipy",
    "h5py": "h5py",
    "yaml": "pyyaml",
    "itk": "itk",
    "skimage": "scikit-image",
    "tqdm": "tqdm",
    "tensorboard": "tensorboard",
    "fire": "fire",
}
PINNED_ELSEWHERE = {"torch", "numpy", "monai"}  # pytorch_version, numpy_version, monai_version
# Top-level ids exported as MONAI Label options, by how the option's value is read back. Sizes travel as text
# ("112,112,80"): MONAI Label's clients offer a list-valued option as a choice of its elements.
TRAIN_OPTIONS = {
    "val_interval": "int",  # one MONAI Label "epoch" is val_interval iterations (the trainer's epoch_length)
    "labeled_batch_size": "int",
    "unlabeled_batch_size": "int",
    "spatial_size": "size",  # 2D slice size
    "patch_size": "size",  # 3D patch size
    "num_labeled": "int",
    "num_workers": "int",
    "learning_rate": "float",
}
INFER_OPTIONS = {"spatial_size": "size", "patch_size": "size", "sw_stride": "size"}
OPTIONS_BY_FILE = {"train.json": TRAIN_OPTIONS, "inference.json": INFER_OPTIONS}
NOT_OVERRIDDEN = ("metadata.json", "demo.json")  # the demo overlay keeps its own sizes
VERSION = re.compile(r"^\d+(\.\d+)*$")

# ``common.x`` (not ``foo.common.x`` or ``my_common.x``), the path ``common/x``, ``import common`` and
# ``from common import``
_REFERENCE = re.compile(
    rf"(?<![\w.]){SOURCE_NAME}(?=\.[A-Za-z_])|(?<![\w./-]){SOURCE_NAME}(?=/[A-Za-z_])"
    rf"|(?<=\bimport ){SOURCE_NAME}\b|(?<=\bfrom ){SOURCE_NAME}(?= import\b)"
)


class ExportError(ValueError):
    """The bundle cannot be exported as it is (bad weights, pins, missing files or an occupied output folder)."""


def rewrite_references(text: str, package: str = PACKAGE_NAME) -> str:
    """Replace every dotted, path or imported reference to this package (``common.networks.X``) by ``package``."""
    return _REFERENCE.sub(package, text)


def _rewrite_strings(value: Any, package: str) -> Any:
    if isinstance(value, str):
        return rewrite_references(value, package)
    if isinstance(value, list):
        return [_rewrite_strings(v, package) for v in value]
    if isinstance(value, dict):
        return {k: _rewrite_strings(v, package) for k, v in value.items()}
    return value


def rewrite_config(
    config: Mapping[str, Any], package: str = PACKAGE_NAME, dataset_dir: str | None = None
) -> dict[str, Any]:
    """An exported copy of one config: shared blocks inlined, package references rewritten, ``bundle_root`` ``"."``.

    The one function that decides what an exported config holds; everything else copies its result.

    ``dataset_dir``, when given, replaces a top-level ``dataset_dir`` that is a plain path (not the demo overlay's
    phantom generator).
    """
    flat = without_repository_logging(resolve_file_macros(dict(config)))
    out = _rewrite_strings(flat, package)
    if "bundle_root" in out:
        out["bundle_root"] = "."
    if dataset_dir is not None and isinstance(out.get("dataset_dir"), str):
        out["dataset_dir"] = dataset_dir
    return out


def resolve_file_macros(value: Any, root: Path = REPOSITORY) -> Any:
    """``value`` with every ``%path/file.json#id`` macro replaced by that entry of the file (paths from ``root``).

    Same-file macros (``%network_def``) stay: they resolve inside the exported file as they do in the repository.
    """
    if isinstance(value, dict):
        return {k: resolve_file_macros(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_file_macros(v, root) for v in value]
    if isinstance(value, str) and value.startswith(MACRO_KEY):
        path, ids = ConfigParser.split_path_id(value[len(MACRO_KEY) :])
        if path:
            if not (root / path).is_file():
                raise ExportError(f"macro {value!r} names {root / path}, which does not exist.")
            entry = ConfigParser(ConfigParser.load_config_file(root / path))[ids]
            return resolve_file_macros(copy.deepcopy(entry), root)
    return value


def without_repository_logging(config: dict[str, Any]) -> dict[str, Any]:
    """Drop the ``initialize`` step that applies ``bundles/shared/logging.conf``: the export ships it as
    ``configs/logging.conf``, which ``monai.bundle run`` and MONAI Label apply by themselves."""
    steps = config.get("initialize")
    if isinstance(steps, list):
        config["initialize"] = [s for s in steps if not (isinstance(s, dict) and s.get("fname") == SHARED_LOGGING)]
    return config


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _option_reader(key: str, kind: str, value: Any) -> Any:
    """The config entry that reads option ``key`` back from ``displayable_configs`` as the type ``value`` has."""
    if kind == "size":
        target = f"{PACKAGE_NAME}.data.recipes.size_option"
        return {"_target_": target, "value": f"@displayable_configs#{key}", "dims": len(value)}
    return f"${kind}(@displayable_configs#{key})"


def with_displayable_configs(config: Mapping[str, Any], options: Mapping[str, str]) -> dict[str, Any]:
    """``config`` with its literal top-level ``options`` moved to ``displayable_configs`` (sizes as text) and read
    back from there, so MONAI Label's request values reach them. Expressions and references stay as they are."""
    out, shown = dict(config), dict(config.get("displayable_configs") or {})
    for key, kind in options.items():
        value = out.get(key)
        is_size = isinstance(value, list) and value and all(isinstance(v, int) for v in value)
        if (kind == "size" and not is_size) or (kind != "size" and not _is_number(value)):
            continue
        shown[key] = ",".join(map(str, value)) if kind == "size" else value
        out[key] = _option_reader(key, kind, value)
    if shown:
        out["displayable_configs"] = shown
    return out


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict; VALUE is read as JSON (``[96,96]``, ``4``, ``true``) or kept as text."""
    overrides = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip() or "#" in key or "::" in key:
            raise ExportError(f"--override {pair!r}: expected KEY=VALUE with a top-level id as KEY.")
        try:
            overrides[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key.strip()] = text
    return overrides


def _check_overrides_used(config_dir: Path, overrides: Mapping[str, Any]) -> None:
    ids: set[str] = set()
    for path in config_dir.glob("*.json"):
        if path.name not in NOT_OVERRIDDEN:
            ids.update(json.loads(path.read_text(encoding="utf-8")))
    unknown = sorted(set(overrides) - ids)
    if unknown:
        raise ExportError(f"--override {unknown}: no exported config of {config_dir.parent} has such a top-level id.")


def _dump_json(data: Any, path: Path) -> None:
    """The model zoo's pretty-format-json style: 4-space indent, keys in order, ASCII escapes, a final newline."""
    path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")


def _excluded(path: Path) -> bool:
    return any(part in EXCLUDED_DIRS for part in path.parts) or any(
        fnmatch.fnmatch(path.name, pattern) for pattern in EXCLUDED_FILES
    )


def _files(folder: Path) -> Iterator[Path]:
    """Files below ``folder`` (relative paths, sorted), run outputs left out."""
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not _excluded(relative):
            yield relative


def _copy_text_or_bytes(source: Path, target: Path, rewrite: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if rewrite and source.suffix in TEXT_SUFFIXES:
        target.write_text(rewrite_references(source.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        shutil.copyfile(source, target)  # content only: no symlink, no permissions carried over


def plain_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The network weights in ``path`` as a plain state dict, loaded with ``weights_only=True``.

    A ``{"model": state_dict}`` checkpoint is unwrapped; anything that is not a mapping of tensors is refused.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, ... depending on the content
        raise ExportError(f"{path} does not load with torch.load(weights_only=True): {err}") from err
    if isinstance(checkpoint, Mapping) and set(checkpoint) == {"model"} and isinstance(checkpoint["model"], Mapping):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, Mapping) or not checkpoint:
        raise ExportError(f"{path} is not a state dict (found {type(checkpoint).__name__}).")
    bad = [str(k) for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ExportError(f"{path} is not a plain state dict: non-tensor entries {bad[:5]}.")
    return dict(checkpoint)


def third_party_imports(package_dir: str | Path, parts: Sequence[str] | None = None) -> set[str]:
    """Top-level names of the non-standard-library modules that the ``.py`` files below ``package_dir`` import
    (only those in ``parts``, package-relative, when given)."""
    return set(_third_party_imports(Path(package_dir).resolve(), None if parts is None else tuple(parts)))


@functools.lru_cache(maxsize=8)
def _third_party_imports(package_dir: Path, parts: tuple[str, ...] | None) -> frozenset[str]:
    names: set[str] = set()
    for path in Path(package_dir).rglob("*.py"):
        relative = path.relative_to(package_dir)
        if _excluded(relative) or (parts is not None and not _in_parts(relative, parts)):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return frozenset(n for n in names if n not in sys.stdlib_module_names and n not in {SOURCE_NAME, PACKAGE_NAME})


def _series(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2])


def check_metadata(meta: Mapping[str, Any], imports: set[str] | None = None) -> list[str]:
    """Problems of ``meta`` for the model zoo: changelog, exact pins installable on Python 3.10, missing pins.

    ``imports``: top-level modules the bundle's code imports (default: those of the parts of this package an export
    ships, the runtime and the dataset tooling; the repository tools never ship); each one that MONAI does not
    install must have a ``required_packages_version`` pin.
    """
    problems = []
    version = meta.get("version")
    if not isinstance(meta.get("changelog"), Mapping) or version not in meta["changelog"]:
        problems.append(f"changelog has no entry for version {version!r}")
    packages = dict(meta.get("required_packages_version") or {})
    pins = {"torch": meta.get("pytorch_version"), "numpy": meta.get("numpy_version"), **packages}
    pins["monai"] = meta.get("monai_version")
    for name, pin in pins.items():
        if not isinstance(pin, str) or not VERSION.match(pin):
            problems.append(f"{name} pin {pin!r} is not an exact release number")
        elif name in PY310_LATEST_SERIES and _series(pin) > PY310_LATEST_SERIES[name]:
            latest = ".".join(map(str, PY310_LATEST_SERIES[name]))
            problems.append(f"{name}=={pin} does not install on Python 3.10 (latest series for it: {latest})")
    monai_version = meta.get("monai_version")
    if isinstance(monai_version, str) and monai_version.endswith(".9"):
        problems.append(f"monai_version {monai_version} ends in .9 (the zoo's upper bound helper mishandles it)")
    shipped = RUNTIME_PARTS + DATASET_TOOLING_PARTS
    needed = imports if imports is not None else third_party_imports(SOURCE_PACKAGE, shipped)
    for module in sorted(needed - PINNED_ELSEWHERE):
        dist = DISTRIBUTIONS.get(module, module)
        if dist not in packages:
            problems.append(f"the bundle code imports {module} but required_packages_version has no {dist!r} pin")
    return problems


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExportError(f"{out_dir} exists and is not empty; pass --overwrite to replace it.")
        if not (out_dir / "configs" / "metadata.json").is_file():
            raise ExportError(f"{out_dir} is not an exported bundle; refusing to replace it even with --overwrite.")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def _export_configs(
    source: Path, target: Path, dataset_dir: str | None, overrides: Mapping[str, Any] | None = None
) -> None:
    for relative in _files(source):
        src, dst = source / relative, target / relative
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".json":
            config = rewrite_config(json.loads(src.read_text(encoding="utf-8")), dataset_dir=dataset_dir)
            if src.name not in NOT_OVERRIDDEN:
                config.update({k: v for k, v in (overrides or {}).items() if k in config})
            if src.name in OPTIONS_BY_FILE:
                config = with_displayable_configs(config, OPTIONS_BY_FILE[src.name])
            _dump_json(config, dst)
        else:
            _copy_text_or_bytes(src, dst, rewrite=True)


def _export_docs(source: Path, target: Path, name: str) -> None:
    for relative in _files(source):
        src, dst = source / relative, target / relative
        if src.suffix != ".md":
            _copy_text_or_bytes(src, dst, rewrite=False)
            continue
        text = rewrite_references(src.read_text(encoding="utf-8"))
        # commands in the docs are written for the repository root; the exported folder is the bundle root
        text = text.replace(f"bundles/{name}/", "").replace("From the repository root:", "From the bundle folder:")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text, encoding="utf-8")


def _write_data_license(meta: Mapping[str, Any], docs: Path) -> None:
    """``docs/data_license.txt`` (zoo CONTRIBUTING) from the metadata's ``data_source`` and ``data_license``."""
    lines = [f"Data source: {meta['data_source']}"] if meta.get("data_source") else []
    if meta.get("data_license"):
        lines.append(f"Data license: {meta['data_license']}")
    if lines:
        docs.mkdir(parents=True, exist_ok=True)
        (docs / "data_license.txt").write_text("\n\n".join(lines) + "\n", encoding="utf-8")


def _in_parts(relative: Path, parts: Sequence[str]) -> bool:
    path = relative.as_posix()
    return any(path == part or path.startswith(part + "/") for part in parts)


def _names_any(config_dir: Path, parts: Sequence[str]) -> bool:
    """Whether a file below ``config_dir`` names a module of ``parts`` as ``scripts.<module>`` (an exported config)."""
    modules = "|".join(re.escape(part.removesuffix(".py").replace("/", ".")) for part in parts)
    reference = re.compile(rf"(?<![\w.]){PACKAGE_NAME}\.(?:{modules})\b")
    files = (p for p in sorted(config_dir.rglob("*")) if p.is_file() and p.suffix in TEXT_SUFFIXES)
    return any(reference.search(p.read_text(encoding="utf-8")) for p in files)


def package_parts(config_dir: str | Path) -> tuple[str, ...]:
    """The parts of the package a bundle with the exported configs in ``config_dir`` gets as ``scripts/``.

    The runtime always; the dataset tooling as well when one of those configs names it.
    """
    tooling = DATASET_TOOLING_PARTS if _names_any(Path(config_dir), DATASET_TOOLING_PARTS) else ()
    return RUNTIME_PARTS + tooling


def _export_package(target: Path, parts: Sequence[str]) -> None:
    for relative in _files(SOURCE_PACKAGE):
        if _in_parts(relative, parts):
            _copy_text_or_bytes(SOURCE_PACKAGE / relative, target / relative, rewrite=True)


def export_bundle(
    bundle_dir: str | Path,
    out_dir: str | Path,
    model_file: str | Path | None = None,
    dataset_dir: str | None = None,
    overwrite: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Write the self-contained export of ``bundle_dir`` to ``out_dir`` and return ``out_dir``.

    Args:
        bundle_dir: a repository bundle (``configs/metadata.json``, ``LICENSE``, ...).
        out_dir: the exported bundle folder; must be empty or absent unless ``overwrite``.
        model_file: weights to ship as ``models/model.pt`` (default: the bundle's own ``models/model.pt`` if any).
        dataset_dir: default ``dataset_dir`` written into the exported configs (e.g. the folder MONAI Label's
            training takes the unlabeled stream from).
        overwrite: replace a non-empty ``out_dir``.
        overrides: top-level id -> value, set in every exported config that has the id (not the demo overlay).
    """
    source = Path(bundle_dir).resolve()
    out = Path(out_dir).resolve()
    meta_path = source / "configs" / "metadata.json"
    for required in (meta_path, source / "configs" / "inference.json", *SHARED_FILES.values()):
        if not required.is_file():
            raise ExportError(f"{required} is missing: {source} is not a complete bundle.")
    if out == source or source in out.parents:
        raise ExportError(f"{out} lies inside the bundle {source}; export to another folder.")
    _check_overrides_used(source / "configs", overrides or {})
    meta = read_metadata(meta_path)  # shared entries (bundles/shared/metadata.json) filled in
    problems = check_metadata(meta)
    if problems:
        raise ExportError(f"{meta_path} is not ready for the model zoo:\n  " + "\n  ".join(problems))
    weights_path = Path(model_file) if model_file is not None else source / "models" / "model.pt"
    weights = plain_state_dict(weights_path) if model_file is not None or weights_path.is_file() else None

    _prepare_out_dir(out, overwrite)
    for name in BUNDLE_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    for relative, shared in SHARED_FILES.items():  # kept once in the repository, shipped by every bundle
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared, out / relative)
    _export_configs(source / "configs", out / "configs", dataset_dir, overrides)
    if (source / "docs").is_dir():
        _export_docs(source / "docs", out / "docs", source.name)
    if not (out / "docs" / "data_license.txt").is_file():
        _write_data_license(meta, out / "docs")
    _export_package(out / PACKAGE_NAME, package_parts(out / "configs"))
    if weights is not None:
        (out / "models").mkdir(exist_ok=True)
        torch.save(weights, out / "models" / "model.pt")
    return out


def zip_bundle(bundle_dir: str | Path, name: str | None = None) -> Path:
    """Zip an exported bundle as ``<name>_v<version>.zip`` next to it, entries under ``<name>/`` (zoo layout)."""
    folder = Path(bundle_dir).resolve()
    name = name or folder.name
    version = json.loads((folder / "configs" / "metadata.json").read_text(encoding="utf-8"))["version"]
    archive = folder.parent / f"{name}_v{version}.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for relative in _files(folder):
            zf.write(folder / relative, f"{name}/{relative.as_posix()}")
    return archive


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m common.export", description=__doc__.strip().splitlines()[0])
    parser.add_argument("bundle", type=Path, help="repository bundle folder, e.g. bundles/mean_teacher_la")
    parser.add_argument("out_dir", type=Path, help="exported bundle folder to write")
    parser.add_argument("--zip", action="store_true", help="also write <name>_v<version>.zip next to out_dir")
    parser.add_argument("--model-file", type=Path, help="weights to ship as models/model.pt (a state dict)")
    parser.add_argument("--dataset-dir", help="default dataset_dir of the exported configs")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty out_dir")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a top-level id in the exported configs (repeatable; VALUE as JSON), e.g. spatial_size=[128,128]",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        overrides = parse_overrides(args.override)
        out = export_bundle(args.bundle, args.out_dir, args.model_file, args.dataset_dir, args.overwrite, overrides)
        print(f"exported {args.bundle} to {out}")
        if args.zip:
            print(f"wrote {zip_bundle(out, name=Path(args.bundle).resolve().name)}")
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
