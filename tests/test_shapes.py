"""The shapes in the signatures are checked in this test suite (see ``conftest.py``)."""

import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest

from gated_hmoe.estimation import moe_fit
from gated_hmoe.models import moe


def test_a_shape_that_contradicts_the_signature_is_caught():
    """``planar_mean_and_jacobian(theta: (R, p), xt: (R, D, c))``: two different ``R`` fail."""
    spec = moe.make_spec(expert="sigmoid", k=2, D=1)
    theta = jnp.zeros((3, spec.num_params))
    f, J = moe_fit.planar_mean_and_jacobian(theta, jnp.zeros((3, 1, 8)), spec)
    assert f.shape == (3, 8) and J.shape == (3, spec.num_params, 8)
    with pytest.raises(jaxtyping.TypeCheckError, match="xt"):
        moe_fit.planar_mean_and_jacobian(theta, jnp.zeros((2, 1, 8)), spec)


def test_return_shapes_are_checked_too():
    """``mean(G, x: (n, D)) -> (n,)``: the returned array is checked against the same ``n``."""
    G = moe.default_truth("silu")
    assert moe.mean(G, np.zeros((5, 1)), expert="silu").shape == (5,)
    with pytest.raises(jaxtyping.TypeCheckError):
        moe.mean(G, np.zeros(5), expert="silu")          # x of rank 1: not "n D"


@pytest.mark.user_input
def test_user_input_tests_see_the_library_message():
    """With the checks off (as for a user), the same call gives the library's named error."""
    with pytest.raises(ValueError, match="x must have rank 2"):
        moe.mean(moe.default_truth("silu"), np.zeros(5), expert="silu")
