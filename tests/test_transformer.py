"""Tests of the small transformer (gated_hmoe.transformer) and its E4 sweep and CLI."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gated_hmoe  # noqa: F401  (float64)
from gated_hmoe import attention as attn
from gated_hmoe import cli
from gated_hmoe import transformer as tfm
from gated_hmoe import transformer_experiments as tx

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
    """Independent numpy forward pass that calls the public gated_hmoe.attention.attention."""
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
    tc = tfm.make_train_config(steps=30, batch=4, peak_lr=1e-2, warmup=3)
    task = tfm.sample_task(jax.random.key(0), vocab=7, triggers=2)
    batch = tfm.sample_sequences(jax.random.key(1), task, n_seq=4, seq_len=6)
    np.testing.assert_array_equal(
        np.asarray(batch), np.asarray(tfm.sample_sequences(jax.random.key(1), task, n_seq=4, seq_len=6)))
    s_a = tfm.init_train_state(jax.random.key(2), c, tc)
    s_b = tfm.init_train_state(jax.random.key(2), c, tc)
    losses = []
    for _ in range(12):
        s_a, la = tfm.train_step(s_a, batch, tc)
        s_b, lb = tfm.train_step(s_b, batch, tc)
        assert float(la) == float(lb)
        losses.append(float(la))
    for x, y in zip(jax.tree.leaves(s_a.params), jax.tree.leaves(s_b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    final = float(tfm.loss(s_a.params, batch))
    assert final < losses[0] - 0.1, (losses[0], final)
    assert int(s_a.step) == 12


def test_bigram_backcopy_data():
    task = tfm.sample_task(jax.random.key(0), vocab=8, triggers=2)
    seqs = np.asarray(tfm.sample_sequences(jax.random.key(1), task, n_seq=64, seq_len=12))
    trig = np.asarray(task.is_trigger)
    assert np.all(seqs[:, 0] == 8) and np.all(seqs[:, 1:] < 8)
    assert not np.any(trig[seqs[:, 1]])                          # first token is no trigger
    copy = np.asarray(tfm.copy_positions(task, jnp.asarray(seqs)))
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
        tfm.make_train_config(**kwargs)


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
    tc = tfm.make_train_config(steps=4, batch=2, warmup=1)
    dc = tfm.DataConfig(pool=8, n_eval=4, trace_every=2, n_trace=2)
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="peak_lr"):
        tfm.train_runs(keys, np.array([4, 4]), np.array([1e-3, 0.0]), c, tc, dc)
    with pytest.raises(ValueError, match="n_train"):
        tfm.train_runs(keys, np.array([4, 99]), np.array([1e-3, 1e-3]), c, tc, dc)
    with pytest.raises(ValueError, match="triggers"):
        tfm.sample_task(jax.random.key(0), vocab=4, triggers=4)
    with pytest.raises(ValueError, match="sizes"):
        tx.validate_config(tx.PRESETS["tiny"]._replace(sizes=(8, 64)))
    with pytest.raises(ValueError, match="curve_variants"):
        tx.validate_config(tx.PRESETS["tiny"]._replace(curve_variants=("G6",)))


# ---------------------------------------------------------------- sweep and CLI


def test_cli_smoke_and_resume(tmp_path, monkeypatch):
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = ["transformer", "--preset", "tiny", "--cache", str(cache), "--out", str(out),
            "--no-progress"]
    assert cli.main(args) == 0
    summary = json.loads((out / "transformer_results.json").read_text())
    cfg = tx.PRESETS["tiny"]
    assert set(summary["sink"]) == set(cfg.sink_variants)
    sink = np.array(summary["sink"]["G1"]["per_head"])
    assert sink.shape == (cfg.seeds, cfg.layers, cfg.heads)
    assert np.all((sink > 0) & (sink <= 1))
    assert (out / "transformer_sinks.png").exists()
    files = sorted((cache / "transformer").glob("*.json"))
    assert len(files) == len(tx.run_specs(cfg)) and not list((cache / "transformer").glob("*.tmp"))

    # resume: drop the cached runs of one variant; only those are recomputed, bit-identical.
    before = tx.run_experiment(cfg, cache=cache, progress=False)
    dropped = [s for s in tx.run_specs(cfg) if s.variant == "G1"]
    for s in dropped:
        (cache / "transformer" / f"{tx.run_key(cfg, s)}.json").unlink()
    computed = []
    real = tx._compute_group

    def spy(c, variant, specs):
        computed.extend(specs)
        return real(c, variant, specs)

    monkeypatch.setattr(tx, "_compute_group", spy)
    res = tx.run_experiment(cfg, cache=cache, progress=False)
    assert computed == dropped
    for s in dropped:  # bit-identical (compared as JSON text: NaN != NaN as floats)
        assert json.dumps(res.runs[s]) == json.dumps(before.runs[s])
    # everything cached now: nothing is computed
    computed.clear()
    assert cli.main(args) == 0 and computed == []


def test_cli_bad_argument(capsys, tmp_path):
    code = cli.main(["transformer", "--preset", "tiny", "--seeds", "0", "--cache",
                     str(tmp_path), "--out", str(tmp_path), "--no-progress"])
    assert code == 2 and "seeds" in capsys.readouterr().err
