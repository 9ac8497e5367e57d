"""Benchmarks for neural-mechanics: run them all with ``python -m benchmarks.run_all`` (``make bench``).

Every number printed is measured in the same run; the only numbers not measured here are the
Torch-Pruning build times, printed as a labelled reference copied from the project's anchors.md
(/work/shared/anchors.md), measured elsewhere by another tool.
"""
