"""The chapters' Explore widgets: built by the one explorer builder from cached sweeps; their
live-fit buttons run the experiment's callback (the viz layer never computes)."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from gated_hmoe.experiments import e1_rates, e2_attention, e3_quadratic  # noqa: E402
from gated_hmoe.viz import attention as va, quadratic as vq, rates as vr  # noqa: E402

pytest.importorskip("ipywidgets")


def test_rate_explorer_live_fit_button(capsys):
    box = vr.rate_explorer({}, {}, live_fit=e1_rates.live_fit)   # no cached sweeps: it says so
    assert "no cached sweep" in capsys.readouterr().out
    box.live_button.click()
    out = capsys.readouterr().out
    assert "D1 per replicate" in out and "not converged" in out


def test_quadratic_explorer_redraws_and_live_fit_button(tmp_path, capsys):
    cfg = e3_quadratic.sweep_config("quadratic-monomial", "silu", 0.1, replicates=2, max_iter=20)
    res = e1_rates.run_sweep(cfg, cache_dir=tmp_path, progress=False)
    box = vq.explorer({("quadratic-monomial", "silu", 0.1): res}, live_fit=e1_rates.live_fit)
    box.live_button.click()
    out = capsys.readouterr().out
    assert "worst over-fitted atom error" in out


def test_attention_explorer_live_fit_button(tmp_path, capsys):
    cfg = e2_attention.FitSweepConfig(position="ridge", n=30, points=3, log10_x_min=11,
                                      log10_x_max=13, replicates=2, max_iter=20)
    res = e2_attention.run_sweep(cfg, cache_dir=tmp_path)
    box = va.fit_explorer({("ridge", 0.1): res}, live_fit=e2_attention.live_fit)
    box.live_button.click()
    out = capsys.readouterr().out
    assert out.count("worst over-fitted error=") == 4


def test_explorer_builder_redraws_on_change_and_rejects_bad_draws(capsys):
    from gated_hmoe.viz import explorer as ex

    seen = []

    def draw(a, b):
        seen.append((a, b))
        return f"drawn {a} {b}"

    box = ex.explorer({"a": [1, 2], "b": [("one", "x"), ("two", "y")]}, draw)
    assert seen == [(1, "x")] and box.live_button is None
    box.children[0].children[1].value = "y"
    assert seen[-1] == (1, "y") and "drawn 1 y" in capsys.readouterr().out
    with pytest.raises(TypeError, match="draw must be callable"):
        ex.explorer({"a": [1]}, "not a function")
    with pytest.raises(ValueError, match="at least one option"):
        ex.explorer({"a": []}, draw)
    with pytest.raises(TypeError, match="draw/live must return"):
        ex.explorer({"a": [1]}, lambda a: 42)
