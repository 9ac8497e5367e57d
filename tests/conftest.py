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
if os.environ.get("CI"):
    _hyp_settings.load_profile("ci")
