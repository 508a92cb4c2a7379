"""The one experiment runner: configuration -> cache key -> resumable atomic cache -> results.

Every experiment (E1-E4) stores what it computes as JSON entries under
``$GATED_HMOE_CACHE`` (default ``~/.cache/gated_hmoe``) through a :class:`Store`:

- an entry's path is ``<root>/<kind>/<key>.json``, the key a hash of the configuration that
  produced it (:func:`config_key`), so a changed configuration never reads a stale entry;
- writes are atomic (a temporary file in the same folder, then ``os.replace``): an
  interrupted run never leaves a half-written entry, and a restart recomputes only what is
  missing;
- an entry that cannot be read back (truncated, corrupt, not JSON) is reported with its
  path (a :class:`CacheWarning`) and recomputed, never trusted and never fatal.

:func:`versions` is recorded with every result written for a reader.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jaxlib
import numpy as np
import scipy
from tqdm.auto import tqdm

from gated_hmoe import __version__

#: The environment variable that moves the cache.
CACHE_ENV = "GATED_HMOE_CACHE"


class CacheWarning(UserWarning):
    """A cache entry could not be read back and is recomputed."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$GATED_HMOE_CACHE``, else ``~/.cache/gated_hmoe``."""
    if cache_dir is not None:
        if not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be a path, got {type(cache_dir).__name__}")
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "gated_hmoe"


def config_key(payload: Any, *, length: int = 20) -> str:
    """Hex digest of a JSON-serialisable configuration (keys sorted): the cache key.

    >>> config_key({"b": 1, "a": [1, 2]}) == config_key({"a": [1, 2], "b": 1})
    True
    """
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (``nan``, ``inf``) replaced by ``None``, through
    dicts, lists and tuples: strict JSON for committed records (a slope that cannot be fitted
    is stored as ``null``, never as a non-standard ``NaN``).

    >>> json_safe({"slope": float("nan"), "medians": [0.5, float("inf")], "n": 3})
    {'slope': None, 'medians': [0.5, None], 'n': 3}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


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


def read_json(path: str | os.PathLike) -> Any | None:
    """The JSON value stored at ``path``; ``None`` if there is no file, and ``None`` with a
    :class:`CacheWarning` naming the path if the file cannot be read back."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:          # JSONDecodeError, UnicodeDecodeError
        warnings.warn(f"cache entry {path} is unreadable ({type(exc).__name__}: {exc}); "
                      "recomputing it", CacheWarning, stacklevel=2)
        return None


def read_record(path: str | os.PathLike, *, label: str, writer: str,
                fields: tuple[str, ...] = ()) -> dict:
    """A committed record: the JSON object at ``path`` with every key of ``fields``;
    ``ValueError`` beginning with ``label`` (and naming ``writer``, the command that writes
    it, when the file is missing) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{label}: no record at {path} (written by {writer})")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{label}: record {path} is not readable JSON ({err})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{label}: record {path} is not a JSON object")
    for field in fields:
        if field not in record:
            raise ValueError(f"{label}: record {path} has no {field!r}")
    return record


class Store:
    """A folder of JSON cache entries of one ``kind`` under the cache root.

    >>> import tempfile
    >>> s = Store("demo", tempfile.mkdtemp())
    >>> s.get("k", lambda: {"x": 1}), s.get("k", lambda: {"x": 2})
    ({'x': 1}, {'x': 1})
    """

    def __init__(self, kind: str, cache_dir: str | os.PathLike | None = None):
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty string, got {kind!r}")
        self.kind = kind
        self.folder = cache_root(cache_dir) / kind

    def path(self, key: str) -> Path:
        """Where the entry ``key`` lives (``key`` may contain ``/`` for sub-folders)."""
        return self.folder / f"{key}.json"

    def load(self, key: str) -> Any | None:
        """The stored entry, or ``None`` if it is missing or unreadable (then reported)."""
        return read_json(self.path(key))

    def save(self, key: str, obj: Any) -> None:
        """Store ``obj`` atomically."""
        write_json_atomic(self.path(key), obj, indent=1)

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        """The stored entry, or ``compute()`` stored first."""
        hit = self.load(key)
        if hit is None:
            hit = compute()
            self.save(key, hit)
        return hit


def versions() -> dict:
    """Library versions recorded with every result."""
    return {"gated_hmoe": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__,
            "python": platform.python_version()}


def source_commit() -> dict:
    """The git commit of the library's checkout, ``{"commit": sha, "dirty": bool}``
    (``dirty``: uncommitted changes under ``gated_hmoe/`` or ``scripts/``), or
    ``{"commit": "unknown", "dirty": None}`` outside a git checkout. Recorded with results
    that are committed to the repository."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                "gated_hmoe", "scripts"], check=True, capture_output=True,
                               text=True).stdout.strip() != ""
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": head, "dirty": dirty}


def progress(iterable, *, desc: str, enabled: bool = True, **kwargs):
    """A ``tqdm`` progress bar over ``iterable`` (silent when ``enabled`` is false)."""
    return tqdm(iterable, desc=desc, disable=not enabled, **kwargs)


__all__ = ["CACHE_ENV", "CacheWarning", "Store", "cache_root", "config_key", "progress",
           "read_json", "read_record", "source_commit", "versions", "write_json_atomic"]
