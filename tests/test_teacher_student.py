"""E5, trained attention: the head-level Voronoi loss, the surplus head's fate, training by
Adam under the declared stopping rule, and the cached teacher-student sweep."""

import argparse
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gated_hmoe.estimation import head_voronoi as hv
from gated_hmoe.estimation import teacher_student as ts
from gated_hmoe.experiments import e5_teacher_student as e5
from gated_hmoe.models.attention import init_params

SIZES = dict(d=3, d_k=2, d_v=2, d_out=2)


def _teacher(position="MHSA", **kw):
    return e5.teacher_from_seed(0, position=position, heads=2, **{**SIZES, **kw})


def _replace(p, **fields):
    """``dataclasses.replace`` of AttentionParams with the new weights as JAX arrays."""
    return dataclasses.replace(p, **{k: jnp.asarray(v) for k, v in fields.items()})


def _stack(p, extra: dict) -> object:
    """``p`` (AttentionParams) with one head appended (``extra``: its wq, wk, wv, wo)."""
    return dataclasses.replace(p, **{k: jnp.concatenate([jnp.asarray(getattr(p, k)),
                                                          jnp.asarray(v)[None]])
                                     for k, v in extra.items()})


def _permute(p, order):
    return _replace(p, **{k: getattr(p, k)[jnp.asarray(order)]
                                     for k in ("wq", "wk", "wv", "wo")})


# ------------------------------------------------------------------ head-level Voronoi loss

def test_head_loss_is_zero_at_the_teacher_and_invariant_to_head_order():
    t = _teacher().attn
    assert hv.head_loss(t, t) == 0.0
    rng = np.random.default_rng(0)
    s = _replace(t, **{k: np.asarray(getattr(t, k)) + 0.05 * rng.normal(
        size=np.shape(getattr(t, k))) for k in ("wq", "wk", "wv", "wo")})
    s = _stack(s, {k: 0.3 * rng.normal(size=np.shape(getattr(t, k))[1:])
                   for k in ("wq", "wk", "wv", "wo")})
    base = hv.head_loss(s, t)
    assert base > 0
    for order in ([2, 0, 1], [1, 2, 0]):
        assert hv.head_loss(_permute(s, order), t) == pytest.approx(base, rel=1e-12)
    assert hv.head_loss(s, _permute(t, [1, 0])) == pytest.approx(base, rel=1e-12)


def test_a_dead_surplus_head_costs_about_nothing():
    t = _teacher().attn
    rng = np.random.default_rng(1)
    extra = {k: rng.normal(size=np.shape(getattr(t, k))[1:]) for k in ("wq", "wk", "wo", "wv")}
    losses = []
    for scale in (1e-3, 1e-6):
        s = _stack(t, {**extra, "wv": scale * extra["wv"]})
        assert hv.surplus_fate(s, t) == "dead"
        losses.append(hv.head_loss(s, t))
    # linear in the dead head's mass: its mass and its own (mass-weighted) router error
    assert losses[1] == pytest.approx(1e-3 * losses[0], rel=1e-3)
    assert losses[1] < 1e-5


def test_a_split_pair_converging_to_the_truth_has_loss_going_to_zero_quadratically():
    """Head 0 split in two with value maps 0.3 and 0.7 of the teacher's; the pair's key maps
    at +-eps around the teacher's: the loss is O(eps^2) and the split error O(eps)."""
    t = _teacher().attn
    losses, errors = [], []
    for eps in (1e-1, 1e-2, 1e-3):
        wk = np.asarray(t.wk).copy()
        wk[0] = wk[0] * (1 + eps)
        s = _replace(t, wk=wk, wv=np.asarray(t.wv) * np.array([0.3, 1.0])[:, None, None])
        s = _stack(s, {"wq": np.asarray(t.wq[0]), "wk": np.asarray(t.wk[0]) * (1 - eps),
                       "wv": 0.7 * np.asarray(t.wv[0]), "wo": np.asarray(t.wo[0])})
        assert hv.surplus_fate(s, t) == "split"
        losses.append(hv.head_loss(s, t))
        errors.append(hv.split_error(s, t))
    assert losses[1] == pytest.approx(1e-2 * losses[0], rel=1e-6)
    assert losses[2] == pytest.approx(1e-4 * losses[0], rel=1e-6)
    assert errors[2] == pytest.approx(errors[1] / 10, rel=0.05)
    assert hv.head_report(s, t)["cells"] == [0, 1, 0]


def test_an_exact_split_along_the_teacher_map_costs_nothing_a_misaligned_one_does():
    """The weight split of a head (p M*, (1-p) M*) is not identified for any class, and costs
    nothing; a split whose maps point elsewhere pays in the mass term."""
    t = _teacher().attn
    wv0 = np.asarray(t.wv[0])
    aligned = _stack(_replace(t, wv=np.asarray(t.wv) * np.array([0.4, 1.0])[:, None, None]),
                     {"wq": np.asarray(t.wq[0]), "wk": np.asarray(t.wk[0]), "wv": 0.6 * wv0,
                      "wo": np.asarray(t.wo[0])})
    assert hv.head_loss(aligned, t) < 1e-12
    u = np.random.default_rng(2).normal(size=wv0.shape)
    wv = np.asarray(t.wv).copy()
    wv[0] = 0.5 * wv0 + u
    tilted = _stack(_replace(t, wv=wv), {"wq": np.asarray(t.wq[0]),
                                                    "wk": np.asarray(t.wk[0]),
                                                    "wv": 0.5 * wv0 - u,
                                                    "wo": np.asarray(t.wo[0])})
    assert hv.head_loss(tilted, t) > 0.01


def test_fates_and_headwise_gates():
    t = _teacher("G1-headwise").attn
    assert hv.head_maps(t).router.shape == (2, SIZES["d"] ** 2 + SIZES["d"])
    assert hv.surplus_fate(t, t) == "none"
    one = _replace(t, **{k: np.asarray(getattr(t, k))[:1]
                                    for k in ("wq", "wk", "wv", "wo", "wg")})
    missing = _stack(one, {"wq": np.asarray(t.wq[0]), "wk": np.asarray(t.wk[0]),
                           "wv": 1e-9 * np.asarray(t.wv[0]), "wo": np.asarray(t.wo[0])})
    missing = _replace(missing, wg=np.concatenate([np.asarray(t.wg[:1])] * 2))
    assert hv.surplus_fate(missing, t) == "other"


@pytest.mark.user_input
def test_head_loss_errors_name_their_argument():
    t = _teacher().attn
    with pytest.raises(TypeError, match="student must be an AttentionParams"):
        hv.head_loss({"wq": 1}, t)
    other = init_params(jax.random.key(0), d=4, heads=2, d_k=2, d_v=2, d_out=2)
    with pytest.raises(ValueError, match="student and teacher must have the same d"):
        hv.head_loss(other, t)
    gated = _teacher("G1").attn
    with pytest.raises(ValueError, match="student.gate must equal teacher.gate"):
        hv.head_loss(gated, t)
    with pytest.raises(ValueError, match="dead_tol must be a finite number > 0"):
        hv.surplus_fate(t, t, dead_tol=0.0)
    with pytest.raises(ValueError, match="teacher.attn: params.wv must have shape"):
        ts.check_layer(ts.LayerParams(_replace(t, wv=np.zeros((1, 3, 2)))), "MHSA",
                       "teacher")


# ------------------------------------------------------------------ layers and training

def test_tied_g2_is_the_value_activation_without_bias_and_every_position_runs():
    x = ts.sample_inputs(jax.random.key(1), n=1, n_tokens=4, d=3)[0]
    tied = ts.init_layer(jax.random.key(2), "G2-tied", heads=2, **SIZES)
    ridge = ts.init_layer(jax.random.key(2), "ridge", heads=2, **SIZES)
    np.testing.assert_allclose(ts.layer_output(tied, x, "G2-tied"),
                               ts.layer_output(ridge, x, "ridge"), rtol=1e-12)
    for position in ts.POSITIONS:
        p = ts.check_layer(ts.init_layer(jax.random.key(3), position, heads=3, **SIZES),
                           position)
        assert ts.layer_output(p, x, position).shape == (4, SIZES["d_out"])


def test_training_from_the_teacher_keeps_it_and_the_stopping_rule_is_reported():
    position = "MHSA"
    teacher = _teacher()
    x = ts.sample_inputs(jax.random.key(4), n=24, n_tokens=3, d=3)[None]
    y = ts.batched_output(teacher, x[0], position)[None]
    start = jax.tree.map(lambda a: jnp.stack([a, a])[None], teacher)       # (S=1, I=2)
    plateau = ts.train_runs(start, x, y, x, teacher, position,
                            ts.TrainSettings(steps=400, lr=1e-4, window=5))
    assert not plateau.budget_hit.any() and (plateau.steps < 400).all()
    assert np.all(plateau.excess_risk < 1e-6)
    budget = ts.train_runs(start, x, y + 0.0, x, teacher, position,
                           ts.TrainSettings(steps=12, lr=1e-4, window=50))
    assert budget.budget_hit.all() and (budget.steps == 12).all()
    assert ts.pick(plateau.train_loss).shape == (1,)
    with pytest.raises(ValueError, match="params0 must have leaves with leading axes"):
        ts.train_runs(jax.tree.map(lambda a: a[0], start), x, y, x, teacher, position)
    with pytest.raises(ValueError, match="rel_tol must be in"):
        ts.check_settings(ts.TrainSettings(rel_tol=2.0))


# ------------------------------------------------------------------ teachers and the sweep

def test_seeded_teachers_are_separated_deterministic_and_round_trip(tmp_path):
    a, b = _teacher("ridge"), _teacher("ridge")
    assert e5.head_separation(a) <= 0.5
    assert all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    path = tmp_path / "teacher.json"
    path.write_text(json.dumps(e5.teacher_to_dict(a, "ridge")))
    c = e5.teacher_from_file(path, position="ridge")
    assert all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(c)))


@pytest.mark.user_input
@pytest.mark.parametrize("change, match", [
    (lambda d: d.pop("wk"), "teacher.wk is missing"),
    (lambda d: d.update(wv=[[[1.0]]]), "teacher.wv must have shape"),
    (lambda d: d.update(position="G7"), "teacher.position must be one of"),
    (lambda d: d.update(bias=None), "teacher.bias is missing"),
    (lambda d: d.update(extra=1), "unknown fields"),
])
def test_teacher_files_are_validated_by_field(tmp_path, change, match):
    payload = e5.teacher_to_dict(_teacher("ridge"), "ridge")
    change(payload)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(payload))
    with pytest.raises((ValueError, TypeError), match=match):
        e5.teacher_from_file(path)
    with pytest.raises(ValueError, match="teacher.position must be 'MHSA'"):
        e5.teacher_from_dict(e5.teacher_to_dict(_teacher("ridge"), "ridge"), position="MHSA")


@pytest.mark.user_input
@pytest.mark.parametrize("field, value, match", [
    ("heads", 1, "heads must be >= teacher_heads"),
    ("n_max", 50, "n_max must be >= n_min"),
    ("noise", 0.0, "noise must be a finite number > 0"),
    ("position", "G9", "position must be one of"),
    ("window", 0, "window must be an integer >= 1"),
])
def test_config_errors_name_the_field(field, value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dataclasses.replace(e5.TeacherStudentConfig(), **{field: value}).validate()


TINY = e5.TeacherStudentConfig(position="G1", heads=3, **SIZES, n_tokens=3, n_min=16,
                               n_max=48, points=2, seeds=2, inits=2, steps=40, window=10,
                               n_test=16)


def test_the_sweep_caches_each_point_resumes_and_writes_strict_json(tmp_path, monkeypatch):
    calls = []
    original = e5.compute_point
    monkeypatch.setattr(e5, "compute_point", lambda *a: calls.append(a[-1]) or original(*a))
    compiled = ts._train_many._cache_size()
    result = e5.run(TINY, cache_dir=tmp_path, progress=False)
    assert calls == [16, 48] and result["grid"] == [16, 48]
    assert ts._train_many._cache_size() - compiled == 2     # once per n, not per seed
    point = result["points"][0]
    assert np.shape(point["head_loss"]) == (2, 2) and len(point["pick"]) == 2
    assert set(np.ravel(point["fate"])) <= set(hv.FATES)
    assert result["slopes"]["head_loss"]["slope"] is not None
    assert len(result["slopes"]["excess_risk"]["ci"]) == 2
    assert sum(result["fates"][1].values()) == 2
    again = e5.run(TINY, cache_dir=tmp_path, progress=False)
    assert calls == [16, 48]                              # every point from the cache
    assert again["points"] == result["points"]
    one_by_one = e5.compute_point(dataclasses.replace(TINY, chunk=1), TINY.teacher_layer(),
                                  result["noise_variance"], 16)    # chunks of one data set
    np.testing.assert_allclose(one_by_one["head_loss"], point["head_loss"], rtol=1e-6)
    assert one_by_one["fate"] == point["fate"]
    path = e5.write_results(result, tmp_path / "out")
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict {c}"))


def test_config_from_args():
    args = argparse.Namespace(position="G2-tied", heads=3, n_min=100, n_max=1000, points=3,
                              noise=0.1, seeds=2, inits=2, steps=100, teacher=None,
                              teacher_seed=5)
    cfg = e5.config_from_args(args)
    assert cfg.teacher_seed == 5 and cfg.grid() == [100, 316, 1000]
    assert cfg.key() != dataclasses.replace(cfg, noise=0.01).key()
    assert cfg.key() == dataclasses.replace(cfg, chunk=1).key()
    assert e5.peak_bytes(cfg) > e5.MEMORY_BASE
    with pytest.raises(ValueError, match="teacher and teacher_seed exclude each other"):
        e5.config_from_args(argparse.Namespace(**{**vars(args), "teacher": "t.json"}))
