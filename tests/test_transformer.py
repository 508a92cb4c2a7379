"""Tests of the small transformer (gated_hmoe.models.transformer), its task
(gated_hmoe.models.tasks), its training (gated_hmoe.estimation.training), the E4 sweep
(gated_hmoe.experiments.e4_transformer), its figures (gated_hmoe.viz.transformer) and CLI."""

from __future__ import annotations

import json
import shutil
import warnings

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gated_hmoe  # noqa: F401  (float64)
from gated_hmoe import cli
from gated_hmoe.estimation import training
from gated_hmoe.experiments import e4_transformer as e4
from gated_hmoe.experiments import runner
from gated_hmoe.models import attention as attn
from gated_hmoe.models import tasks
from gated_hmoe.models import transformer as tfm
from gated_hmoe.viz import transformer as vt
from gated_hmoe.viz import style

SMALL = dict(vocab=7, seq_len=6, d_model=8, heads=2, layers=2)


def _tokens(key, n=6, vocab=7):
    return jnp.concatenate([jnp.array([vocab]), jax.random.randint(key, (n - 1,), 0, vocab)])


# ---------------------------------------------------------------- model


@pytest.mark.parametrize("variant", ["MHSA", "G1", "G1-headwise", "G3"])
def test_shapes_and_dtypes(variant):
    c = tfm.make_config(variant=variant, **SMALL)
    p = tfm.init_params(jax.random.key(0), c)
    t = _tokens(jax.random.key(1))
    lg = tfm.logits(p, t)
    maps = tfm.attention_maps(p, t)
    assert lg.shape == (6, 7) and lg.dtype == jnp.float64
    assert maps.shape == (2, 2, 6, 6) and maps.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(maps).sum(-1), 1.0, atol=1e-12)
    assert np.all(np.triu(np.asarray(maps), k=1) == 0)          # causal weights
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(p))


def test_causal_masking():
    c = tfm.make_config(variant="G1", **SMALL)
    p = tfm.init_params(jax.random.key(0), c)
    t = _tokens(jax.random.key(1))
    t2 = t.at[4].set((t[4] + 1) % 7)
    a, b = np.asarray(tfm.logits(p, t)), np.asarray(tfm.logits(p, t2))
    np.testing.assert_array_equal(a[:4], b[:4])                 # earlier rows untouched
    assert np.max(np.abs(a[4:] - b[4:])) > 1e-6                 # and the change does matter


def _reference_logits(p: tfm.TransformerParams, tokens) -> np.ndarray:
    """Independent numpy forward pass that calls the public gated_hmoe.models.attention.attention."""
    def ln(x, s, b):
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * s + b

    def gelu(x):  # tanh approximation, as jax.nn.gelu(approximate=True)
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    n = len(tokens)
    mask = np.tril(np.ones((n, n), bool))
    h = np.asarray(p.tok_emb)[np.asarray(tokens)] + np.asarray(p.pos_emb)[:n]
    for b in p.blocks:
        z = ln(h, np.asarray(b.ln1_scale), np.asarray(b.ln1_bias))
        h = h + np.asarray(attn.attention(b.attn, z, mask=mask))
        z = ln(h, np.asarray(b.ln2_scale), np.asarray(b.ln2_bias))
        h = h + gelu(z @ np.asarray(b.w1) + np.asarray(b.b1)) @ np.asarray(b.w2) + np.asarray(b.b2)
    return ln(h, np.asarray(p.lnf_scale), np.asarray(p.lnf_bias)) @ np.asarray(p.unembed)


@pytest.mark.parametrize("variant", ["MHSA", "G1"])
def test_uses_the_library_attention(variant):
    c = tfm.make_config(variant=variant, **SMALL)
    p = tfm.init_params(jax.random.key(3), c)
    t = _tokens(jax.random.key(4))
    assert isinstance(p.blocks[0].attn, attn.AttentionParams)
    assert p.blocks[0].attn.gate == c.gate
    np.testing.assert_allclose(np.asarray(tfm.logits(p, t)), _reference_logits(p, t),
                               rtol=1e-10, atol=1e-12)


def test_gated_and_plain_share_initial_weights():
    p0 = tfm.init_params(jax.random.key(5), tfm.make_config(**SMALL))
    p1 = tfm.init_params(jax.random.key(5), tfm.make_config(variant="G1", **SMALL))
    np.testing.assert_array_equal(np.asarray(p0.blocks[1].attn.wq), np.asarray(p1.blocks[1].attn.wq))
    assert p0.blocks[0].attn.wg is None and p1.blocks[0].attn.wg.shape == (2, 8, 4)


def test_determinism_and_training_step_lowers_loss():
    c = tfm.make_config(variant="G1", **SMALL)
    tc = training.make_train_config(steps=30, batch=4, peak_lr=1e-2, warmup=3)
    task = tasks.sample_task(jax.random.key(0), vocab=7, triggers=2)
    batch = tasks.sample_sequences(jax.random.key(1), task, n_seq=4, seq_len=6)
    np.testing.assert_array_equal(
        np.asarray(batch), np.asarray(tasks.sample_sequences(jax.random.key(1), task, n_seq=4, seq_len=6)))
    s_a = training.init_train_state(jax.random.key(2), c, tc)
    s_b = training.init_train_state(jax.random.key(2), c, tc)
    losses = []
    for _ in range(12):
        s_a, la = training.train_step(s_a, batch, tc)
        s_b, lb = training.train_step(s_b, batch, tc)
        assert float(la) == float(lb)
        losses.append(float(la))
    for x, y in zip(jax.tree.leaves(s_a.params), jax.tree.leaves(s_b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    final = float(tfm.loss(s_a.params, batch))
    assert final < losses[0] - 0.1, (losses[0], final)
    assert int(s_a.step) == 12


def test_bigram_backcopy_data():
    task = tasks.sample_task(jax.random.key(0), vocab=8, triggers=2)
    seqs = np.asarray(tasks.sample_sequences(jax.random.key(1), task, n_seq=64, seq_len=12))
    trig = np.asarray(task.is_trigger)
    assert np.all(seqs[:, 0] == 8) and np.all(seqs[:, 1:] < 8)
    assert not np.any(trig[seqs[:, 1]])                          # first token is no trigger
    copy = np.asarray(tasks.copy_positions(task, jnp.asarray(seqs)))
    i, j = np.nonzero(copy[:, :-1])
    assert len(i) > 0
    np.testing.assert_array_equal(seqs[i, j + 1], seqs[i, j - 1])  # copy rule
    np.testing.assert_allclose(np.asarray(task.transition).sum(1), 1.0, atol=1e-12)


@pytest.mark.parametrize("kwargs, name", [
    (dict(variant="G9"), "variant"),
    (dict(gate="G7"), "gate"),
    (dict(d_model=30, heads=4), "d_model"),
    (dict(vocab=1), "vocab"),
    (dict(layers=0), "layers"),
    (dict(seq_len=2.5), "seq_len"),
])
def test_bad_model_config(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        tfm.make_config(**kwargs)


@pytest.mark.parametrize("kwargs, name", [
    (dict(peak_lr=0.0), "peak_lr"), (dict(peak_lr=-1e-3), "peak_lr"),
    (dict(peak_lr=float("nan")), "peak_lr"), (dict(peak_lr="big"), "peak_lr"),
    (dict(steps=0), "steps"), (dict(batch=-2), "batch"), (dict(steps=5, warmup=9), "warmup"),
])
def test_bad_train_config(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        training.make_train_config(**kwargs)


def test_bad_runtime_inputs():
    c = tfm.make_config(**SMALL)
    p = tfm.init_params(jax.random.key(0), c)
    with pytest.raises(ValueError, match="tokens"):
        tfm.logits(p, jnp.array([7, 9]))                       # id out of range
    with pytest.raises(ValueError, match="tokens"):
        tfm.logits(p, jnp.zeros(9, jnp.int32))                 # longer than seq_len
    with pytest.raises(TypeError, match="tokens"):
        tfm.logits(p, jnp.zeros(3))                            # floats
    with pytest.raises(TypeError, match="config"):
        tfm.init_params(jax.random.key(0), {"vocab": 3})
    with pytest.raises(ValueError, match="tokens"):
        tfm.loss(p, jnp.array([[7, 0], [0, 9]]))               # id out of range, any row
    with pytest.raises(ValueError, match="tokens"):
        tfm.loss(p, jnp.array([7, 0, 1]))                      # not a batch
    tc = training.make_train_config(steps=4, batch=2, warmup=1)
    dc = training.DataConfig(pool=8, n_eval=4, trace_every=2, n_trace=2)
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="peak_lr"):
        training.train_runs(keys, np.array([4, 4]), np.array([1e-3, 0.0]), c, tc, dc)
    with pytest.raises(ValueError, match="n_train"):
        training.train_runs(keys, np.array([4, 99]), np.array([1e-3, 1e-3]), c, tc, dc)
    with pytest.raises(TypeError, match="keys"):
        training.train_runs(np.array([0, 1]), np.array([4, 4]), np.array([1e-3, 1e-3]), c, tc, dc)
    with pytest.raises(TypeError, match="tc"):
        training.train_runs(keys, np.array([4, 4]), np.array([1e-3, 1e-3]), c, {"steps": 4}, dc)
    state = training.init_train_state(jax.random.key(0), c, tc)
    with pytest.raises(ValueError, match="tokens"):
        training.train_step(state, jnp.zeros((2, 9), jnp.int32), tc)  # longer than seq_len
    with pytest.raises(ValueError, match="triggers"):
        tasks.sample_task(jax.random.key(0), vocab=4, triggers=4)
    with pytest.raises(ValueError, match="sizes"):
        e4.validate_config(e4.PRESETS["tiny"]._replace(sizes=(8, 64)))
    with pytest.raises(ValueError, match="curve_variants"):
        e4.validate_config(e4.PRESETS["tiny"]._replace(curve_variants=("G6",)))


# ---------------------------------------------------------------- sweep, cache, figures, CLI

TINY = e4.PRESETS["tiny"]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """The tiny sweep computed once into a fresh cache: ``(cache folder, Results)``."""
    cache = tmp_path_factory.mktemp("e4cache")
    return cache, e4.run_experiment(TINY, cache_dir=cache, progress=False)


@pytest.fixture
def spy_compute(monkeypatch):
    """Every run that ``run_experiment`` computes (rather than loads), in order."""
    computed = []
    real = e4._compute_group

    def spy(c, variant, specs):
        computed.extend(specs)
        return real(c, variant, specs)

    monkeypatch.setattr(e4, "_compute_group", spy)
    return computed


def _copy_cache(src, tmp_path):
    dst = tmp_path / "cache"
    shutil.copytree(src, dst)
    return dst


def _same_runs(a, b, specs):
    for s in specs:  # bit-identical (compared as JSON text: NaN != NaN as floats)
        assert json.dumps(a.runs[s]) == json.dumps(b.runs[s]), s


def test_sweep_writes_one_entry_per_run(tiny_sweep, tmp_path, spy_compute):
    cache, before = tiny_sweep
    store = runner.Store("transformer", cache)
    specs = e4.run_specs(TINY)
    files = sorted(store.folder.glob("*.json"))
    assert len(files) == len(specs) and not list(store.folder.glob("*.tmp"))
    entry = store.load(e4.run_key(TINY, specs[0]))
    assert set(entry) == {"spec", "config", "result", "group_seconds", "group_size", "jax"}
    assert entry["spec"] == list(specs[0])
    assert set(entry["result"]) == set(training.RunResult._fields)
    sink = np.array(before.get("G1", 0, field="sink"))
    assert sink.shape == (TINY.layers, TINY.heads) and np.all((sink > 0) & (sink <= 1))
    # a cache hit computes nothing and returns the same numbers
    res = e4.run_experiment(TINY, cache_dir=_copy_cache(cache, tmp_path), progress=False)
    assert spy_compute == [] and res.seconds == {}
    _same_runs(res, before, specs)


def test_recorded_seconds_are_those_of_the_computing_call(tiny_sweep, tmp_path):
    cache, before = tiny_sweep
    rec = e4.recorded_seconds(TINY, cache_dir=cache)
    assert rec.keys() == before.seconds.keys() and all(v > 0 for v in rec.values())
    assert all(rec[v] == pytest.approx(before.seconds[v]) for v in rec)
    store = runner.Store("transformer", cache := _copy_cache(cache, tmp_path))
    for s in e4.run_specs(TINY):
        if s.variant == "G1":
            store.path(e4.run_key(TINY, s)).unlink()
    assert set(e4.recorded_seconds(TINY, cache_dir=cache)) == set(rec) - {"G1"}


def test_sweep_resumes(tiny_sweep, tmp_path, spy_compute):
    """Drop the cached runs of one variant: only those are recomputed, bit-identical."""
    cache = _copy_cache(tiny_sweep[0], tmp_path)
    before = tiny_sweep[1]
    store = runner.Store("transformer", cache)
    dropped = [s for s in e4.run_specs(TINY) if s.variant == "G1"]
    for s in dropped:
        store.path(e4.run_key(TINY, s)).unlink()
    res = e4.run_experiment(TINY, cache_dir=cache, progress=False)
    assert spy_compute == dropped and set(res.seconds) == {"G1"}
    _same_runs(res, before, dropped)
    spy_compute.clear()     # everything cached now: nothing is computed
    e4.run_experiment(TINY, cache_dir=cache, progress=False)
    assert spy_compute == []


def test_truncated_entries_are_reported_and_recomputed(tiny_sweep, tmp_path, spy_compute):
    """Half-written entries (here: all runs of G1, which are computed together in one
    ``vmap``, so the recomputation is bit-identical) are each reported with a CacheWarning
    naming their path, then recomputed and rewritten whole."""
    cache = _copy_cache(tiny_sweep[0], tmp_path)
    before = tiny_sweep[1]
    store = runner.Store("transformer", cache)
    broken = [s for s in e4.run_specs(TINY) if s.variant == "G1"]
    paths = [store.path(e4.run_key(TINY, s)) for s in broken]
    for path in paths:
        text = path.read_text()
        path.write_text(text[: len(text) // 2])
    with pytest.warns(runner.CacheWarning) as record:
        res = e4.run_experiment(TINY, cache_dir=cache, progress=False)
    messages = [str(w.message) for w in record if issubclass(w.category, runner.CacheWarning)]
    assert len(messages) == len(paths)
    assert all(str(path) in m for path, m in zip(paths, messages))
    assert spy_compute == broken
    _same_runs(res, before, e4.run_specs(TINY))
    assert [json.loads(path.read_text())["spec"] for path in paths] == [list(s) for s in broken]
    spy_compute.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", runner.CacheWarning)
        e4.run_experiment(TINY, cache_dir=cache, progress=False)
    assert spy_compute == []


def test_figures_and_explorer(tiny_sweep):
    res = tiny_sweep[1]
    figs = [vt.plot_sinks(e4.sink_table(res), seq_len=TINY.seq_len),
            vt.plot_sinks(e4.sink_table(res, field="sink_other"), seq_len=TINY.seq_len,
                          field="sink_other"),
            vt.plot_learning_curves(e4.learning_curves(res), TINY.sizes,
                                    res.stack(TINY.curve_variants[0], "bayes_loss"),
                                    steps=TINY.steps),
            vt.plot_stability(e4.stability(res)),
            vt.plot_attention_maps(res, ("G1",), lr=TINY.lrs[-1]), vt.plot_sink_trace(res),
            vt.run_maps(res, "G1", 0, 1)]
    assert [len(f.axes) for f in figs] == [TINY.layers, TINY.layers, 1, 1,     # + colour bars
                                           TINY.layers * TINY.heads + 1, TINY.layers,
                                           TINY.heads + 2]
    assert figs[0]._suptitle.get_text().startswith("Attention sink: mean weight")
    findings = {i: style.audit(f) for i, f in enumerate(figs)}
    assert not any(findings.values()), findings
    plt.close("all")
    box = vt.maps_explorer(res)
    variant, layer, seed = box.children[0].children
    assert variant.options == tuple(zip(TINY.sink_variants, TINY.sink_variants))
    assert layer.options == (("1", 0),) and seed.value == 0
    variant.value, seed.value = "G1", 1                       # redraws without error
    plt.close("all")


def test_cli_smoke_and_resume(tiny_sweep, tmp_path, spy_compute):
    """``python -m gated_hmoe transformer``: summary, five figures, the cache it is given."""
    cache, out = _copy_cache(tiny_sweep[0], tmp_path), tmp_path / "out"
    dropped = [s for s in e4.run_specs(TINY) if s.variant == "MHSA"]
    for s in dropped:
        runner.Store("transformer", cache).path(e4.run_key(TINY, s)).unlink()
    args = ["transformer", "--preset", "tiny", "--cache-dir", str(cache), "--out", str(out),
            "--no-progress"]
    assert cli.main(args) == 0
    assert spy_compute == dropped
    summary = json.loads((out / "transformer_results.json").read_text())
    assert set(summary["sink"]) == set(TINY.sink_variants)
    sink = np.array(summary["sink"]["G1"]["per_head"])
    assert sink.shape == (TINY.seeds, TINY.layers, TINY.heads)
    assert np.all((sink > 0) & (sink <= 1))
    assert summary["seconds_this_call"].keys() == {"MHSA"}
    for name in ("sinks", "learning_curves", "stability", "attention_maps", "sink_trace"):
        assert (out / f"transformer_{name}.png").exists(), name
    files = sorted((cache / "transformer").glob("*.json"))
    assert len(files) == len(e4.run_specs(TINY)) and not list((cache / "transformer").glob("*.tmp"))
    # everything cached now: nothing is computed
    spy_compute.clear()
    assert cli.main(args) == 0 and spy_compute == []


def test_cli_bad_argument(capsys, tmp_path):
    code = cli.main(["transformer", "--preset", "tiny", "--seeds", "0", "--cache-dir",
                     str(tmp_path), "--out", str(tmp_path), "--no-progress"])
    assert code == 2 and "seeds" in capsys.readouterr().err
