"""Benchmarks of the training engine, the data pipeline and inference of every bundle (issue #11).

    python -m benchmarks.run --bundles mean_teacher_acdc dycon_la --out benchmarks/results/

Not a test suite: nothing here is collected by pytest (``testpaths = ["tests"]``) or run by CI. See
:mod:`benchmarks.run` for what is measured and how.
"""
