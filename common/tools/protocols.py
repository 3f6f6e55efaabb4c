"""Which protocol produced each paper number, and the overlay that reproduces it (``compare --protocol paper``).

Every bundle evaluates under the clean protocol by default (no test-set selection, no unlabeled labels). Where a
paper's number came from another protocol, ``bundles/<name>/configs/paper_protocol.json`` reproduces it; this table
says, per bundle, which overlay that is and what it changes, so ``compare`` can run both and show them side by side:
``train.json`` + overlay for training, ``train.json`` + ``evaluate.json`` + overlay for evaluation. Bundles absent
from ``PAPER_PROTOCOLS`` report their paper number under their default protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["PAPER_PROTOCOLS", "PaperProtocol", "paper_protocol_configs"]

OVERLAY = "configs/paper_protocol.json"


@dataclass(frozen=True)
class PaperProtocol:
    """One bundle's paper protocol: its overlay file (relative to the bundle folder) and what it changes."""

    changes: tuple[str, ...]
    overlay: str = OVERLAY


_FECL = "FeCL pairs from the ground truth of the unlabeled volumes (datalists keep_unlabeled_labels, fecl_label_source)"
_BEST_ON_TEST = "checkpoint selected on the test list (datalists validation_from test)"

PAPER_PROTOCOLS: dict[str, PaperProtocol] = {
    "dycon_la": PaperProtocol((_FECL,)),
    "dycon_isles": PaperProtocol((_FECL,)),
    "dycon_brats": PaperProtocol((_FECL, "reports the selection list val.txt (eval_section validation)")),
    "dycon_pancreas": PaperProtocol(
        (_FECL, "selects and reports on test1.list = training cases 1-20 (validation_from, test_from training:20)")
    ),
    "coranet_pancreas": PaperProtocol((_BEST_ON_TEST + ", evaluated every 20 epochs (val_interval 120)",)),
    "stlu_la": PaperProtocol((_BEST_ON_TEST + ", every 200 iterations",)),
    "stlu_pancreas": PaperProtocol((_BEST_ON_TEST + ", every 200 iterations",)),
}


def paper_protocol_configs(bundle_dir: str | Path, configs: list[str]) -> list[str]:
    """``configs`` (config file paths of the bundle at ``bundle_dir``) with its paper-protocol overlay appended
    when it has one; unchanged otherwise (its paper number used the default protocol)."""
    protocol = PAPER_PROTOCOLS.get(Path(bundle_dir).name)
    return configs if protocol is None else [*configs, str(Path(bundle_dir) / protocol.overlay)]
