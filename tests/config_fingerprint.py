"""What a bundle's resolved training config builds, as plain JSON, so two config layouts can be compared.

The fingerprint of ``train.json`` + ``demo.json`` lists what the objects are, not how the files spell them: the
network (class, printed structure, parameter shapes), the method (class and hyper-parameters), the optimiser and
LR schedule, every transform of the training and validation pipelines with its settings, the inferers, the
post-processing and the handler set of the trainer and the validator. ``tests/test_config_layout.py`` compares it
with ``tests/fixtures/config_fingerprints.json``, written from the configs before the shared-config redesign, so a
change of layout cannot change behaviour unnoticed. After an intended behaviour change, rewrite the fixture:

    python -m tests.config_fingerprint --write
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Transform

FIXTURE = Path(__file__).parent / "fixtures" / "config_fingerprints.json"
SIMPLE = (bool, int, float, str, type(None))
# Attributes that hold run-time state or objects already described elsewhere, not settings.
SKIPPED_ATTRIBUTES = {
    "R",
    "logger",
    "_logger",
    "engine",
    "network",
    "networks",
    "teacher",
    "trainer",
    "validator",
    "filenames",
}


def plain(value, depth: int = 0):
    """A JSON-able description of ``value``: settings are kept, run-time state is dropped (returns ``None``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN is not equal to itself: compare its name
    if isinstance(value, SIMPLE):
        return round(value, 10) if isinstance(value, float) else value
    if isinstance(value, (torch.Tensor, np.ndarray)):
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
        return array.tolist() if array.size <= 16 else f"array{list(array.shape)}"
    if isinstance(value, (torch.device, torch.dtype, np.dtype)):
        return str(value)
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, (list, tuple)):
        return [plain(v, depth) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v, depth) for k, v in value.items()}
    if depth > 4:
        return type(value).__name__
    if isinstance(value, torch.nn.Module):
        return describe_module(value)
    if isinstance(value, Transform) or hasattr(value, "__dict__"):
        return describe_object(value, depth + 1)
    return type(value).__name__


def describe_object(obj, depth: int = 0) -> dict:
    """Class name and every setting-like attribute of ``obj`` (recursing into nested transforms and callables)."""
    settings = {}
    for name, value in sorted(vars(obj).items()):
        if name in SKIPPED_ATTRIBUTES or callable(value) and not hasattr(value, "__dict__"):
            continue
        if isinstance(value, (torch.optim.Optimizer, torch.utils.data.DataLoader, torch.utils.data.Dataset)):
            continue
        settings[name] = plain(value, depth)
    return {"class": type(obj).__name__, **settings}


def describe_module(module: torch.nn.Module) -> dict:
    structure = hashlib.sha1(str(module).encode()).hexdigest()
    return {
        "class": type(module).__name__,
        "structure_sha1": structure,
        "parameter_shapes": [list(p.shape) for p in module.parameters()],
    }


def describe_optimizer(optimizer: torch.optim.Optimizer) -> dict:
    groups = [{k: plain(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    sizes = [sum(p.numel() for p in g["params"]) for g in optimizer.param_groups]
    return {"class": type(optimizer).__name__, "groups": groups, "parameters": sizes}


def describe_handlers(handlers) -> list:
    """Class and plain settings of each handler (what it saves, not the objects it saves)."""
    described = []
    for handler in handlers:
        settings = {k: plain(v) for k, v in sorted(vars(handler).items()) if is_plain_setting(v)}
        save_dict = getattr(handler, "save_dict", None) or getattr(handler, "load_dict", None)
        if isinstance(save_dict, dict):
            settings["saves"] = sorted(save_dict)
        described.append({"class": type(handler).__name__, **settings})
    return described


def is_plain_setting(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, SIMPLE) for v in value)
    return isinstance(value, SIMPLE)


def fingerprint(workflow) -> dict:
    """Everything ``train.json`` + overlays build that decides what a training run does."""
    parsed = workflow.parser.get_parsed_content
    trainer = parsed("train#trainer")
    method = trainer.method
    validators = [h.validator for h in trainer_handlers(workflow) if type(h).__name__ == "ValidationHandler"]
    unlabeled = trainer.unlabeled_data_loader
    result = {
        "network": describe_module(parsed("network")),
        "method": describe_object(method),
        "method_modules": {k: describe_module(m) for k, m in sorted(method.modules.items())},
        "optimizer": describe_optimizer(trainer.optimizer),
        "trainer": describe_trainer(trainer),
        "labeled_loader": describe_loader(trainer.data_loader),
        "unlabeled_loader": describe_loader(unlabeled) if unlabeled is not None else None,
        "train_handlers": describe_handlers(trainer_handlers(workflow)),
        "validation": describe_validator(workflow, validators[0]) if validators else None,
    }
    return json.loads(json.dumps(result, default=str))


def describe_trainer(trainer) -> dict:
    names = ("clip_grad_norm", "max_iterations", "allow_supervised_only", "seed", "amp", "image_key", "label_key")
    settings = {name: plain(getattr(trainer, name, None)) for name in names}
    state = trainer.state
    return {
        "class": type(trainer).__name__,
        "max_epochs": state.max_epochs,
        "epoch_length": state.epoch_length,
        "inferer": plain(trainer.inferer),
        **settings,
    }


def trainer_handlers(workflow) -> list:
    return list(workflow.parser.get_parsed_content("train#handlers"))


def describe_loader(loader) -> dict:
    dataset = loader.dataset
    transforms = [getattr(dataset, "transform", None), getattr(dataset, "slice_transform", None)]
    return {
        "dataset": type(dataset).__name__,
        "items": len(getattr(dataset, "data", [])),
        "batch_size": loader.batch_size,
        "drop_last": loader.drop_last,
        "transforms": [plain(t) for t in transforms if t is not None],
    }


def describe_validator(workflow, evaluator) -> dict:
    parsed = workflow.parser.get_parsed_content
    return {
        "loader": describe_loader(evaluator.data_loader),
        "inferer": plain(evaluator.inferer),
        "postprocessing": plain(parsed("validate#postprocessing")),
        "key_metric": sorted(parsed("validate#key_metric")),
        "handlers": describe_handlers(parsed("validate#handlers")),
    }


def bundle_fingerprint(name: str) -> dict:
    from tests.bundle_utils import make_workflow

    workflow = make_workflow(name, cache_rate=0.0, num_workers=0)
    torch.manual_seed(0)
    return fingerprint(workflow)


def main() -> None:
    from tests.bundle_utils import BUNDLES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {FIXTURE.name}")
    parser.add_argument("bundles", nargs="*", default=list(BUNDLES))
    args = parser.parse_args()
    prints = {name: bundle_fingerprint(name) for name in args.bundles}
    if args.write:
        FIXTURE.write_text(json.dumps(prints, indent=1, sort_keys=True) + "\n")
        print(f"wrote {FIXTURE} ({len(prints)} bundles)")
    else:
        print(json.dumps(prints, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
