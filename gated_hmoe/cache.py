"""On-disk result cache shared by the experiments: where it lives and how files are written.

Results are JSON files keyed by a hash of the configuration that produced them, under
``$GATED_HMOE_CACHE`` (default ``~/.cache/gated_hmoe``). Writes are atomic (a temporary
file in the same folder, then ``os.replace``), so an interrupted run never leaves a
half-written result behind and a restart recomputes only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$GATED_HMOE_CACHE``, else ``~/.cache/gated_hmoe``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("GATED_HMOE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gated_hmoe"


def config_key(payload: Any, *, length: int = 20) -> str:
    """Hex digest of a JSON-serialisable configuration (keys sorted): the cache key.

    >>> config_key({"b": 1, "a": [1, 2]}) == config_key({"a": [1, 2], "b": 1})
    True
    """
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (creating parent folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=indent)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
