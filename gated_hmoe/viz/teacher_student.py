"""Figures of the teacher-student sweep (E5): the picked student's head loss and excess risk
against the number of training sequences.

Functions take the result dict of :func:`gated_hmoe.experiments.e5_teacher_student.run`
(its ``grid``, ``picked`` and ``slopes``) and return matplotlib objects; nothing here fits
anything.
"""

from __future__ import annotations

import numpy as np

from gated_hmoe.viz.style import SERIES_COLORS, new_figure

#: What each panel shows: result key, axis label.
PANELS: tuple[tuple[str, str], ...] = (
    ("head_loss", "head-level Voronoi loss to the teacher"),
    ("excess_risk", "test excess risk / noise variance"))


def sweep_panels(result: dict):
    """Two panels: the head loss and the excess risk of the best-training-loss student per
    data set against ``n`` (one thin line per data seed, the median thick), each with the
    slope of its median and the bootstrap interval stored in ``result["slopes"]``."""
    fig, axes = new_figure(2, width=11.0, height=4.2)
    n = np.asarray(result["grid"], float)
    config = result["config"]
    for ax, (key, label) in zip(axes, PANELS):
        values = np.asarray(result["picked"][key], float)        # (points, seeds)
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


__all__ = ["PANELS", "sweep_panels"]
