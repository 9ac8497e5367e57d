"""Suite-wide settings: an isolated analysis cache (inherited by CLI subprocesses)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    old = os.environ.get("NMECH_CACHE_DIR")
    os.environ["NMECH_CACHE_DIR"] = str(tmp_path_factory.mktemp("nmech-cache"))
    yield
    if old is None:
        os.environ.pop("NMECH_CACHE_DIR", None)
    else:
        os.environ["NMECH_CACHE_DIR"] = old

# CI runs a fixed, derandomized set of Hypothesis examples (reproducible verdicts); local runs explore.
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", derandomize=True, print_blob=True)
# Longer local runs: HYPOTHESIS_PROFILE=thorough (the property tests also take 10x their examples,
# tests/props_strategies.py::examples); explores (not derandomized) and keeps no deadline.
_hyp_settings.register_profile("thorough", derandomize=False, print_blob=True, deadline=None, max_examples=1000)
if os.environ.get("HYPOTHESIS_PROFILE"):
    _hyp_settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
elif os.environ.get("CI"):
    _hyp_settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: the suite's models are tiny, and on a 2-core machine extra OpenMP threads make
    them many times slower (and noisy when other processes run)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
