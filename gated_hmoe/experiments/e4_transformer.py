"""Experiment E4: a small transformer on Bigram-Backcopy, ungated vs gated (cached sweeps).

Three measurements share one set of training runs (:func:`run_experiment`):

1. the attention-sink statistic (mean attention on the first token, BOS) per layer and
   head for every attention variant (:func:`sink_table`);
2. learning curves: held-out loss after a fixed step budget vs the number of training
   sequences (:func:`learning_curves`);
3. learning-rate stability: loss spikes and divergence over a grid of peak learning rates
   (:func:`stability`).

The model is :mod:`gated_hmoe.models.transformer`, the task :mod:`gated_hmoe.models.tasks`,
the training :func:`gated_hmoe.estimation.training.train_runs`. Every run is keyed by its
full configuration (:func:`run_key`) and cached as one entry of the
:class:`~gated_hmoe.experiments.runner.Store` ``"transformer"``, written atomically, so an
interrupted sweep resumes where it stopped. Runs that differ only in their gate share task,
data, batch order and the initial values of the shared weights (paired comparison).
Figures: :mod:`gated_hmoe.viz.transformer`. Command line:
``python -m gated_hmoe transformer --preset chapter --out results/e4``.
"""

from __future__ import annotations

import math
import os
import time
from typing import NamedTuple

import jax
import numpy as np

from gated_hmoe import checks
from gated_hmoe.estimation import training
from gated_hmoe.experiments import runner
from gated_hmoe.models import transformer as tfm

#: Bump when the training code changes in a way that changes results (invalidates caches).
CACHE_VERSION = 1


class ExperimentConfig(NamedTuple):
    """One E4 sweep (hashable). Model: ``vocab``, ``seq_len``, ``d_model``, ``heads``,
    ``layers``; optimisation: ``steps``, ``batch``, ``peak_lr`` (the default), ``warmup``;
    data: ``triggers``, ``concentration``, ``pool``, ``n_eval``, ``trace_every``;
    the sweep: ``seeds`` (runs use seeds ``0..seeds-1``), ``sizes`` (training-set sizes of
    the learning curves; the largest is the default size), ``lrs`` (peak learning rates of
    the stability sweep), and which variants enter each measurement (``sink_variants``,
    ``curve_variants``, ``lr_variants``, names from :data:`gated_hmoe.models.transformer.VARIANTS`).
    """

    vocab: int = 16
    seq_len: int = 32
    d_model: int = 32
    heads: int = 2
    layers: int = 2
    steps: int = 400
    batch: int = 16
    peak_lr: float = 1e-2
    warmup: int = 40
    triggers: int = 3
    concentration: float = 0.3
    pool: int = 4096
    n_eval: int = 256
    trace_every: int = 50
    seeds: int = 3
    sizes: tuple = (16, 64, 256, 1024, 4096)
    lrs: tuple = (1e-2, 3e-2, 1e-1)
    sink_variants: tuple = ("MHSA", "G1", "G1-headwise", "G2", "G3", "G4", "G5")
    curve_variants: tuple = ("MHSA", "G1", "G2", "G3")
    lr_variants: tuple = ("MHSA", "G1")

    @property
    def default_size(self) -> int:
        """The training-set size of the sink and stability runs (the largest of ``sizes``)."""
        return max(self.sizes)


#: Named sizes: ``chapter`` (what the book executes), ``large`` (from the command line),
#: ``tiny`` (tests).
PRESETS: dict[str, ExperimentConfig] = {
    "chapter": ExperimentConfig(),
    "large": ExperimentConfig(steps=2000, warmup=200, seeds=5, d_model=64, heads=4,
                              trace_every=200, lrs=(3e-3, 1e-2, 3e-2, 1e-1), sizes=(16, 64, 256, 1024, 4096, 16384),
                              pool=16384),
    "tiny": ExperimentConfig(vocab=6, seq_len=8, d_model=8, heads=2, layers=1, steps=6,
                             batch=4, warmup=2, triggers=1, pool=32, n_eval=8,
                             trace_every=3, seeds=2, sizes=(8, 32), lrs=(1e-2,),
                             sink_variants=("MHSA", "G1"), curve_variants=("MHSA", "G1"),
                             lr_variants=("G1",)),
}


def validate_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Check every field of ``cfg`` (raises ``ValueError``/``TypeError`` naming it)."""
    if not isinstance(cfg, ExperimentConfig):
        raise TypeError(f"cfg must be an ExperimentConfig, got {type(cfg).__name__}")
    for name in ("vocab", "seq_len", "d_model", "heads", "layers", "steps", "batch",
                 "warmup", "triggers", "pool", "n_eval", "trace_every", "seeds"):
        checks.positive_int(getattr(cfg, name), name)
    if cfg.steps % cfg.trace_every:
        raise ValueError(f"trace_every must divide steps, got trace_every={cfg.trace_every}, "
                         f"steps={cfg.steps}")
    tfm.make_config(vocab=cfg.vocab, seq_len=cfg.seq_len, d_model=cfg.d_model,
                    heads=cfg.heads, layers=cfg.layers)
    training.make_train_config(steps=cfg.steps, batch=cfg.batch, peak_lr=cfg.peak_lr,
                               warmup=cfg.warmup)
    if cfg.triggers >= cfg.vocab:
        raise ValueError(f"triggers must be < vocab, got triggers={cfg.triggers}, vocab={cfg.vocab}")
    checks.real(cfg.concentration, "concentration", positive=True)
    if not cfg.sizes:
        raise ValueError("sizes must name at least one training-set size")
    for n in cfg.sizes:
        checks.positive_int(n, "sizes")
        if n > cfg.pool:
            raise ValueError(f"sizes must be <= pool={cfg.pool}, got {n}")
    for lr in cfg.lrs:
        checks.real(lr, "lrs", positive=True)
    for field in ("sink_variants", "curve_variants", "lr_variants"):
        for v in getattr(cfg, field):
            checks.choice(v, field, tfm.VARIANTS)
    return cfg


class RunSpec(NamedTuple):
    """One training run: attention ``variant``, ``seed``, ``n_train`` sequences, peak ``lr``."""

    variant: str
    seed: int
    n_train: int
    lr: float


def run_specs(cfg: ExperimentConfig) -> list[RunSpec]:
    """Every run the three measurements need, without duplicates, grouped by variant."""
    out: dict[RunSpec, None] = {}
    n0, lr0 = cfg.default_size, cfg.peak_lr
    for v in tfm.VARIANTS:
        for s in range(cfg.seeds):
            if v in cfg.sink_variants:
                out[RunSpec(v, s, n0, lr0)] = None
            if v in cfg.curve_variants:
                for n in cfg.sizes:
                    out[RunSpec(v, s, n, lr0)] = None
            if v in cfg.lr_variants:
                for lr in cfg.lrs:
                    out[RunSpec(v, s, n0, float(lr))] = None
    return list(out)


# --------------------------------------------------------------------------------------
# Cache keys and running
# --------------------------------------------------------------------------------------

def _model_fields(cfg: ExperimentConfig) -> dict:
    keep = ("vocab", "seq_len", "d_model", "heads", "layers", "steps", "batch", "warmup",
            "triggers", "concentration", "pool", "n_eval", "trace_every")
    return {k: getattr(cfg, k) for k in keep}


def run_key(cfg: ExperimentConfig, spec: RunSpec) -> str:
    """Cache key of a run (:func:`gated_hmoe.experiments.runner.config_key`): every setting
    that changes its result."""
    payload = {"version": CACHE_VERSION, "config": _model_fields(cfg),
               "run": spec._asdict(), "jax": jax.__version__}
    return runner.config_key(payload, length=24)


def _seed_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(20240605), seed)


def _compute_group(cfg: ExperimentConfig, variant: str, specs: list[RunSpec]) -> list[dict]:
    config = tfm.make_config(vocab=cfg.vocab, seq_len=cfg.seq_len, d_model=cfg.d_model,
                             heads=cfg.heads, layers=cfg.layers, variant=variant)
    tc = training.make_train_config(steps=cfg.steps, batch=cfg.batch, peak_lr=cfg.peak_lr,
                                    warmup=cfg.warmup)
    dc = training.DataConfig(triggers=cfg.triggers, concentration=cfg.concentration,
                             pool=cfg.pool, n_eval=cfg.n_eval, trace_every=cfg.trace_every)
    keys = jax.numpy.stack([_seed_key(s.seed) for s in specs])
    res = training.train_runs(keys, np.array([s.n_train for s in specs]),
                              np.array([s.lr for s in specs]), config, tc, dc)
    res = jax.tree.map(np.asarray, res)
    return [{f: res[i][r].tolist() for i, f in enumerate(training.RunResult._fields)}
            for r in range(len(specs))]


#: Peak-memory estimate of :func:`run_experiment` (bytes): a base for the interpreter, JAX
#: and the compiled programs, plus ``SAFETY`` times a count of the float64 arrays one
#: variant's vmapped runs hold at once (per run: parameters with gradients and two Adam
#: moments; the training batch's activations and attention maps, forward and backward; the
#: evaluation set's forward pass; the token pool). The count is first-order and uncalibrated
#: (the other commands' factors were measured, see scripts/calibrate_memory.py); the base is
#: the ``tiny`` preset's measured peak, 626 MiB (docs/decisions.md). It serves to refuse sizes that
#: cannot fit, not to promise that others do.
MEMORY_BASE: int = 650 * 2**20
MEMORY_SAFETY: float = 2.0


def peak_bytes(cfg: ExperimentConfig) -> int:
    """Estimated peak memory of :func:`run_experiment` for ``cfg`` in bytes (see
    :data:`MEMORY_SAFETY`).

    >>> peak_bytes(PRESETS["chapter"]) < 4 * 2**30
    True
    """
    groups: dict[str, int] = {}
    for spec in run_specs(cfg):
        groups[spec.variant] = groups.get(spec.variant, 0) + 1
    runs = max(groups.values())
    d, L, T = cfg.d_model, cfg.layers, cfg.seq_len
    params = 2 * cfg.vocab * d + T * d + L * 12 * d * d
    train = cfg.batch * L * (16 * T * d + 3 * cfg.heads * T * T)
    evaluate = cfg.n_eval * L * (4 * T * d + cfg.heads * T * T)
    per_run = 8 * (4 * params + train + evaluate) + 4 * cfg.pool * T
    return int(MEMORY_BASE + MEMORY_SAFETY * runs * per_run)


def run_experiment(cfg: ExperimentConfig = PRESETS["chapter"], *,
                   cache_dir: str | os.PathLike | None = None, progress: bool = True,
                   recompute: bool = False) -> "Results":
    """Run (or load from the :class:`~gated_hmoe.experiments.runner.Store` ``"transformer"``
    under ``cache_dir``) every run of ``cfg``; returns :class:`Results`.

    Runs are computed one variant at a time, all of that variant's seeds, sizes and
    learning rates in one ``jax.vmap``; each finished run is written to the cache at once,
    so an interrupted sweep resumes. ``progress`` shows a tqdm bar over runs;
    ``recompute`` ignores (and overwrites) cached runs.
    """
    validate_config(cfg)
    store = runner.Store("transformer", cache_dir)
    specs = run_specs(cfg)
    runs: dict[RunSpec, dict] = {}
    todo: dict[str, list[RunSpec]] = {}
    for s in specs:
        hit = None if recompute else store.load(run_key(cfg, s))
        if hit is not None and hit.get("spec") == list(s):
            runs[s] = hit["result"]
        else:
            todo.setdefault(s.variant, []).append(s)
    bar = runner.progress(None, desc="E4 transformer runs", enabled=progress,
                          total=len(specs), initial=len(runs), unit="run")
    seconds = {}
    for variant, group in todo.items():
        bar.set_postfix_str(f"{variant} ({len(group)} runs)")
        t0 = time.perf_counter()
        results = _compute_group(cfg, variant, group)
        seconds[variant] = time.perf_counter() - t0
        for s, r in zip(group, results):
            store.save(run_key(cfg, s),
                       {"spec": list(s), "config": _model_fields(cfg), "result": r,
                        "group_seconds": seconds[variant], "group_size": len(group),
                        "jax": jax.__version__})
            runs[s] = r
        bar.update(len(group))
    bar.close()
    return Results(cfg, {s: runs[s] for s in specs}, seconds)


def recorded_seconds(cfg: ExperimentConfig = PRESETS["chapter"], *,
                     cache_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """Wall seconds each variant's runs took when they were computed, as recorded with the
    cached runs of ``cfg`` (``group_seconds``; a variant computed in several groups -- a
    resumed sweep -- sums them). Variants without a cached run are left out.

    The times are those of whichever machine computed the cache, not of this call.
    """
    validate_config(cfg)
    store = runner.Store("transformer", cache_dir)
    groups: dict[str, set] = {}
    for s in run_specs(cfg):
        hit = store.load(run_key(cfg, s))
        if hit is not None and "group_seconds" in hit:
            groups.setdefault(s.variant, set()).add(float(hit["group_seconds"]))
    return {v: sum(g) for v, g in groups.items()}


class Results(NamedTuple):
    """All runs of one sweep: ``cfg``, ``runs`` (:class:`RunSpec` -> dict of
    :class:`gated_hmoe.estimation.training.RunResult` fields as lists) and ``seconds``
    (wall time of the groups computed in this call, by variant; empty when everything came
    from the cache)."""

    cfg: ExperimentConfig
    runs: dict
    seconds: dict

    def get(self, variant: str, seed: int, *, n_train: int | None = None,
            lr: float | None = None, field: str = "eval_loss") -> np.ndarray:
        """One field of one run (defaults: the largest size and the default learning rate)."""
        spec = RunSpec(variant, seed, self.cfg.default_size if n_train is None else n_train,
                       float(self.cfg.peak_lr if lr is None else lr))
        if spec not in self.runs:
            raise ValueError(f"no run {spec} in this sweep")
        return np.asarray(self.runs[spec][field])

    def stack(self, variant: str, field: str, **kw) -> np.ndarray:
        """``field`` of every seed, stacked on a leading seed axis."""
        return np.stack([self.get(variant, s, field=field, **kw) for s in range(self.cfg.seeds)])


# --------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------

def sink_table(res: Results, *, field: str = "sink") -> dict[str, dict]:
    """Per sink variant: ``per_head (seeds, L, H)`` of ``field``, and per layer the head
    mean and the largest head, each as ``mean``, ``min``, ``max`` over seeds."""
    out = {}
    for v in res.cfg.sink_variants:
        a = res.stack(v, field)                                      # (S, L, H)
        out[v] = {"per_head": a,
                  "layer_mean": a.mean(axis=2), "layer_max": a.max(axis=2)}
    return out


def learning_curves(res: Results) -> dict[str, np.ndarray]:
    """Held-out loss ``(seeds, sizes)`` per curve variant (default learning rate)."""
    return {v: np.array([[float(res.get(v, s, n_train=n)) for n in res.cfg.sizes]
                         for s in range(res.cfg.seeds)]) for v in res.cfg.curve_variants}


#: A loss spike: a minibatch loss above the running minimum of the earlier minibatch losses
#: by more than this many nats (after warm-up).
SPIKE_NATS = 1.0


def stability(res: Results) -> dict[str, dict]:
    """Per lr variant and learning rate (arrays over seeds): ``spikes`` (count, see
    :data:`SPIKE_NATS`), ``diverged`` (a non-finite loss, or a final held-out loss above
    ``log(vocab)``, the uniform guess), ``stable`` (neither), ``final`` held-out loss; and
    ``largest_stable`` (per seed, the largest stable learning rate, ``nan`` if none)."""
    cfg = res.cfg
    out = {}
    for v in cfg.lr_variants:
        rows = {}
        for lr in cfg.lrs:
            spikes, div, final = [], [], []
            for s in range(cfg.seeds):
                tl = res.get(v, s, lr=lr, field="train_loss")
                ev = float(res.get(v, s, lr=lr))
                finite = bool(np.all(np.isfinite(tl))) and math.isfinite(ev)
                run_min = np.minimum.accumulate(np.where(np.isfinite(tl), tl, np.inf))
                after = np.arange(len(tl)) > cfg.warmup
                jumps = after[1:] & (tl[1:] > run_min[:-1] + SPIKE_NATS)
                spikes.append(int(np.sum(jumps)))
                div.append(not finite or ev > math.log(cfg.vocab))
                final.append(ev)
            rows[float(lr)] = {"spikes": np.array(spikes), "diverged": np.array(div),
                               "stable": (np.array(spikes) == 0) & ~np.array(div),
                               "final": np.array(final)}
        largest = []
        for s in range(cfg.seeds):
            ok = [lr for lr in cfg.lrs if rows[float(lr)]["stable"][s]]
            largest.append(max(ok) if ok else math.nan)
        out[v] = {"by_lr": rows, "largest_stable": np.array(largest)}
    return out


def fmt(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    """``"m [lo, hi]"`` with ``digits`` decimals (for tables)."""
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def summary(res: Results) -> dict:
    """JSON-ready summary of the three measurements (what the CLI writes)."""
    sinks, others = sink_table(res), sink_table(res, field="sink_other")
    curves = learning_curves(res)
    stab = stability(res)
    return {
        "config": res.cfg._asdict(),
        "sink": {v: {"per_head": d["per_head"].tolist(),
                     "non_copy_queries_per_head": others[v]["per_head"].tolist()}
                 for v, d in sinks.items()},
        "learning_curves": {"sizes": list(res.cfg.sizes),
                            **{v: c.tolist() for v, c in curves.items()}},
        "stability": {v: {"largest_stable": d["largest_stable"].tolist(),
                          "by_lr": {str(lr): {k: np.asarray(x).tolist() for k, x in r.items()}
                                    for lr, r in d["by_lr"].items()}}
                      for v, d in stab.items()},
        "bayes_loss": res.stack(res.cfg.sink_variants[0], "bayes_loss").tolist(),
    }


__all__ = ["CACHE_VERSION", "PRESETS", "SPIKE_NATS", "ExperimentConfig", "Results", "RunSpec",
           "fmt", "learning_curves", "recorded_seconds", "run_experiment", "run_key", "run_specs", "sink_table",
           "stability", "summary", "validate_config"]
