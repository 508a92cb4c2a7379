"""Validation of public arguments, run once at the boundary before any JAX tracing.

Every public function of the library calls these on its inputs, so bad input raises a
``ValueError`` or ``TypeError`` that names the argument and what was expected, instead of
a deep JAX trace or a silent NaN.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``.

    >>> positive_int(3, "heads")
    3
    >>> positive_int(0, "heads")
    Traceback (most recent call last):
    ...
    ValueError: heads must be an integer >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} "
                        f"of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def real(value: Any, name: str, *, positive: bool = False) -> float:
    """Return ``value`` as a ``float`` if it is a finite real number (Python, numpy or a 0-d
    array scalar), ``> 0`` when ``positive``.

    >>> real(0.5, "t")
    0.5
    >>> real(0.0, "noise", positive=True)
    Traceback (most recent call last):
    ...
    ValueError: noise must be a finite number > 0, got 0.0
    """
    what = "a finite number > 0" if positive else "a finite real number"
    if isinstance(value, bool) or not (
            isinstance(value, (numbers.Real, np.integer, np.floating))
            or (np.shape(value) == () and hasattr(value, "dtype")
                and np.issubdtype(value.dtype, np.number) and value.dtype != bool)):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return v


def choice(value: Any, name: str, options: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``options``, else raise ``ValueError``.

    >>> choice("G1", "gate", [None, "G1", "G2"])
    'G1'
    """
    options = tuple(options)
    if value not in options:
        raise ValueError(f"{name} must be one of {options!r}, got {value!r}")
    return value


def shape_text(shape: tuple[int | None, ...]) -> str:
    """A shape as Python writes it, ``*`` for axes of any length.

    >>> shape_text((3,)), shape_text((None, 2))
    ('(3,)', '(*, 2)')
    """
    parts = ["*" if s is None else str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def finite_array(value: Any, name: str, *, ndim: int | None = None,
                 shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Return ``value`` as a float numpy array after checking rank, shape and finiteness.

    ``shape`` may contain ``None`` for axes of any length. Runs on concrete values only
    (it is meant for the boundary of the library, outside ``jit``).

    >>> finite_array([[1.0, 2.0]], "x", ndim=2).shape
    (1, 2)
    >>> finite_array([1.0, float("nan")], "x")
    Traceback (most recent call last):
    ...
    ValueError: x must contain only finite values (found 1 non-finite entries)
    """
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - numpy raises many types here
        raise TypeError(f"{name} must be an array of real numbers, got {type(value).__name__}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have rank {ndim}, got shape {arr.shape} (rank {arr.ndim})")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            raise ValueError(f"{name} must have shape {shape_text(shape)}, got {arr.shape}")
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ValueError(f"{name} must contain only finite values (found {bad} non-finite entries)")
    return arr


def writable_folder(value: Any, name: str) -> Path:
    """Return ``value`` as a :class:`~pathlib.Path` if it is a folder this process can write
    or create: the folders it lacks are created and a file is written in it, then both are
    removed again, so nothing is left behind and every reason a folder cannot be written
    (permissions, a file in the way, a read-only or virtual file system) is found before any
    work.

    >>> writable_folder("/dev/null/out", "out")
    Traceback (most recent call last):
    ...
    ValueError: out must be a folder that can be written, got '/dev/null/out' ('/dev/null' is not a folder)
    """
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise TypeError(f"{name} must be a path, got {value!r}")
    path = Path(value).expanduser()
    here = path if path.is_absolute() else Path.cwd() / path
    missing = []
    while not os.path.lexists(here) and here != here.parent:
        missing.append(here)
        here = here.parent
    reason = None
    if not here.is_dir():
        reason = f"{str(here)!r} is not a folder"
    elif not os.access(here, os.W_OK | os.X_OK):
        reason = f"{str(here)!r} is not writable"
    else:
        reason = _probe_write(missing[::-1], missing[0] if missing else here)
    if reason is not None:
        raise ValueError(f"{name} must be a folder that can be written, got {str(value)!r} "
                         f"({reason})")
    return path


def _probe_write(create: list[Path], folder: Path) -> str | None:
    """Create the folders ``create`` (outermost first), write and delete a file in
    ``folder``, remove what was created; the reason it failed, or ``None``."""
    made = []
    try:
        for p in create:
            p.mkdir()
            made.append(p)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(fd)
        os.remove(probe)
        return None
    except OSError as exc:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename or folder}"
    finally:
        for p in reversed(made):
            try:
                p.rmdir()
            except OSError:
                pass


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation: ``MemAvailable`` of ``/proc/meminfo``
    (Linux), else the physical memory (``os.sysconf``); ``None`` where neither is known."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def fits_in_memory(need: int, what: str, *, available: int | None = None) -> int:
    """Return ``need`` (bytes) if it is at most the ``available`` memory (default
    :func:`available_memory`), else ``ValueError`` starting with ``what`` (the sizes that ask
    for it, e.g. ``"replicates 100000000"``).

    >>> fits_in_memory(3 * 2**30, "replicates 1000", available=2 * 2**30)
    Traceback (most recent call last):
    ...
    ValueError: replicates 1000 would need about 3 GiB of memory, the machine has 2 GiB available
    """
    need = positive_int(need, "need", minimum=0)
    if available is None:
        available = available_memory()
    if available is not None and need > available:
        raise ValueError(f"{what} would need about {need / 2**30:.3g} GiB of memory, the "
                         f"machine has {available / 2**30:.3g} GiB available")
    return need


def prng_key(value: Any, name: str, *, batch: bool = False) -> Any:
    """Return ``value`` if it is a JAX random key (``jax.random.key(seed)``, or a legacy raw
    ``uint32`` key of shape ``(2,)``); with ``batch=True`` a 1-d array of keys
    (``jax.random.split(key, R)``). Checks dtype and shape only, so it also runs under
    ``jit``/``vmap``.

    >>> import jax
    >>> prng_key(jax.random.split(jax.random.key(0), 3), "keys", batch=True).shape
    (3,)
    >>> prng_key(0, "key")
    Traceback (most recent call last):
    ...
    TypeError: key must be a JAX random key (jax.random.key(seed)), got int
    """
    import jax

    want = "a 1-d array of JAX random keys (jax.random.split(key, R))" if batch \
        else "a JAX random key (jax.random.key(seed))"
    dtype, shape = getattr(value, "dtype", None), getattr(value, "shape", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        key_shape = tuple(shape)
    elif dtype == np.uint32 and shape is not None and len(shape) >= 1 and shape[-1] == 2:
        key_shape = tuple(shape[:-1])
    else:
        raise TypeError(f"{name} must be {want}, got {type(value).__name__}"
                        + (f" of dtype {dtype}" if dtype is not None else ""))
    if len(key_shape) != (1 if batch else 0):
        raise ValueError(f"{name} must be {want}, got keys of shape {key_shape}")
    return value

