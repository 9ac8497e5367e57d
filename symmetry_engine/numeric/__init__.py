"""Numeric back end: the tracker on the user's optimizer, the run log, the laws evaluated on recorded
statistics, and the evaluation of runs and checkpoints against them.

This sub-package imports the symbolic engine (laws are derived there, never written here) and torch only
where tensors are touched (tracker, checkpoint reading).
"""
