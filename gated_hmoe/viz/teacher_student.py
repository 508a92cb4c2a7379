"""Figures of the teacher-student sweeps (E5): the picked students' head loss, excess risk,
split error and surplus-head fate against the number of training sequences.

:func:`sweep_panels` takes one sweep's result dict (what
:func:`gated_hmoe.experiments.e5_teacher_student.run` returns); the other functions take the
plain summaries of :mod:`gated_hmoe.experiments.e5_record` (``series``, ``fate_table``,
``point_view``); nothing here fits anything: slopes and intervals in legends are the
record's.
"""

from __future__ import annotations

import numpy as np

from gated_hmoe.viz.quadratic import reference_line
from gated_hmoe.viz.style import SERIES_COLORS, SERIES_MARKERS, new_figure, position_color

#: What each panel shows: result key, axis label.
PANELS: tuple[tuple[str, str], ...] = (
    ("head_loss", "head-level Voronoi loss to the teacher"),
    ("excess_risk", "test excess risk / noise variance"))
#: Colours of the surplus head's fates.
FATE_COLORS: dict[str, str] = {"none": "#999999", "dead": "#0072B2", "split": "#E69F00",
                               "other": "#CC79A7"}
#: Line styles of the student sizes.
HEAD_STYLES: dict[int, dict] = {2: {"ls": "--", "marker": "s", "mfc": "white"},
                                3: {"ls": "-", "marker": "o"}}


def sweep_panels(result: dict):
    """Two panels: the head loss and the excess risk (in units of the noise variance) of the
    best-training-loss student per data set against ``n`` (one thin line per data seed, the
    median thick), each with the slope of its median and the bootstrap interval stored in
    ``result["slopes"]``."""
    fig, axes = new_figure(2, width=11.0, height=4.2)
    n = np.asarray(result["grid"], float)
    config = result["config"]
    for ax, (key, label) in zip(axes, PANELS):
        values = np.asarray(result["picked"][key], float)        # (points, seeds)
        if key == "excess_risk":
            values = values / result["noise_variance"]
        for s in range(values.shape[1]):
            ax.plot(n, values[:, s], "-", color=SERIES_COLORS[0], alpha=0.25, lw=0.8,
                    label="data seeds" if s == 0 else None)
        s = result["slopes"].get(key)
        text = "no slope (one grid point)" if s is None else s["label"]
        ax.plot(n, np.median(values, axis=1), "o-", color=SERIES_COLORS[0], lw=2,
                label=f"median: {text}")
        ax.set(xscale="log", yscale="log", xlabel="training sequences n", ylabel=label,
               title=f"{config['position']}, H = {config['heads']}, ν = {config['noise']:g}")
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig, axes


def _slope_text(s: dict | None) -> str:
    return "no slope" if s is None else s["label"]


def rate_grid(series: dict, *, ylabel: str, theory: float, what: str = "declared"):
    """One panel per position of ``series`` (``{position: {H: {"n", "values" (points,
    seeds), "slope"}}}``, as :func:`gated_hmoe.experiments.e5_record.series` returns it): the
    median over data sets (thin lines: each data set) against ``n`` for the exactly specified
    (``H = 2``, dashed, grey) and the over-specified (``H = 3``, solid) student, with the
    slopes in the legend and the ``theory`` slope as a reference line."""
    fig, axes = new_figure(len(series), width=3.4 * len(series), height=3.8, sharey=True,
                           squeeze=False)
    for ax, (p, by_heads) in zip(axes[0], series.items()):
        first = None
        for h, sw in sorted(by_heads.items()):
            n = np.asarray(sw["n"], float)
            values = np.asarray(sw["values"], float)
            colour = position_color(p) if h == 3 else "0.35"
            ax.plot(n, values, color=colour, alpha=0.2, lw=0.7)
            med = np.median(np.where(np.isfinite(values), values, np.inf), axis=1)
            first = first or (n[0], float(med[0]))
            ax.plot(n, med, color=colour, **HEAD_STYLES.get(h, {}),
                    label=f"H = {h}: {_slope_text(sw['slope'])}")
        if first is not None:
            reference_line(ax, n, theory, first, what=what)
        ax.set(xscale="log", yscale="log", xlabel="training sequences n", title=p)
        ax.legend(loc="lower left", fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    fig.tight_layout()
    return fig, axes


def fate_bars(table: dict):
    """One panel per position of ``table`` (``{position: {"n", "shares": {fate: share per
    n}}}``, :func:`gated_hmoe.experiments.e5_record.fate_table`): the surplus head's fate of
    the picked students at each ``n`` as stacked shares."""
    fig, axes = new_figure(len(table), width=3.4 * len(table), height=3.6, sharey=True,
                           squeeze=False)
    handles = {}
    for ax, (p, row) in zip(axes[0], table.items()):
        x = np.arange(len(row["n"]))
        bottom = np.zeros(len(x))
        for fate, share in row["shares"].items():
            share = np.asarray(share, float)
            if not share.any():
                continue
            handles[fate] = ax.bar(x, share, bottom=bottom, color=FATE_COLORS[fate],
                                   label=fate, width=0.7)
            bottom += share
        ax.set_xticks(x, [str(v) for v in row["n"]], rotation=45)
        ax.set(xlabel="training sequences n", title=p, ylim=(0, 1.05))
    axes[0][0].set_ylabel("share of picked students")
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.legend(list(handles.values()), [f"surplus head {k}" for k in handles],
               loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
    return fig, axes


def split_panel(series: dict, *, theory: float):
    """The split error of the picks whose surplus head splits at the largest ``n`` (median
    over those data sets, their count in the legend) per position of ``series`` (the
    ``H = 3`` entries of :func:`gated_hmoe.experiments.e5_record.series` with
    ``fate="split"``), with the ``theory`` slope of a ridge split as a reference."""
    fig, ax = new_figure(width=6.4, height=4.2)
    anchor, n = None, None
    for k, (p, by_heads) in enumerate(series.items()):
        sw = by_heads.get(3)
        if sw is None or np.shape(sw["values"])[1] == 0:
            continue
        values = np.asarray(sw["values"], float)
        n = np.asarray(sw["n"], float)
        med = np.median(np.where(np.isfinite(values), values, np.inf), axis=1)
        shown = np.where(np.isfinite(med), med, np.nan)
        if np.all(np.isnan(shown)):
            continue
        anchor = anchor or (n[0], float(np.nanmax(shown)))
        ax.plot(n, shown, color=position_color(p), marker=SERIES_MARKERS[k],
                label=f"{p} ({values.shape[1]} split): {_slope_text(sw['slope'])}")
    if anchor is not None:
        reference_line(ax, n, theory, anchor, what="ridge split")
    ax.set(xscale="log", yscale="log", xlabel="training sequences n",
           ylabel="split error of the pair (picks that split)")
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig, ax


def heads_view(view: dict):
    """What the students found at one grid point (``view``:
    :func:`gated_hmoe.experiments.e5_record.point_view`): (a) every head's mass
    (value-output map norm) of the picked student per data set against the teacher's heads'
    masses, coloured by the pick's fate; (b) the head loss of every initialisation, the pick
    marked."""
    fig, (a, b) = new_figure(2, width=10.0, height=3.8)
    shown = set()
    for s, (i, fate, masses) in enumerate(zip(view["pick"], view["fate"], view["masses"])):
        a.scatter([s] * len(masses), masses, color=FATE_COLORS[fate], s=28,
                  label=None if fate in shown else f"pick's fate: {fate}")
        shown.add(fate)
        losses = np.asarray(view["head_loss"][s], float)
        b.scatter([s] * len(losses), losses, color="0.6", s=14,
                  label="initialisations" if s == 0 else None)
        b.scatter([s], [losses[i]], color=FATE_COLORS[fate], marker="*", s=90,
                  label="the pick (lowest training loss)" if s == 0 else None)
    for j, m in enumerate(view["teacher_masses"]):
        a.axhline(m, color="0.3", lw=0.8, ls=":",
                  label="teacher heads' masses" if j == 0 else None)
    for ax in (a, b):
        ax.set_xticks(range(len(view["seeds"])), [str(v) for v in view["seeds"]])
        ax.set_xlabel("data seed")
    a.set(ylabel="head mass ‖W_V W_O‖ (picked student)", title=view["title"])
    b.set(yscale="log", ylabel="head-level Voronoi loss", title="every initialisation")
    a.legend(loc="upper right", fontsize=7)
    b.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return fig


__all__ = ["FATE_COLORS", "HEAD_STYLES", "PANELS", "fate_bars", "heads_view", "rate_grid",
           "split_panel", "sweep_panels"]
