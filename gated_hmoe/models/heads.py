r"""Attention layers whose heads are read as atoms of the hierarchical MoE (experiment E2's model).

A *teacher* attention layer with ``H*`` heads generates ``Y = f_teacher(X) + N(0, nu)`` on
``X ~ Unif[-1, 1]^{N x d}``; a *student* of the same class with ``H > H*`` heads is fitted to
it (:mod:`gated_hmoe.estimation.head_fit`). This module holds the layer classes, the declared
teacher, the exact-fit valley of a duplicated head, and the reading of each head as an HMoE
atom (:func:`head_atoms`), which :mod:`gated_hmoe.estimation.voronoi` matches to the teacher's.

Layer classes (``LAYER_POSITIONS``; the endpoint fits of E2 use the seven of
``POSITIONS``), all with ``d_k = d``, ``d_out = 1`` and the query map
pinned at ``W_Q = I`` (it removes the ``GL(d)`` redundancy of ``W_Q W_K^T``; for G4 this
is a restriction of the class, stated in the book); value maps ``W_V^h: (d, d_v)``:

- ``"MHSA"``: ``O_i = sum_h sum_j pi^h_ij sum_c (W_V^h)_{:c}^T x_j`` -- linear leaves;
- ``"G1"``, ``"G2"``: the literal gate of arXiv 2505.06708 (sigmoid, elementwise), leaves
  ``sigma(x_i^T t_hc) (W_V^h)_{:c}^T x_j`` (G1) or ``sigma(x_j^T t_hc) (W_V^h)_{:c}^T x_j``
  (G2): GLU type, linear in the value weights; ``"G1-headwise"``: one gate
  ``sigma(x_i^T t_h)`` per head;
- ``"G2-tied"``: the G2 gate tied to the values, ``x W_V ⊙ sigma(x W_V) = SiLU(x W_V)``,
  with a free output row ``W_O^h`` (the channels' masses): a ridge leaf built by the gate;
- ``"G3"``, ``"G4"``, ``"G5"``: gated keys, queries, output; leaves stay linear;
- ``"ridge"``: a value activation ("active attention"), leaves
  ``(W_O^h)_c SiLU((W_V^h)_{:c}^T x_j + b_hc)`` -- the ridge form of G1/G2 (SPEC §4), built
  here from :func:`gated_hmoe.models.attention.attention_weights_unchecked` and a ridge
  value map.

``W_O^h`` is pinned at ones where it is redundant with ``W_V^h`` (every class but
``"ridge"`` and ``"G2-tied"``, where it is the channels' mass). Weights are a dict of arrays
with a leading head axis; with ``d_v = 1`` the value-channel axis may be dropped (the layout
of experiment E2's endpoint fits: ``wv (H, d)``, ``t (H, d)``, ``b (H,)``, ``wo (H,)``).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from gated_hmoe import checks
from gated_hmoe.models.attention import (AttentionParams, attention_unchecked,
                                         attention_weights_unchecked)

POSITIONS: tuple[str, ...] = ("MHSA", "G1", "G2", "ridge", "G3", "G4", "G5")
#: Every layer class :func:`layer_output` computes (the profile experiment uses all).
LAYER_POSITIONS: tuple[str, ...] = ("MHSA", "G1", "G1-headwise", "G2", "G2-tied", "ridge",
                                    "G3", "G4", "G5")
#: Leaf class of each position (SPEC §4).
LEAF_CLASS: dict[str, str] = {"MHSA": "linear", "G1": "GLU", "G1-headwise": "GLU", "G2": "GLU",
                              "G2-tied": "ridge (SiLU)", "ridge": "ridge (SiLU)",
                              "G3": "linear", "G4": "linear", "G5": "linear"}
#: Positions whose output row ``W_O^h`` is free (the channels' masses); pinned at ones elsewhere.
MASSFUL: tuple[str, ...] = ("ridge", "G2-tied")

# Fixed teacher heads (declared values; head 0 is the one the student splits).
_TEACHER = [
    {"wk": [[1.6, -0.9], [1.1, 1.9]], "wv": [1.0, -0.8], "b": 0.3, "wo": 1.5,
     "t": [1.2, -0.7], "wg": [[1.0, -0.5], [0.4, 1.1]]},
    {"wk": [[-1.2, 0.7], [0.5, -1.5]], "wv": [-0.6, 1.1], "b": -0.4, "wo": -1.2,
     "t": [-0.9, 1.0], "wg": [[-0.6, 0.8], [1.0, 0.3]]},
]
_TEACHER_G5 = [0.8, -1.0]
#: Number of declared teacher heads.
MAX_TEACHER_HEADS: int = len(_TEACHER)


# ------------------------------------------------------------------ the layer


def check_position(position) -> str:
    """``position`` if it is one of :data:`POSITIONS`, else ``ValueError``."""
    return checks.choice(position, "position", POSITIONS)


def check_layer_position(position) -> str:
    """``position`` if it is one of :data:`LAYER_POSITIONS`, else ``ValueError``."""
    return checks.choice(position, "position", LAYER_POSITIONS)


def teacher_params(position: str, heads: int = 1) -> dict:
    """Weights of the teacher layer: a dict of float64 arrays (``heads`` in 1..2).

    Keys: ``wk (H, d, d)``, ``wv (H, d)``, and per position ``t (H, d)`` (G1/G2 gate),
    ``wg (H, d, d)`` (G3/G4), ``g5 (d,)`` (G5), ``b (H,)`` and ``wo (H,)`` (ridge).
    """
    check_position(position)
    heads = checks.positive_int(heads, "heads")
    if heads > len(_TEACHER):
        raise ValueError(f"heads must be <= {len(_TEACHER)} for the declared teacher, got {heads}")
    hs = _TEACHER[:heads]
    p = {"wk": np.array([h["wk"] for h in hs]), "wv": np.array([h["wv"] for h in hs])}
    if position in ("G1", "G2"):
        p["t"] = np.array([h["t"] for h in hs])
    if position in ("G3", "G4"):
        p["wg"] = np.array([h["wg"] for h in hs])
    if position == "G5":
        p["g5"] = np.array(_TEACHER_G5)
    if position == "ridge":
        p["b"] = np.array([h["b"] for h in hs])
        p["wo"] = np.array([h["wo"] for h in hs])
    return {k: np.asarray(v, np.float64) for k, v in p.items()}


def _canonical(p: dict) -> dict:
    """Weights with the value-channel axis: ``wv (H, d, d_v)``, ``wo (H, d_v)``, ``b (H, d_v)``
    and, elementwise, ``t (H, d, d_v)`` (a ``d_v = 1`` layout without it is expanded)."""
    if jnp.ndim(p["wv"]) == 3:
        return p
    q = dict(p, wv=jnp.asarray(p["wv"])[..., None])
    for k in ("wo", "b"):
        if k in p:
            q[k] = jnp.asarray(p[k])[..., None]
    if "t" in p:
        q["t"] = jnp.asarray(p["t"])[..., None]
    return q


# Declared teacher with two value channels (d_v = 2), for every position of LAYER_POSITIONS.
_TEACHER_DV2 = {
    "wv": [[[1.0, 0.5], [-0.8, 0.9]], [[-0.6, -0.7], [1.1, 0.4]]],
    "t": [[[1.2, -0.5], [-0.7, 0.8]], [[-0.9, 0.6], [1.0, -1.1]]],
    "b": [[0.3, -0.2], [-0.4, 0.1]],
    "wo": [[1.5, -1.0], [-1.2, 0.8]],
}


def layer_teacher(position: str, heads: int = 2) -> dict:
    """The declared two-channel teacher (``d = 2``, ``d_v = 2``, ``heads`` in 1..2) of any
    position in :data:`LAYER_POSITIONS`, in the layout with the value-channel axis:
    ``wk (H, d, d)``, ``wv (H, d, 2)``; ``t (H, d, 2)`` (G1, G2) or ``(H, d)``
    (G1-headwise); ``wg (H, d, d)`` (G3, G4); ``g5 (d,)``; ``b (H, 2)`` (ridge); ``wo (H, 2)``
    (ridge, G2-tied). Float64 numpy arrays.
    """
    check_layer_position(position)
    heads = checks.positive_int(heads, "heads")
    if heads > len(_TEACHER):
        raise ValueError(f"heads must be <= {len(_TEACHER)} for the declared teacher, got {heads}")
    hs = _TEACHER[:heads]
    p = {"wk": [h["wk"] for h in hs], "wv": _TEACHER_DV2["wv"][:heads]}
    if position in ("G1", "G2"):
        p["t"] = _TEACHER_DV2["t"][:heads]
    if position == "G1-headwise":
        p["t"] = [h["t"] for h in hs]
    if position in ("G3", "G4"):
        p["wg"] = [h["wg"] for h in hs]
    if position == "G5":
        p["g5"] = _TEACHER_G5
    if position == "ridge":
        p["b"] = _TEACHER_DV2["b"][:heads]
    if position in MASSFUL:
        p["wo"] = _TEACHER_DV2["wo"][:heads]
    return {k: np.asarray(v, np.float64) for k, v in p.items()}


# ------------------------------------------------------------------ user and seeded teachers

#: What the fields of a two-head teacher are (``H = 2`` heads, ``d = 2``, ``d_v = 2``, head
#: axis first; :func:`teacher_shapes` gives each position's fields and shapes): the
#: ``--teacher FILE.json`` format of ``attention-profile``.
TEACHER_FORMAT: str = (
    "a JSON object of nested lists, head axis first (2 heads, d = 2, d_v = 2): "
    "'wk' (2, 2, 2) key maps (W_Q = I); 'wv' (2, 2, 2) value maps; and per position "
    "'t' (2, 2, 2) gate weights (G1, G2) or (2, 2) (G1-headwise), 'wg' (2, 2, 2) gate "
    "weights (G3, G4), 'g5' (2,) output gate (G5), 'b' (2, 2) value biases (ridge), 'wo' (2, 2) "
    "output rows, the channels' masses (ridge, G2-tied); no other field. Head 0 is the head "
    "the student splits")


def teacher_shapes(position: str, heads: int = 2) -> dict[str, tuple[int, ...]]:
    """The fields of a teacher of ``position`` with ``heads`` heads (``d = 2``, ``d_v = 2``)
    and their shapes, as :func:`layer_teacher` lays them out (:data:`TEACHER_FORMAT`).

    >>> teacher_shapes("G2-tied")
    {'wk': (2, 2, 2), 'wv': (2, 2, 2), 'wo': (2, 2)}
    """
    check_layer_position(position)
    H, d, dv = checks.positive_int(heads, "heads"), 2, 2
    shapes = {"wk": (H, d, d), "wv": (H, d, dv)}
    if position in ("G1", "G2"):
        shapes["t"] = (H, d, dv)
    if position == "G1-headwise":
        shapes["t"] = (H, d)
    if position in ("G3", "G4"):
        shapes["wg"] = (H, d, d)
    if position == "G5":
        shapes["g5"] = (d,)
    if position == "ridge":
        shapes["b"] = (H, dv)
    if position in MASSFUL:
        shapes["wo"] = (H, dv)
    return shapes


def _leaf_norms(p: dict) -> np.ndarray:
    """Per head the norm of the leaf: value map and, where present, value biases."""
    wv = np.asarray(p["wv"], float)
    sq = np.sum(wv.reshape(wv.shape[0], -1) ** 2, 1)
    if "b" in p:
        sq = sq + np.sum(np.asarray(p["b"], float).reshape(wv.shape[0], -1) ** 2, 1)
    return np.sqrt(sq)


def teacher_from_dict(position: str, d, name: str = "teacher") -> dict:
    """A two-head teacher of ``position`` from a JSON-ready dict (:data:`TEACHER_FORMAT`):
    float64 arrays in the layout of :func:`layer_teacher`. ``ValueError`` naming ``name``
    and the field otherwise (a missing or unknown field, a wrong shape, a value that is not
    finite, a head whose leaf is zero -- such a teacher head outputs nothing).

    >>> t = teacher_from_dict("MHSA", teacher_to_dict(layer_teacher("MHSA")))
    >>> sorted(t), t["wv"].shape
    (['wk', 'wv'], (2, 2, 2))
    >>> teacher_from_dict("MHSA", {"wk": [[[1, 0], [0, 1]]] * 2, "wv": [[1, 0], [0, 1]]})
    Traceback (most recent call last):
    ...
    ValueError: teacher field 'wv' must have shape (2, 2, 2), got (2, 2)
    """
    position = check_layer_position(position)
    shapes = teacher_shapes(position)
    if not isinstance(d, dict):
        raise ValueError(f"{name} must be a JSON object with the fields "
                         f"{', '.join(shapes)}, got {type(d).__name__}")
    for key in d:
        if key not in shapes:
            raise ValueError(f"{name} field {key!r} is not a weight of position {position} "
                             f"(its fields: {', '.join(shapes)})")
    out = {}
    for key, shape in shapes.items():
        if key not in d:
            raise ValueError(f"{name} field {key!r} is missing (position {position} needs "
                             f"{', '.join(shapes)})")
        try:
            a = np.asarray(d[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} field {key!r} must be numbers of shape {shape}, got "
                             f"{d[key]!r:.60}") from None
        if a.shape != shape:
            raise ValueError(f"{name} field {key!r} must have shape {shape}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} field {key!r} must be finite numbers")
        out[key] = a
    zero = np.flatnonzero(_leaf_norms(out) == 0)
    if zero.size:
        raise ValueError(f"{name} field 'wv' of head {int(zero[0])} is zero: a teacher head "
                         "must output something")
    return out


def load_teacher(path: str, position: str, name: str = "teacher") -> dict:
    """A two-head teacher of ``position`` read from the JSON file ``path``
    (:data:`TEACHER_FORMAT`, :func:`teacher_from_dict`); ``ValueError`` naming ``name``."""
    try:
        with open(path) as fh:
            d = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name} must be a readable JSON file, could not read {path!r}: "
                         f"{exc}") from exc
    return teacher_from_dict(position, d, name)


def teacher_to_dict(p: dict) -> dict:
    """A teacher's weights as a JSON-ready dict of nested lists (:func:`teacher_from_dict`
    reads it back)."""
    return {k: np.asarray(v, float).tolist() for k, v in p.items()}


def head_cosines(p: dict) -> dict[str, float]:
    """``|cos|`` between the two heads' score matrices ``W_K^0, W_K^1`` (``"wk"``) and
    between their leaves (``"wv"``: value maps, with the biases where present), flattened:
    how far a teacher's heads are from being told apart by nothing."""
    wk = np.asarray(p["wk"], float)
    leaf = [np.concatenate([np.ravel(np.asarray(p[k], float)[h]) for k in ("wv", "b") if k in p])
            for h in range(2)]

    def cos(a, b):
        return float(abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    return {"wk": cos(wk[0].ravel(), wk[1].ravel()), "wv": cos(leaf[0], leaf[1])}


#: The law of a seeded teacher (:func:`seeded_teacher`): the standard deviation of the
#: independent centred normal entries of each field.
SEEDED_TEACHER_SCALES: dict[str, float] = {"wk": 1.5, "wv": 1.0, "t": 1.0, "wg": 1.0,
                                           "g5": 1.0, "b": 0.3, "wo": 1.0}
#: A seeded teacher's heads are told apart: ``|cos|`` of their score matrices and of their
#: leaves at most this (:func:`head_cosines`).
SEEDED_MAX_COSINE: float = 0.5
#: ... every head's leaf norm at least this, and every output-row entry (massful positions)
#: at least this in absolute value.
SEEDED_MIN_LEAF: float = 0.5
SEEDED_MIN_MASS: float = 0.3
#: Draws tried before giving up.
SEEDED_MAX_DRAWS: int = 1000


def seeded_teacher(position: str, seed: int) -> dict:
    """A two-head teacher of ``position`` drawn from a declared law (``d = 2``, ``d_v = 2``,
    :func:`teacher_shapes`): every entry of field ``f`` independent ``N(0, s_f^2)`` with
    ``s_f`` from :data:`SEEDED_TEACHER_SCALES` (``W_K`` 1.5, value maps, gates and output rows
    1, value biases 0.3), draw ``a = 0, 1, ...`` from the key
    ``fold_in(fold_in(key(seed), a), i)`` for the ``i``-th field in the order of
    :func:`teacher_shapes`; the first draw whose heads are told apart is kept: ``|cos|`` of
    the two score matrices and of the two leaves at most :data:`SEEDED_MAX_COSINE`
    (:func:`head_cosines`), every leaf norm at least :data:`SEEDED_MIN_LEAF` and, where the
    output row is the channels' mass (:data:`MASSFUL`), every entry at least
    :data:`SEEDED_MIN_MASS` in absolute value. The declared teacher (:func:`layer_teacher`) is
    not a draw of this law (its score matrices have ``|cos| = 0.81``).

    >>> t = seeded_teacher("G2-tied", 3)
    >>> sorted(t), max(head_cosines(t).values()) <= SEEDED_MAX_COSINE
    (['wk', 'wo', 'wv'], True)
    """
    shapes = teacher_shapes(position)
    seed = checks.positive_int(seed, "teacher_seed", minimum=0)
    key = jax.random.key(seed)
    for attempt in range(SEEDED_MAX_DRAWS):
        ka = jax.random.fold_in(key, attempt)
        p = {f: SEEDED_TEACHER_SCALES[f] * np.asarray(
                 jax.random.normal(jax.random.fold_in(ka, i), shape, jnp.float64))
             for i, (f, shape) in enumerate(shapes.items())}
        cos = head_cosines(p)
        ok = (max(cos.values()) <= SEEDED_MAX_COSINE
              and np.all(_leaf_norms(p) >= SEEDED_MIN_LEAF)
              and (position not in MASSFUL or np.all(np.abs(p["wo"]) >= SEEDED_MIN_MASS)))
        if ok:
            return p
    raise ValueError(f"teacher_seed {seed}: no draw of {SEEDED_MAX_DRAWS} had heads told apart "
                     "(try another seed)")


def to_attention_params(p: dict, position: str) -> AttentionParams:
    """The :class:`~gated_hmoe.attention.AttentionParams` of a layer that is not ``"ridge"``
    (``W_Q = I``; ``W_O`` the free rows ``wo`` or ones; ``"G2-tied"``: ``W_theta = W_V``)."""
    p = _canonical(p)
    wk = jnp.asarray(p["wk"])
    H, d, _ = wk.shape
    wv = jnp.asarray(p["wv"])
    wq = jnp.broadcast_to(jnp.eye(d, dtype=wk.dtype), (H, d, d))
    wo = (jnp.asarray(p["wo"]) if "wo" in p else jnp.ones(wv.shape[::2], wk.dtype))[..., None]
    gate, wg, granularity = None, None, "elementwise"
    if position in ("G1", "G2"):
        gate, wg = position, jnp.asarray(p["t"])
    elif position == "G1-headwise":
        gate, wg, granularity = "G1", jnp.asarray(p["t"]), "headwise"
    elif position == "G2-tied":
        gate, wg = "G2", wv
    elif position in ("G3", "G4"):
        gate, wg = position, jnp.asarray(p["wg"])
    elif position == "G5":
        gate, wg = "G5", jnp.asarray(p["g5"])[:, None]
    return AttentionParams(wq=wq, wk=wk, wv=wv, wo=wo, wg=wg, gate=gate, granularity=granularity)


def layer_output(p: dict, x: Float[Array, "N d"], position: str) -> Float[Array, "N 1"]:
    """Output ``(N, 1)`` of the layer with weights ``p`` on one sequence ``x: (N, d)``. Traceable."""
    if position != "ridge":
        return attention_unchecked(to_attention_params(p, position), x, None)
    p = _canonical(p)
    plain = to_attention_params({"wk": p["wk"], "wv": p["wv"]}, "MHSA")
    pi = attention_weights_unchecked(plain, x, None)                           # (H, N, N)
    leaf = jax.nn.silu(jnp.einsum("nd,hdc->hnc", x, p["wv"]) + p["b"][:, None, :])  # (H, N, d_v)
    return jnp.einsum("hij,hjc,hc->i", pi, leaf, p["wo"])[:, None]


def batched_output(p: dict, x: Float[Array, "n N d"], position: str) -> Float[Array, "n N 1"]:
    """``layer_output`` over a leading sample axis: ``x: (n, N, d) -> (n, N, 1)``."""
    return jax.vmap(lambda xx: layer_output(p, xx, position))(x)


# ------------------------------------------------------------------ exact-fit valley


def valley_student(position: str, p: float, *, u=None) -> dict:
    """Teacher head 0 duplicated, value maps split as ``p w_V`` and ``(1-p) w_V``.

    ``u`` (optional, ``(d,)``): add ``+u`` to the first copy's and ``-u`` to the second
    copy's value map (a valley direction that is not a mere rescaling). Every other weight
    is copied. For linear and GLU leaves this student reproduces the teacher exactly; for
    the ridge form it does not (its value map sits inside the activation).
    """
    check_position(position)
    t = teacher_params(position, 1)
    s = {k: (np.concatenate([v, v]) if k != "g5" else v.copy()) for k, v in t.items()}
    u = np.zeros(t["wv"].shape[1]) if u is None else np.asarray(u, float)
    s["wv"] = np.stack([p * t["wv"][0] + u, (1 - p) * t["wv"][0] - u])
    return s


def max_output_gap(pa: dict, pb: dict, position: str, x: Float[ArrayLike, "n N d"]) -> float:
    """``max |f_a(X) - f_b(X)|`` over the sequences ``x: (n, N, d)``."""
    xa = jnp.asarray(x)
    return float(jnp.max(jnp.abs(batched_output(pa, xa, position) - batched_output(pb, xa, position))))


# ------------------------------------------------------------------ HMoE atoms and Voronoi matching


def head_atoms(p: dict, position: str) -> dict:
    """Each head read as an HMoE atom (numpy; ``H`` heads).

    - ``mass (H,)``: the head's weight -- ``w_O^h`` (ridge) or ``||w_V^h||`` (linear, GLU);
    - ``router (H, r)``: level-2 score weights ``vec(W_K^h)``, plus the gate weights of
      G3/G4 (scores) and G1/G2 (``t_h``, the leaf's gate), averaged with weights ``mass``
      in a cell;
    - ``leaf (H, l)``: the leaf's shape -- ``w_V^h / ||w_V^h||`` (linear, GLU) or
      ``(w_V^h, b_h)`` (ridge);
    - ``summed (H, s)``: the part that adds up over a cell -- ``w_V^h`` (linear, GLU) or
      ``w_O^h (1, w_V^h, b_h)`` (ridge);
    - ``atom (H, r + l)``: ``(router, leaf)``, the point matched by Voronoi cells.
    """
    wk = np.asarray(p["wk"])
    H = wk.shape[0]
    wv = np.asarray(p["wv"])
    router = [wk.reshape(H, -1)]
    if position in ("G1", "G2"):
        router.append(np.asarray(p["t"]))
    if position in ("G3", "G4"):
        router.append(np.asarray(p["wg"]).reshape(H, -1))
    router = np.concatenate(router, 1)
    if position == "ridge":
        wo, b = np.asarray(p["wo"]), np.asarray(p["b"])
        mass = wo
        leaf = np.concatenate([wv, b[:, None]], 1)
        summed = wo[:, None] * np.concatenate([np.ones((H, 1)), leaf], 1)
    else:
        mass = np.linalg.norm(wv, axis=1)
        leaf = wv / np.maximum(mass, 1e-300)[:, None]
        summed = wv
    return {"mass": mass, "router": router, "leaf": leaf, "summed": summed,
            "atom": np.concatenate([router, leaf], 1)}


def sample_inputs(key: Array, *, n: int, n_tokens: int = 2, d: int = 2
                  ) -> tuple[Float[Array, "n N d"], Float[Array, "n N 1"]]:
    """``n`` sequences ``X ~ Unif[-1,1]^{N x d}``: ``(n, N, d)``, and standard normal noise
    ``(n, N, 1)`` (one draw per output)."""
    kx, ke = jax.random.split(key)
    x = jax.random.uniform(kx, (n, n_tokens, d), jnp.float64, -1.0, 1.0)
    return x, jax.random.normal(ke, (n, n_tokens, 1), jnp.float64)


__all__ = ["POSITIONS", "LAYER_POSITIONS", "MASSFUL", "check_layer_position", "layer_teacher", "LEAF_CLASS", "MAX_TEACHER_HEADS", "check_position", "teacher_params", "to_attention_params",
           "layer_output", "batched_output", "valley_student", "max_output_gap", "head_atoms",
           "sample_inputs", "TEACHER_FORMAT", "teacher_shapes", "teacher_from_dict",
           "teacher_to_dict", "load_teacher", "head_cosines", "SEEDED_TEACHER_SCALES", "SEEDED_MAX_COSINE",
           "SEEDED_MIN_LEAF", "SEEDED_MIN_MASS", "SEEDED_MAX_DRAWS", "seeded_teacher"]
