"""The three thresholds of an attention profile's grid point: the bootstrap problem's hooks,
the split likelihood-ratio set on halves of the sequences, and the radii under each."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gated_hmoe.estimation import head_profile, thresholds
from gated_hmoe.experiments import e2_profile
from gated_hmoe.experiments import thresholds as et


@pytest.mark.slow
def test_attention_point_thresholds_on_a_small_grid_point(tmp_path):
    cfg = e2_profile.AttentionProfileConfig(
        position="G2-tied", sweep="noise", n=16, noise_min=1e-8, noise_max=1e-6, points=2,
        replicates=2, seed=3, offsets=(0.05, 1.0, 3), max_iter=30, pop_n=32).validate()
    out = et.attention_point_thresholds(cfg, 16, 1e-6, replicates=(1,), draws=3, seed=0,
                                        cache_dir=tmp_path)
    json.dumps(out, allow_nan=True)
    assert out["position"] == "G2-tied" and out["replicates"] == [1]
    assert out["thresholds"]["split_lrt"] == pytest.approx(2 * np.log(20))
    assert np.shape(out["thresholds"]["bootstrap_draws"]) == (1, 3)
    assert np.shape(out["excess"]) == (1, 3) and np.shape(out["split_lrt_statistic"]) == (1, 3)
    for name in ("chi2", "bootstrap", "split_lrt"):
        assert out["radii"][name]["status"][0] in {"interpolated", "censored", "below",
                                                    "undetermined"}
    # 3 draws cannot reach the 95% order statistic: the threshold is infinite, the radius
    # the grid's end, or undetermined where an offset's fit is not certified (never a
    # finite radius inside the grid from too few draws)
    assert out["thresholds"]["bootstrap"]["c"] == [np.inf]
    assert out["radii"]["bootstrap"]["status"][0] in {"censored", "undetermined"}
    assert out["radii"]["bootstrap"]["radius"][0] in {None, 1.0}


def test_the_attention_problem_has_the_bootstrap_hooks_and_checks_its_arguments():
    teacher = e2_profile.AttentionProfileConfig(position="G2-tied").validate().teacher()
    q = head_profile.PairLayout("G2-tied", teacher).q
    problem = head_profile.AttentionProfileProblem(position="G2-tied", teacher=teacher,
                                                   deltas=np.array([0.1, 0.2]),
                                                   starts=np.zeros((2, q)), nu=1e-6)
    assert isinstance(problem, thresholds.BootstrapProblem)
    with pytest.raises(ValueError, match="at must index deltas"):
        head_profile.AttentionProfileProblem(position="G2-tied", teacher=teacher,
                                             deltas=np.array([0.1, 0.2]),
                                             starts=np.zeros((2, q)), nu=1e-6, at=2)
    with pytest.raises(ValueError, match="starts"):
        head_profile.AttentionProfileProblem(position="G2-tied", teacher=teacher,
                                             deltas=np.array([0.1, 0.2]),
                                             starts=np.zeros((3, q)), nu=1e-6)
    with pytest.raises(TypeError, match="AttentionProfileConfig"):
        et.attention_point_thresholds(object(), 16, 1e-6)
