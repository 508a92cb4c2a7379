"""Figures of experiment E4 (the small transformer): sinks, learning curves, stability,
attention maps, and an explorer of the maps.

Figures draw what is already computed. :func:`plot_sinks`, :func:`plot_learning_curves`
and :func:`plot_stability` take the summary tables of
:mod:`gated_hmoe.experiments.e4_transformer` (``sink_table``, ``learning_curves``,
``stability``); :func:`plot_attention_maps`, :func:`plot_sink_trace` and
:func:`maps_explorer` take its ``Results`` and read only ``res.cfg``, ``res.get`` and
``res.stack``. Every function returns matplotlib objects (or a widget); colours are the
book's :data:`gated_hmoe.viz.style.GATE_COLORS`.
"""

from __future__ import annotations

import numpy as np

from gated_hmoe.viz import explorer as ex
from gated_hmoe.viz.style import GATE_COLORS, new_figure


def plot_sinks(table: dict, *, seq_len: int, field: str = "sink"):
    """Bar chart: first-token attention share per layer (largest head), mean over seeds with
    the seed range as error bars and each seed as a dot; a dashed line marks uniform
    attention over the visible keys of a sequence of ``seq_len`` tokens.

    ``table``: ``sink_table(res, field=field)``, variant -> ``{"layer_max": (seeds, L), ...}``.
    """
    variants = list(table)
    layers = table[variants[0]]["layer_max"].shape[1]
    fig, axes = new_figure(layers, width=4.2 * layers, height=3.4, squeeze=False)
    uniform = np.mean([1.0 / (i + 1) for i in range(1, seq_len)])
    for layer, ax in enumerate(axes[0]):
        for k, v in enumerate(variants):
            vals = table[v]["layer_max"][:, layer]
            m = vals.mean()
            ax.bar(k, m, color=GATE_COLORS[v], yerr=[[m - vals.min()], [vals.max() - m]],
                   capsize=3)
            ax.plot(np.full(len(vals), k), vals, "k.", ms=3)
        ax.axhline(uniform, ls="--", color="0.4", lw=1, label="uniform attention")
        ax.set_xticks(range(len(variants)), variants, rotation=45, ha="right",
                      rotation_mode="anchor")
        ax.set_xlabel("attention variant")
        ax.set_ylabel("attention on BOS (largest head)")
        ax.set_title(f"layer {layer + 1}")
        ax.legend(loc="upper right")
    fig.suptitle("Attention sink: mean weight on the first token (BOS), queries 1..N-1"
                 if field == "sink" else f"Attention sink ({field})")
    fig.tight_layout()
    return fig


def plot_learning_curves(curves: dict, sizes, bayes, *, steps: int):
    """Held-out loss vs training-set size (log x), mean and seed range per variant, with
    the Bayes loss (the floor, mean over seeds) dashed.

    ``curves``: ``learning_curves(res)``, variant -> ``(seeds, len(sizes))``; ``bayes``:
    the Bayes loss of each seed; ``steps``: the training budget (for the title).
    """
    fig, ax = new_figure(width=6.0, height=4.0)
    sizes = np.array(sizes)
    for v, c in curves.items():
        ax.plot(sizes, c.mean(0), "o-", color=GATE_COLORS[v], label=v)
        ax.fill_between(sizes, c.min(0), c.max(0), color=GATE_COLORS[v], alpha=0.2)
    ax.axhline(float(np.mean(bayes)), ls="--", color="0.3", lw=1,
               label="Bayes loss (mean over seeds)")
    ax.set_xscale("log")
    ax.set_xlabel("training sequences n")
    ax.set_ylabel("held-out cross-entropy (nats)")
    ax.set_title(f"Learning curves after {steps} steps")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_stability(stab: dict):
    """Final held-out loss vs peak learning rate per seed; unstable runs marked with x.

    ``stab``: ``stability(res)``, variant -> ``{"by_lr": {lr: {"final", "stable", ...}},
    "largest_stable": (seeds,)}``.
    """
    fig, ax = new_figure(width=6.0, height=4.0)
    for v, d in stab.items():
        lrs = np.array(list(d["by_lr"]), float)
        for s in range(len(d["largest_stable"])):
            final = np.array([d["by_lr"][float(lr)]["final"][s] for lr in lrs])
            stable = np.array([d["by_lr"][float(lr)]["stable"][s] for lr in lrs])
            shown = np.where(np.isfinite(final), final, np.nan)
            ax.plot(lrs, shown, "-", color=GATE_COLORS[v], alpha=0.6,
                    label=v if s == 0 else None)
            ax.plot(lrs[stable], shown[stable], "o", color=GATE_COLORS[v])
            ax.plot(lrs[~stable], shown[~stable], "x", color=GATE_COLORS[v], ms=8)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final held-out loss (nats)")
    ax.set_title("Learning-rate sweep (o stable, x spike or divergence)")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_attention_maps(res, variants=("MHSA", "G1"), *, seed: int = 0,
                        layer: int | None = None, lr: float | None = None):
    """Heat maps of the attention weights on one held-out sequence of the E4 results
    ``res``: one row per variant, one column per (layer, head) (or per head of ``layer``),
    for the runs at peak learning rate ``lr`` (default: the sweep's default learning rate;
    with another ``lr`` the variants must be among ``res.cfg.lr_variants``)."""
    cfg = res.cfg
    layers = range(cfg.layers) if layer is None else [layer]
    cols = [(ly, h) for ly in layers for h in range(cfg.heads)]
    fig, axes = new_figure(len(cols), len(variants), width=2.6 * len(cols),
                           height=2.7 * len(variants), squeeze=False)
    image = None
    for r, v in enumerate(variants):
        maps = res.get(v, seed, lr=lr, field="maps")
        for c, (ly, h) in enumerate(cols):
            ax = axes[r][c]
            image = ax.imshow(maps[ly, h], vmin=0, vmax=1, cmap="viridis")
            ax.grid(False)
            ax.set_title(f"{v}: layer {ly + 1}, head {h + 1}", fontsize=9)
            if r == len(variants) - 1:
                ax.set_xlabel("key position j", fontsize=8)
            else:                                   # the column shares its key axis
                ax.tick_params(labelbottom=False)
            if c == 0:
                ax.set_ylabel("query position i", fontsize=8)
            else:                                   # the row shares its query axis
                ax.tick_params(labelleft=False)
    shown_lr = cfg.peak_lr if lr is None else lr
    fig.suptitle(f"Attention weights, seed {seed}, peak learning rate {shown_lr:g}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))                 # room for the suptitle
    _shared_colorbar(fig, axes, image)
    return fig


def _shared_colorbar(fig, axes, image) -> None:
    """One colour bar for heat maps that share the scale [0, 1] (every image is tied to it)."""
    bar = fig.colorbar(image, ax=np.ravel(axes).tolist(), shrink=0.6, pad=0.02, aspect=30)
    bar.set_label("attention weight")
    for ax in np.ravel(axes):
        for im in ax.images:
            im.colorbar = bar


def plot_sink_trace(res, variants=("MHSA", "G1")):
    """First-token share during training (E4 results ``res``), one panel per layer: at each
    traced step the largest share among the layer's heads; line = mean over seeds, band =
    seed range."""
    cfg = res.cfg
    fig, axes = new_figure(cfg.layers, width=4.2 * cfg.layers, height=3.4, squeeze=False)
    steps = np.arange(cfg.steps // cfg.trace_every + 1) * cfg.trace_every
    steps[-1] = cfg.steps
    for layer, ax in enumerate(axes[0]):
        for v in variants:
            tr = res.stack(v, "sink_trace")[:, :, layer, :].max(axis=-1)   # (S, T)
            ax.plot(steps, tr.mean(0), "o-", color=GATE_COLORS[v], label=v)
            ax.fill_between(steps, tr.min(0), tr.max(0), color=GATE_COLORS[v], alpha=0.2)
        ax.set_xlabel("training step")
        ax.set_ylabel("attention on BOS (largest head)")
        ax.set_title(f"layer {layer + 1}")
        ax.legend()
    fig.tight_layout()
    return fig


def run_maps(res, variant: str, layer: int, seed: int):
    """One run of the E4 results ``res``: the attention maps of every head of ``layer`` and
    a bar chart of the heads' first-token shares on ordinary and on copy queries."""
    cfg = res.cfg
    maps = res.get(variant, seed, field="maps")
    other = res.get(variant, seed, field="sink_other")
    copy = res.get(variant, seed, field="sink_copy")
    fig, axes = new_figure(cfg.heads + 1, width=2.8 * (cfg.heads + 1), height=3.0)
    image = None
    for h in range(cfg.heads):
        image = axes[h].imshow(maps[layer, h], vmin=0, vmax=1)
        axes[h].grid(False)
        axes[h].set_title(f"{variant} L{layer + 1} head {h + 1}", fontsize=9)
        axes[h].set_xlabel("key position j", fontsize=8)
        axes[h].set_ylabel("query position i", fontsize=8)
    x = np.arange(cfg.heads)
    axes[-1].bar(x - 0.2, other[layer], 0.4, color=GATE_COLORS[variant], label="non-copy")
    axes[-1].bar(x + 0.2, copy[layer], 0.4, color="0.6", label="copy")
    axes[-1].set_xticks(x, [f"h{h + 1}" for h in x])
    axes[-1].set_ylim(0, 1)
    axes[-1].set_title("attention on BOS", fontsize=9)
    axes[-1].set_xlabel("head")
    axes[-1].set_ylabel("attention weight on BOS")
    axes[-1].legend()
    fig.tight_layout()
    _shared_colorbar(fig, axes[:-1], image)
    return fig


def maps_explorer(res):
    """Explorer over the E4 results ``res`` (cached runs only): variant, layer and seed
    redraw :func:`run_maps`."""
    cfg = res.cfg
    return ex.explorer({"variant": list(cfg.sink_variants),
                        "layer": [(str(i + 1), i) for i in range(cfg.layers)],
                        "seed": list(range(cfg.seeds))},
                       lambda variant, layer, seed: run_maps(res, variant, layer, seed))


__all__ = ["maps_explorer", "plot_attention_maps", "plot_learning_curves", "plot_sink_trace",
           "plot_sinks", "plot_stability", "run_maps"]
