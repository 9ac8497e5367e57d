"""On-disk cache of analyses of named models, so `nmech laws` and `nmech analyze` answer fast.

An analysis is a deterministic function of the analyzer's code, the model's code and the command's
options. For zoo and torchvision specs all of these are known *before* torch is imported: the key hashes
the spec, the options, the source of this package (graph analyzer + model zoo) and the installed torch
and torchvision versions (read from package metadata). User factories (`package.module:callable`) are
never cached: their code is outside what the key can see. A cache that cannot be read or written is
skipped silently — it only ever saves time. Each entry stores the SHA-256 of its analysis: an entry
edited or damaged on disk fails it and is recomputed, instead of failing later with a missing key.

Location: $NMECH_CACHE_DIR, else $XDG_CACHE_HOME/neural-mechanics, else ~/.cache/neural-mechanics.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
_SOURCES = ("symmetry_engine/symmetry.py", "symmetry_engine/graph", "model_zoo")


def cache_dir() -> Path:
    if os.environ.get("NMECH_CACHE_DIR"):
        return Path(os.environ["NMECH_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "neural-mechanics"


def _source_digest() -> str:
    h = hashlib.sha256()
    for rel in _SOURCES:
        path = _ROOT / rel
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(_ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def cache_key(spec: str, options: dict[str, Any]) -> str | None:
    """Key for a zoo or torchvision spec; None for user factories (not cacheable)."""
    if ":" in spec and not spec.startswith("torchvision:"):
        return None
    payload = json.dumps({"spec": spec, "options": options, "source": _source_digest(),
                          "torch": _version("torch"), "torchvision": _version("torchvision")},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def load(key: str | None) -> dict[str, Any] | None:
    """The cached analysis for ``key``; None when absent, unreadable, or not what was stored."""
    if key is None:
        return None
    try:
        entry = json.loads((cache_dir() / f"analysis-{key}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("analysis"), dict) \
            or entry.get("sha256") != _digest(entry["analysis"]):
        return None
    return entry["analysis"]


def store(key: str | None, data: dict[str, Any]) -> None:
    if key is None:
        return
    try:
        d = cache_dir()
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".analysis-{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"sha256": _digest(data), "analysis": data}))
        os.replace(tmp, d / f"analysis-{key}.json")
    except OSError:
        pass
