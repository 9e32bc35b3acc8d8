"""Conjugate gradient, Hessian-vector products, trust-region scaling and the line search."""

import math

import pytest
import torch

from metarl.algorithms.trust_region import (
    backtracking_line_search,
    conjugate_gradient,
    flatten,
    hessian_vector_product_fn,
    trust_region_step,
    unflatten,
)


def spd_matrix(n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=generator, dtype=torch.float64)
    return a @ a.T + 0.5 * torch.eye(n, dtype=torch.float64)


def test_conjugate_gradient_solves_spd_system():
    matrix = spd_matrix()
    b = torch.arange(1.0, 7.0, dtype=torch.float64)
    x = conjugate_gradient(lambda v: matrix @ v, b, iters=20)
    torch.testing.assert_close(x, torch.linalg.solve(matrix, b))


def test_hessian_vector_product_matches_explicit_hessian():
    matrix = spd_matrix(5)
    w1 = torch.randn(
        2, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True
    )
    w2 = torch.randn(
        3, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True
    )

    def f(a, b):
        x = torch.cat([a, b])
        return 0.5 * x @ matrix @ x + torch.sin(x).sum()

    grad = torch.autograd.grad(f(w1, w2), [w1, w2], create_graph=True)
    hvp = hessian_vector_product_fn(grad, [w1, w2], damping=0.1)
    vector = torch.linspace(-1, 1, 5, dtype=torch.float64)
    hessian = torch.autograd.functional.hessian(
        lambda x: f(x[:2], x[2:]), torch.cat([w1, w2]).detach()
    )
    torch.testing.assert_close(hvp(vector), hessian @ vector + 0.1 * vector)
    torch.testing.assert_close(hvp(vector), hessian @ vector + 0.1 * vector)  # graph is reusable


def test_trust_region_step_sits_on_the_quadratic_kl_boundary():
    matrix = spd_matrix()
    gradient = torch.ones(6, dtype=torch.float64)
    result = trust_region_step(gradient, lambda v: matrix @ v, max_kl=0.01, cg_iters=10)
    assert 0.5 * result.step @ matrix @ result.step == pytest.approx(0.01, rel=1e-6)
    assert result.quadratic_kl == pytest.approx(0.01, rel=1e-6)
    # direction is the natural gradient
    natural = torch.linalg.solve(matrix, gradient)
    cosine = result.step @ natural / (result.step.norm() * natural.norm())
    assert float(cosine) > 0.9999
    assert result.expected_improvement == pytest.approx(float(gradient @ result.step))


def test_trust_region_step_scales_by_the_given_quadratic_form():
    matrix = spd_matrix()
    gradient = torch.ones(6, dtype=torch.float64)
    products = []

    def product(v):
        products.append(v)
        return matrix @ v

    default = trust_region_step(gradient, product, max_kl=0.01, cg_iters=4)
    calls_with_product = len(products)
    products.clear()
    given = trust_region_step(
        gradient, product, max_kl=0.01, cg_iters=4, quadratic_form=lambda v: v @ matrix @ v
    )
    torch.testing.assert_close(given.step, default.step)
    assert len(products) == calls_with_product - 1  # the scale needs no extra product
    # a different quadratic form changes the scale: step ∝ 1/sqrt(curvature)
    doubled = trust_region_step(
        gradient, product, max_kl=0.01, cg_iters=4, quadratic_form=lambda v: 2 * v @ matrix @ v
    )
    torch.testing.assert_close(doubled.step, default.step / 2**0.5)


def test_line_search_rejects_fractions_that_break_the_kl_bound():
    calls = []

    def evaluate(fraction):
        calls.append(fraction)
        return fraction, 0.03 * fraction**2  # always improves, KL too big for fractions > 0.577

    result = backtracking_line_search(
        evaluate, objective_before=0.0, max_kl=0.01, backtrack_ratio=0.8
    )
    assert result.accepted
    assert calls[:3] == pytest.approx([1.0, 0.8, 0.64])
    assert result.step_fraction == pytest.approx(0.8**3)  # 0.512: first one with KL <= 0.01
    assert result.kl <= 0.01


def test_line_search_rejects_steps_that_do_not_improve():
    result = backtracking_line_search(
        lambda f: (-f, 0.0), objective_before=0.0, max_kl=0.01, max_steps=5
    )
    assert not result.accepted and result.step_fraction == 0.0 and result.evaluations == 5
    nan_result = backtracking_line_search(
        lambda f: (math.nan, 0.0), objective_before=0.0, max_kl=0.01, max_steps=3
    )
    assert not nan_result.accepted


def test_flatten_roundtrip_and_errors():
    tensors = [torch.zeros(2, 3), torch.ones(4)]
    vector = torch.arange(10.0)
    parts = unflatten(vector, tensors)
    assert [p.shape for p in parts] == [(2, 3), (4,)]
    torch.testing.assert_close(flatten(parts), vector)
    with pytest.raises(ValueError, match="elements"):
        unflatten(torch.zeros(3), tensors)
    with pytest.raises(ValueError, match="backtrack_ratio"):
        backtracking_line_search(lambda f: (f, 0.0), 0.0, 0.01, backtrack_ratio=1.0)
