"""The benchmark command's plumbing works (issue #11); it asserts no timing target, those live in benchmarks/."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from benchmarks import measure
from benchmarks.floors import FLOORS
from benchmarks.report import machine, write_report
from benchmarks.settings import bundle_names
from tests.bundle_utils import BUNDLES


def test_every_bundle_has_a_floor_loop():
    assert set(bundle_names()) == set(BUNDLES)
    families = {measure.method_family_of(bundle) for bundle in bundle_names()}
    assert families <= set(FLOORS), families - set(FLOORS)


@pytest.mark.parametrize("bundle", ["mean_teacher_acdc"])
def test_one_bundle_writes_table_and_csv_with_the_ratio_columns(bundle, tmp_path, monkeypatch):
    # a smaller typical case keeps the phantom and the inference run short; the measures are the real ones
    monkeypatch.setitem(measure.TYPICAL_SHAPE, "acdc", (64, 64, 4))
    opts = measure.Options(
        device=torch.device("cpu"), amp=False, work_dir=tmp_path, rounds=3, iterations_per_round=1, inference_rounds=1
    )
    result = measure.benchmark_bundle(bundle, opts)
    assert result.method == "MeanTeacher" and result.dims == 2
    for stats in (result.floor, result.engine, result.end_to_end, result.inference):
        assert stats.rounds >= 1 and 0 < stats.minimum <= stats.median <= stats.maximum
    assert result.floor.rounds == result.engine.rounds == result.end_to_end.rounds == 3
    assert result.inference_case == "64x64x4" and "batch 16" in result.inference_windows

    out = tmp_path / "results"
    write_report([result], machine(opts.device, opts.amp, 2), out, {}, "test")
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [row["bundle"] for row in rows] == [bundle]
    assert math.isclose(float(rows[0]["engine/floor"]), result.engine.median / result.floor.median, rel_tol=1e-2)
    assert math.isclose(
        float(rows[0]["end_to_end/engine"]), result.end_to_end.median / result.engine.median, rel_tol=1e-2
    )
    table = (out / "table.md").read_text()
    assert f"| `{bundle}` | MeanTeacher |" in table and "torch threads 2, device cpu" in table
