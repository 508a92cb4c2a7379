"""The chapters' Explore widgets: built from cached sweeps, and their live-fit buttons run."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from gated_hmoe import attention_fit as af, experiments, quadratic_book as qb, rates_book as rb  # noqa: E402

pytest.importorskip("ipywidgets")


def test_rate_explorer_live_fit_button(capsys):
    box = rb.rate_explorer({}, {})          # no cached sweeps: it says so instead of failing
    assert "no cached sweep" in capsys.readouterr().out
    box.live_button.click()
    out = capsys.readouterr().out
    assert "D1 per replicate" in out and "not converged" in out


def test_quadratic_explorer_redraws_and_live_fit_button(tmp_path, capsys):
    cfg = qb.sweep_config("quadratic-monomial", "silu", 0.1, replicates=2, max_iter=20)
    res = experiments.run_sweep(cfg, cache_dir=tmp_path, progress=False)
    box = qb.explorer({("quadratic-monomial", "silu", 0.1): res})
    box.live_button.click()
    out = capsys.readouterr().out
    assert "worst over-fitted atom error per replicate" in out


def test_attention_explorer_live_fit_button(tmp_path, capsys):
    cfg = af.FitSweepConfig(position="ridge", n=30, points=3, log10_x_min=11, log10_x_max=13,
                            replicates=2, max_iter=20)
    res = af.run_sweep(cfg, cache_dir=tmp_path)
    box = af.explore_widget({("ridge", 0.1): res})
    box.live_button.click()
    out = capsys.readouterr().out
    assert out.count("worst over-fitted error=") == 4
