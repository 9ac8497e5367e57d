"""Benchmarks for neural-mechanics: run them all with ``python -m benchmarks.run_all`` (``make bench``).

Every number printed is measured in the same run, Torch-Pruning's dependency-graph build included (the
`bench` extra).
"""
