"""Tests for gated_hmoe.theory.attention_rank: the rank test with attention's own router and
the dimensions of the exact-fit branches of a surplus head."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp

from gated_hmoe.models import heads
from gated_hmoe.theory import attention_rank as ar
from gated_hmoe.theory import identifiability as idf

#: (rank, functions) at order 2 under attention's router.
EXPECTED_RANKS = {"MHSA": (3, 6), "G1": (6, 10), "G1-headwise": (6, 10), "G2": (6, 10),
                  "G2-tied": (6, 6), "ridge": (10, 10), "G3": (6, 10), "G4": (6, 10),
                  "G5": (3, 6)}


def test_every_layer_position_has_a_term():
    assert set(ar.POSITION_PARAMS) == set(heads.LAYER_POSITIONS)


@pytest.mark.parametrize("position", heads.LAYER_POSITIONS)
def test_family_size_and_router(position):
    fam = ar.attention_family(position, 2)
    assert [p.name for p in fam.params] == list(ar.POSITION_PARAMS[position])
    assert len(fam.functions) == math.comb(2 + len(fam.params), 2)
    assert len(set(fam.labels)) == len(fam.labels)
    names = {s.name for s in fam.functions[0].free_symbols}
    assert "beta" not in names                     # monomial score: no slope, no router bias
    assert ("b" in names) == (position == "ridge")  # a value bias only where the layer has one
    assert names >= {"x_q", "x_k"}                 # query and key kept apart


def test_g1_gate_reads_the_query_and_g2_gate_the_key():
    u1 = ar.attention_family("G1", 0).functions[0]
    u2 = ar.attention_family("G2", 0).functions[0]
    x_q, x_k, t = (sp.Symbol(n, real=True) for n in ("x_q", "x_k", "t"))
    # u = gate * (something not depending on t): d log u / dt is sigma' / sigma of the gate input
    assert sp.simplify(sp.diff(sp.log(u1), t) - x_q * (1 - 1 / (1 + sp.exp(-t * x_q)))) == 0
    assert sp.simplify(sp.diff(sp.log(u2), t) - x_k * (1 - 1 / (1 + sp.exp(-t * x_k)))) == 0


@pytest.mark.parametrize("position", heads.LAYER_POSITIONS)
def test_ranks_under_attentions_router(position):
    res = ar.attention_rank(position)
    assert (res.rank, res.n_functions) == EXPECTED_RANKS[position]
    assert res.gate == ar.ROUTER and res.expert == position
    # a wide gap: kept singular values above 1e-4, dropped ones below 1e-14 (relative)
    spec = res.log10_spectrum
    assert spec[res.rank - 1] > -4
    assert res.rank == len(spec) or spec[res.rank] < -14


@pytest.mark.parametrize("position", ["MHSA", "G3", "ridge"])
def test_ranks_agree_in_high_precision(position):
    res = ar.attention_rank(position, dps=40, rtol=1e-25)
    assert res.rank == EXPECTED_RANKS[position][0]
    assert res.rank == len(res.log10_spectrum) or res.log10_spectrum[res.rank] < -35


def test_deficit_is_exactly_linearity_in_the_value_weight():
    for row in ar.rank_table():
        linear = heads.LEAF_CLASS[row.position] != "ridge (SiLU)"
        # u = v du/dv, d2u/dv2 = 0 and d2u/dp dv = (du/dp)/v for the other parameters p
        assert row.n_functions - row.rank == (len(row.params) + 1 if linear else 0)


def test_rank_table_keeps_every_verdict_and_the_analogue():
    rows = {r.position: r for r in ar.rank_table()}
    assert not any(r.changed for r in rows.values())
    for pos, r in rows.items():
        ana = idf.position_rank(pos)
        assert (r.analogue_rank, r.analogue_functions) == (ana.rank, ana.n_functions)
        assert (r.verdict == "full rank") == (heads.LEAF_CLASS[pos] == "ridge (SiLU)")


@pytest.mark.user_input
def test_rank_rejects_bad_input():
    with pytest.raises(ValueError, match="position"):
        ar.attention_rank("G6")
    with pytest.raises(ValueError, match="order"):
        ar.attention_family("MHSA", -1)
    with pytest.raises(ValueError, match="rtol"):
        ar.attention_rank("MHSA", rtol=2.0)
    with pytest.raises(ValueError, match="dps"):
        ar.attention_rank("MHSA", dps=8)
    with pytest.raises(ValueError, match="n"):
        ar.query_key_grid(1)


# --- exact fits of a surplus head -------------------------------------------------------

#: (split, channel, dead, kernel at the meeting point, generic kernel) per position.
EXPECTED_DIMS = {"MHSA": (8, None, 10, 12, 6), "G2-tied": (2, 3, 8, 10, 0),
                 "G1": (4, 4, 8, 12, 0)}


@pytest.mark.parametrize("position", sorted(EXPECTED_DIMS))
def test_branch_dimensions(position):
    rows = {r.branch: r for r in ar.branch_dimensions(position)}
    split, channel, dead, meet, generic = EXPECTED_DIMS[position]
    assert rows["split"].dimension == split and rows["dead"].dimension == dead
    assert rows["generic"].kernel == generic == rows["generic"].dimension
    assert ("channel" in rows) == (channel is not None)
    if channel is not None:
        assert rows["channel"].dimension == channel
    assert rows["meet"].dimension is None and rows["meet"].kernel == rows["meet"].family == meet
    for r in rows.values():
        assert r.gap > 8                           # decades between kept and dropped values
        assert r.branch == "generic" or r.residual < 1e-12
        assert r.kernel >= r.family
        assert (r.second_order is None) == (r.kernel == r.family or r.branch == "meet")


def test_ridge_split_is_certified_by_the_second_order_test():
    rows = {r.branch: r for r in ar.branch_dimensions("G2-tied")}
    split = rows["split"]
    assert split.kernel > split.family and split.second_order
    assert split.margin > ar.SECOND_ORDER_TOL


def test_branch_students_are_exact_fits_and_heads_are_laid_out():
    s = ar.branch_student("G2", "channel")
    assert s["wv"].shape == (3, 2, 2) and s["t"].shape == (3, 2, 2)
    assert np.all(s["wv"][2][:, 1] == 0) and np.all(s["wk"][2] == s["wk"][0])
    d = ar.branch_student("ridge", "dead")
    assert np.all(d["wo"][2] == 0) and not np.all(d["wv"][2] == 0)


@pytest.mark.user_input
def test_branch_student_rejects_bad_input():
    with pytest.raises(ValueError, match="branch"):
        ar.branch_student("MHSA", "channel")        # the channels do not separate
    with pytest.raises(ValueError, match="p must"):
        ar.branch_student("G1", "split", p=1.0)
    with pytest.raises(ValueError, match="position"):
        ar.branch_dimensions("G6")
    with pytest.raises(ValueError, match="n_sequences"):
        ar.branch_dimensions("MHSA", n_sequences=1)
