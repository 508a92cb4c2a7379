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
    # every combination once for the static frames, then the widget's first drawing
    assert seen == [(1, "x"), (1, "y"), (2, "x"), (2, "y"), (1, "x")]
    assert box.live_button is None
    seen.clear()
    box = ex.explorer({"a": [1, 2], "b": [("one", "x"), ("two", "y")]}, draw, static=False)
    assert seen == [(1, "x")] and box.static_html is None
    box.children[0].children[1].value = "y"
    assert seen[-1] == (1, "y") and "drawn 1 y" in capsys.readouterr().out
    with pytest.raises(TypeError, match="draw must be callable"):
        ex.explorer({"a": [1]}, "not a function")
    with pytest.raises(ValueError, match="at least one option"):
        ex.explorer({"a": []}, draw)
    with pytest.raises(TypeError, match="draw/live must return"):
        ex.explorer({"a": [1]}, lambda a: 42)


def _static_data(page: str) -> dict:
    """The JSON payload of the (first) static explorer in ``page``."""
    import json
    import re

    m = re.search(r'<script type="application/json" class="gh-data">(.*?)</script>', page, re.S)
    assert m, "no gh-data payload"
    return json.loads(m.group(1).replace("<\\/", "</"))


def test_static_explorer_has_a_frame_for_every_combination():
    import re

    from gated_hmoe.viz import explorer as ex
    from gated_hmoe.viz.style import new_figure

    drawn = []

    def draw(kind, level, shade):
        drawn.append((kind, level, shade))
        if kind == "note":
            return f"only text for {level}</b>"
        fig, ax = new_figure()
        ax.plot([0, 1], [0, level * shade])
        return [fig, "a note"] if kind == "both" else fig

    controls = {"kind": ["plot", "both", "note"], "level": [1, 2], "shade": [("dark", 3),
                                                                         ("light", 5)]}
    page = ex.static_html(controls, draw, value={"level": 2, "n": 100}, live_controls=("n",))
    data = _static_data(page)
    # one drawing per combination, in the order of the controls (last control fastest)
    assert len(drawn) == 3 * 2 * 2 and drawn[:3] == [("plot", 1, 3), ("plot", 1, 5),
                                                      ("plot", 2, 3)]
    assert data["controls"] == ["kind", "level", "shade"]
    assert sorted(data["keys"]) == sorted(f"{i}-{j}-{k}" for i in range(3) for j in range(2)
                                          for k in range(2))
    # plots and plot+note differ per (level, shade) except equal products; text-only frames
    # have no picture and their (escaped-by-JSON) text
    for key, idx in data["keys"].items():
        frame = data["frames"][idx]
        kind = int(key[0])
        assert (frame["image"] >= 0) == (kind < 2)
        assert ("a note" in frame["note"]) == (kind == 1)
        if kind == 2:
            assert frame["note"].startswith("only text for ")
    # stored once: a plot and the same plot with a note share their image; level x shade
    # gives 3, 5, 6, 10: four distinct pictures
    assert len(data["images"]) == 4 and len(data["frames"]) == 4 + 4 + 2
    assert all(uri.startswith("data:image/png;base64,") for uri in data["images"])
    plot, both = data["keys"]["0-1-1"], data["keys"]["1-1-1"]
    assert data["frames"][plot]["image"] == data["frames"][both]["image"] and plot != both
    # every control is a select with its options in order; the start selection is value's
    assert page.count('class="gh-control"') == 3 and page.count('class="gh-frame"') == 1
    assert page.count('class="gh-explorer"') == 1 and " id=" not in page
    for name, labels in (("kind", ["plot", "both", "note"]), ("level", ["1", "2"]),
                         ("shade", ["dark", "light"])):
        sel = re.search(rf'<select class="gh-control" name="{name}">(.*?)</select>', page).group(1)
        assert re.findall(r'<option value="(\d+)"(?: selected)?>([^<]*)</option>', sel) == \
            [(str(i), lab) for i, lab in enumerate(labels)]
    assert re.search(r'<img class="gh-frame" data-key="0-1-0" src="data:image/png', page)
    # a string cannot close the payload's script element early
    assert "only text for 1<\\/b>" in page


def test_static_explorer_rejects_bad_arguments():
    from gated_hmoe.viz import explorer as ex

    def draw(a, b):
        return "x"

    with pytest.raises(ValueError, match="max_frames=5"):
        ex.static_html({"a": [1, 2, 3], "b": [1, 2]}, draw, max_frames=5)
    with pytest.raises(ValueError, match="max_frames"):
        ex.explorer({"a": [1, 2, 3], "b": [1, 2]}, draw, max_frames=5)
    with pytest.raises(ValueError, match=r"value\['a'\]"):
        ex.static_html({"a": [1, 2], "b": [1]}, draw, value={"a": 7})
    with pytest.raises(ValueError, match="value names no control"):
        ex.static_html({"a": [1, 2], "b": [1]}, draw, value={"c": 7})
    with pytest.raises(ValueError, match="controls must be"):
        ex.static_html({}, draw)
    with pytest.raises(ValueError, match="at least one option"):
        ex.static_html({"a": [], "b": [1]}, draw)
    with pytest.raises(TypeError, match="max_frames"):
        ex.static_html({"a": [1], "b": [1]}, draw, max_frames=2.5)
    with pytest.raises(ValueError, match="colors"):
        ex.palette_png(b"", colors=300)


def test_explorer_display_bundle_carries_the_static_explorer():
    from gated_hmoe.viz import explorer as ex

    box = ex.explorer({"a": [1, 2]}, lambda a: f"value {a}", live=lambda a: "ran")
    bundle = box._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/html"] == box.static_html and 'class="gh-explorer"' in box.static_html
    assert "live fit needs a running kernel" in box.static_html
    assert _static_data(box.static_html)["frames"] == [
        {"image": -1, "note": "value 1"}, {"image": -1, "note": "value 2"}]
    assert 'class="gh-frame" data-key="0" src="data:image/png;base64,' in box.static_html


def test_static_frame_keys_follow_the_controls_order():
    from gated_hmoe.viz import explorer as ex

    controls = {"b": [("B0", "p"), ("B1", "q"), ("B2", "r")], "a": [10, 20]}
    data = _static_data(ex.static_html(controls, lambda a, b: f"{b}{a}"))
    # the browser joins the selected option indices in the order of the controls
    for i, (_, b) in enumerate(controls["b"]):
        for j, a in enumerate(controls["a"]):
            assert data["frames"][data["keys"][f"{i}-{j}"]]["note"] == f"{b}{a}"


def test_frame_png_stacks_figures_and_uses_a_palette():
    import io

    from PIL import Image

    from gated_hmoe.viz import explorer as ex
    from gated_hmoe.viz.style import new_figure

    def figs():
        return [new_figure(width=4, height=2)[0], new_figure(width=3, height=1)[0]]

    one = Image.open(io.BytesIO(ex.frame_png(figs()[:1], dpi=50)))
    both = Image.open(io.BytesIO(ex.frame_png(figs(), dpi=50)))
    full = Image.open(io.BytesIO(ex.frame_png(figs(), dpi=50, colors=None)))
    assert one.mode == "P" and both.mode == "P" and full.mode == "RGB"
    assert both.width == one.width and both.height > one.height and full.size == both.size


def test_rate_explorer_opens_on_a_cached_sweep():
    """The opening selection has a cached sweep (the chapter's noise sweep holds linear
    experts only; opening on SiLU drew an empty panel)."""
    noise = {("linear", 0.3): object(), ("linear", 0.1): object()}
    n = {("silu", 2): object(), ("silu", 3): object()}
    experts = ["linear", "sigmoid", "silu"]
    assert vr._first_cached(n, noise, experts) == {"expert": "linear", "fit": 3, "spread": 0.1,
                                                   "sweep": "noise"}
    assert vr._first_cached(n, {}, experts) == {"expert": "silu", "fit": 3, "spread": 0.1,
                                                "sweep": "n"}
    assert vr._first_cached({}, {}, experts)["expert"] == "linear"
