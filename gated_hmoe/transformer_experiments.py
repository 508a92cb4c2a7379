"""Experiment E4: a small transformer on Bigram-Backcopy, ungated vs gated (cached sweeps).

Three measurements share one set of training runs (:func:`run_experiment`):

1. the attention-sink statistic (mean attention on the first token, BOS) per layer and
   head for every attention variant;
2. learning curves: held-out loss after a fixed step budget vs the number of training
   sequences;
3. learning-rate stability: loss spikes and divergence over a grid of peak learning rates.

Every run is keyed by its full configuration and cached as one JSON file under
``$GATED_HMOE_CACHE/transformer`` (default ``~/.cache/gated_hmoe``), written atomically,
so an interrupted sweep resumes where it stopped. Runs that differ only in their gate share
task, data, batch order and the initial values of the shared weights (paired comparison).
Command line: ``python -m gated_hmoe transformer --preset chapter --out results/e4``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from gated_hmoe import cache, checks
from gated_hmoe import transformer as tfm

#: Bump when the training code changes in a way that changes results (invalidates caches).
CACHE_VERSION = 1


class ExperimentConfig(NamedTuple):
    """One E4 sweep (hashable). Model: ``vocab``, ``seq_len``, ``d_model``, ``heads``,
    ``layers``; optimisation: ``steps``, ``batch``, ``peak_lr`` (the default), ``warmup``;
    data: ``triggers``, ``concentration``, ``pool``, ``n_eval``, ``trace_every``;
    the sweep: ``seeds`` (runs use seeds ``0..seeds-1``), ``sizes`` (training-set sizes of
    the learning curves; the largest is the default size), ``lrs`` (peak learning rates of
    the stability sweep), and which variants enter each measurement (``sink_variants``,
    ``curve_variants``, ``lr_variants``, names from :data:`gated_hmoe.transformer.VARIANTS`).
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
    tfm.make_train_config(steps=cfg.steps, batch=cfg.batch, peak_lr=cfg.peak_lr,
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
# Cache
# --------------------------------------------------------------------------------------

def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """``root`` or ``$GATED_HMOE_CACHE`` or ``~/.cache/gated_hmoe``, plus ``/transformer``."""
    return cache.cache_root(root) / "transformer"


def _model_fields(cfg: ExperimentConfig) -> dict:
    keep = ("vocab", "seq_len", "d_model", "heads", "layers", "steps", "batch", "warmup",
            "triggers", "concentration", "pool", "n_eval", "trace_every")
    return {k: getattr(cfg, k) for k in keep}


def run_key(cfg: ExperimentConfig, spec: RunSpec) -> str:
    """Hex digest identifying a run: every setting that changes its result."""
    payload = {"version": CACHE_VERSION, "config": _model_fields(cfg),
               "run": spec._asdict(), "jax": jax.__version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


_atomic_write_json = cache.write_json_atomic


def _load(path: Path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------

def _seed_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(20240605), seed)


def _compute_group(cfg: ExperimentConfig, variant: str, specs: list[RunSpec]) -> list[dict]:
    config = tfm.make_config(vocab=cfg.vocab, seq_len=cfg.seq_len, d_model=cfg.d_model,
                             heads=cfg.heads, layers=cfg.layers, variant=variant)
    tc = tfm.make_train_config(steps=cfg.steps, batch=cfg.batch, peak_lr=cfg.peak_lr,
                               warmup=cfg.warmup)
    dc = tfm.DataConfig(triggers=cfg.triggers, concentration=cfg.concentration,
                        pool=cfg.pool, n_eval=cfg.n_eval, trace_every=cfg.trace_every)
    keys = jax.numpy.stack([_seed_key(s.seed) for s in specs])
    res = tfm.train_runs(keys, np.array([s.n_train for s in specs]),
                         np.array([s.lr for s in specs]), config, tc, dc)
    res = jax.tree.map(np.asarray, res)
    return [{f: res[i][r].tolist() for i, f in enumerate(tfm.RunResult._fields)}
            for r in range(len(specs))]


def run_experiment(cfg: ExperimentConfig = PRESETS["chapter"], *,
                   cache: str | os.PathLike | None = None, progress: bool = True,
                   recompute: bool = False) -> "Results":
    """Run (or load from the cache) every run of ``cfg``; returns :class:`Results`.

    Runs are computed one variant at a time, all of that variant's seeds, sizes and
    learning rates in one ``jax.vmap``; each finished run is written to the cache at once,
    so an interrupted sweep resumes. ``progress`` shows a tqdm bar over runs.
    """
    validate_config(cfg)
    root = cache_dir(cache)
    specs = run_specs(cfg)
    runs: dict[RunSpec, dict] = {}
    todo: dict[str, list[RunSpec]] = {}
    for s in specs:
        hit = None if recompute else _load(root / f"{run_key(cfg, s)}.json")
        if hit is not None and hit.get("spec") == list(s):
            runs[s] = hit["result"]
        else:
            todo.setdefault(s.variant, []).append(s)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(specs), initial=len(runs), desc="E4 transformer runs",
               disable=not progress, unit="run")
    seconds = {}
    for variant, group in todo.items():
        bar.set_postfix_str(f"{variant} ({len(group)} runs)")
        t0 = time.perf_counter()
        results = _compute_group(cfg, variant, group)
        seconds[variant] = time.perf_counter() - t0
        for s, r in zip(group, results):
            _atomic_write_json(root / f"{run_key(cfg, s)}.json",
                               {"spec": list(s), "config": _model_fields(cfg), "result": r,
                                "group_seconds": seconds[variant], "group_size": len(group),
                                "jax": jax.__version__})
            runs[s] = r
        bar.update(len(group))
    bar.close()
    return Results(cfg, {s: runs[s] for s in specs}, seconds)


class Results(NamedTuple):
    """All runs of one sweep: ``cfg``, ``runs`` (:class:`RunSpec` -> dict of
    :class:`gated_hmoe.transformer.RunResult` fields as lists) and ``seconds`` (wall time of
    the groups computed in this call, by variant; empty when everything came from cache)."""

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


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------

def _color(v: str) -> str:
    from gated_hmoe.plots import GATE_COLORS
    return GATE_COLORS.get(v, "#555555")


def plot_sinks(res: Results, *, field: str = "sink"):
    """Bar chart: first-token attention share per layer (largest head), mean over seeds with
    the seed range as error bars and each seed as a dot; a dashed line marks uniform
    attention over the visible keys."""
    from gated_hmoe.plots import new_figure
    cfg = res.cfg
    fig, axes = new_figure(cfg.layers, width=4.2 * cfg.layers, height=3.4, squeeze=False)
    table = sink_table(res, field=field)
    n = cfg.seq_len
    uniform = np.mean([1.0 / (i + 1) for i in range(1, n)])
    for layer, ax in enumerate(axes[0]):
        for k, v in enumerate(cfg.sink_variants):
            vals = table[v]["layer_max"][:, layer]
            m = vals.mean()
            ax.bar(k, m, color=_color(v), yerr=[[m - vals.min()], [vals.max() - m]],
                   capsize=3)
            ax.plot(np.full(len(vals), k), vals, "k.", ms=3)
        ax.axhline(uniform, ls="--", color="0.4", lw=1, label="uniform attention")
        ax.set_xticks(range(len(cfg.sink_variants)), cfg.sink_variants, rotation=45)
        ax.set_ylabel("attention on BOS (largest head)")
        ax.set_title(f"layer {layer + 1}")
        ax.legend(loc="upper right")
    fig.suptitle("Attention sink: mean weight on the first token (BOS), queries 1..N-1"
                 if field == "sink" else f"Attention sink ({field})")
    fig.tight_layout()
    return fig


def plot_learning_curves(res: Results):
    """Held-out loss vs training-set size (log x), mean and seed range per variant, with
    the Bayes loss (the floor) dashed."""
    from gated_hmoe.plots import new_figure
    fig, ax = new_figure(width=6.0, height=4.0)
    sizes = np.array(res.cfg.sizes)
    for v, c in learning_curves(res).items():
        ax.plot(sizes, c.mean(0), "o-", color=_color(v), label=v)
        ax.fill_between(sizes, c.min(0), c.max(0), color=_color(v), alpha=0.2)
    bayes = float(np.mean(res.stack(res.cfg.curve_variants[0], "bayes_loss")))
    ax.axhline(bayes, ls="--", color="0.3", lw=1, label="Bayes loss (mean over seeds)")
    ax.set_xscale("log")
    ax.set_xlabel("training sequences n")
    ax.set_ylabel("held-out cross-entropy (nats)")
    ax.set_title(f"Learning curves after {res.cfg.steps} steps")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_stability(res: Results):
    """Final held-out loss vs peak learning rate per seed; unstable runs marked with x."""
    from gated_hmoe.plots import new_figure
    fig, ax = new_figure(width=6.0, height=4.0)
    lrs = np.array(res.cfg.lrs, float)
    for v, d in stability(res).items():
        for s in range(res.cfg.seeds):
            final = np.array([d["by_lr"][float(lr)]["final"][s] for lr in lrs])
            stable = np.array([d["by_lr"][float(lr)]["stable"][s] for lr in lrs])
            shown = np.where(np.isfinite(final), final, np.nan)
            ax.plot(lrs, shown, "-", color=_color(v), alpha=0.6,
                    label=v if s == 0 else None)
            ax.plot(lrs[stable], shown[stable], "o", color=_color(v))
            ax.plot(lrs[~stable], shown[~stable], "x", color=_color(v), ms=8)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final held-out loss (nats)")
    ax.set_title("Learning-rate sweep (o stable, x spike or divergence)")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_attention_maps(res: Results, variants=("MHSA", "G1"), *, seed: int = 0,
                        layer: int | None = None):
    """Heat maps of the attention weights on one held-out sequence: one row per variant,
    one column per (layer, head) (or per head of ``layer``); copy positions marked."""
    from gated_hmoe.plots import new_figure
    cfg = res.cfg
    layers = range(cfg.layers) if layer is None else [layer]
    cols = [(ly, h) for ly in layers for h in range(cfg.heads)]
    fig, axes = new_figure(len(cols), len(variants), width=2.6 * len(cols),
                           height=2.7 * len(variants), squeeze=False)
    for r, v in enumerate(variants):
        maps = res.get(v, seed, field="maps")
        for c, (ly, h) in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(maps[ly, h], vmin=0, vmax=1, cmap="viridis")
            ax.grid(False)
            ax.set_title(f"{v}: layer {ly + 1}, head {h + 1}", fontsize=9)
            ax.set_xlabel("key position j", fontsize=8)
            if c == 0:
                ax.set_ylabel("query position i", fontsize=8)
    fig.tight_layout()
    return fig


def plot_sink_trace(res: Results, variants=("MHSA", "G1")):
    """First-token share during training, one panel per layer: at each traced step the
    largest share among the layer's heads; line = mean over seeds, band = seed range."""
    from gated_hmoe.plots import new_figure
    cfg = res.cfg
    fig, axes = new_figure(cfg.layers, width=4.2 * cfg.layers, height=3.4, squeeze=False)
    steps = np.arange(cfg.steps // cfg.trace_every + 1) * cfg.trace_every
    steps[-1] = cfg.steps
    for layer, ax in enumerate(axes[0]):
        for v in variants:
            tr = res.stack(v, "sink_trace")[:, :, layer, :].max(axis=-1)   # (S, T)
            ax.plot(steps, tr.mean(0), "o-", color=_color(v), label=v)
            ax.fill_between(steps, tr.min(0), tr.max(0), color=_color(v), alpha=0.2)
        ax.set_xlabel("training step")
        ax.set_ylabel("attention on BOS (largest head)")
        ax.set_title(f"layer {layer + 1}")
        ax.legend()
    fig.tight_layout()
    return fig


def explore_widget(res: Results):
    """An ipywidgets control (variant, layer, seed) redrawing the attention maps of that
    layer and the per-head first-token shares of that run."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from gated_hmoe.plots import new_figure

    cfg = res.cfg
    out = widgets.Output()
    variant = widgets.Dropdown(options=list(cfg.sink_variants), value=cfg.sink_variants[0],
                               description="variant")
    layer = widgets.Dropdown(options=[(str(i + 1), i) for i in range(cfg.layers)], value=0,
                             description="layer")
    seed = widgets.Dropdown(options=list(range(cfg.seeds)), value=0, description="seed")

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            v, ly, s = variant.value, layer.value, seed.value
            maps = res.get(v, s, field="maps")
            other = res.get(v, s, field="sink_other")
            copy = res.get(v, s, field="sink_copy")
            fig, axes = new_figure(cfg.heads + 1, width=2.8 * (cfg.heads + 1), height=3.0)
            for h in range(cfg.heads):
                axes[h].imshow(maps[ly, h], vmin=0, vmax=1)
                axes[h].grid(False)
                axes[h].set_title(f"{v} L{ly + 1} head {h + 1}", fontsize=9)
                axes[h].set_xlabel("key j", fontsize=8)
            x = np.arange(cfg.heads)
            axes[-1].bar(x - 0.2, other[ly], 0.4, color=_color(v), label="non-copy")
            axes[-1].bar(x + 0.2, copy[ly], 0.4, color="0.6", label="copy")
            axes[-1].set_xticks(x, [f"h{h + 1}" for h in x])
            axes[-1].set_ylim(0, 1)
            axes[-1].set_title("attention on BOS", fontsize=9)
            axes[-1].legend()
            fig.tight_layout()
            plt.show()

    for w in (variant, layer, seed):
        w.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([variant, layer, seed]), out])


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------

def _cli(args: argparse.Namespace) -> int:
    cfg = PRESETS[args.preset]
    overrides = {k: getattr(args, k) for k in ("seeds", "steps", "d_model", "layers", "heads")
                 if getattr(args, k) is not None}
    if args.sizes:
        overrides["sizes"] = tuple(args.sizes)
        overrides["pool"] = max(cfg.pool, max(args.sizes))
    cfg = validate_config(cfg._replace(**overrides))
    res = run_experiment(cfg, cache=args.cache, progress=not args.no_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summ = summary(res)
    summ["seconds_this_call"] = res.seconds
    _atomic_write_json(out / "transformer_results.json", summ)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for name, fn in (("sinks", plot_sinks), ("learning_curves", plot_learning_curves),
                     ("stability", plot_stability), ("attention_maps", plot_attention_maps),
                     ("sink_trace", plot_sink_trace)):
        if name == "attention_maps" and not {"MHSA", "G1"} <= set(cfg.sink_variants):
            continue
        if name == "sink_trace" and not {"MHSA", "G1"} <= set(cfg.sink_variants):
            continue
        fig = fn(res)
        fig.savefig(out / f"transformer_{name}.png")
        plt.close(fig)
    print(f"wrote {out / 'transformer_results.json'} and figures "
          f"({len(res.runs)} runs, {len(res.seconds)} variant groups computed)")
    return 0


def register_cli(subparsers) -> None:
    """Add the ``transformer`` sub-command to ``python -m gated_hmoe``."""
    p = subparsers.add_parser(
        "transformer", help="E4: small transformer on Bigram-Backcopy, sinks and learning curves",
        description="Train the E4 sweep (cached per run, resumable) and write "
                    "transformer_results.json and figures to --out.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="chapter")
    p.add_argument("--out", default="results/transformer", help="output folder")
    p.add_argument("--cache", default=None, help="cache root (default $GATED_HMOE_CACHE)")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--d-model", dest="d_model", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="training-set sizes of the learning curves")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cli)
