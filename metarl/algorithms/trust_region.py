"""Trust-region machinery for TRPO-style updates: CG, Hessian-vector products, line search.

The pieces are plain functions on flat parameter vectors so that any
algorithm (MAML-TRPO, a TRPO pretraining baseline) can reuse them:

- :func:`hessian_vector_product_fn`: given a gradient that was computed with
  ``create_graph=True`` (e.g. of the KL between the old and the new policy,
  measured through MAML's adaptation), returns ``v -> H v + damping v`` by
  double backward through that graph. The graph is built once and reused by
  every conjugate-gradient iteration (``retain_graph=True``).
- :func:`conjugate_gradient`: solves ``H x = g`` with ``iters`` products.
- :func:`trust_region_step`: scales the CG direction so that the quadratic
  model of the KL equals ``max_kl``.
- :func:`backtracking_line_search`: shrinks the step geometrically until the
  objective improves AND the exact KL stays within ``max_kl``.

References: Schulman et al. 2015, "Trust Region Policy Optimization",
appendix C; Duan et al. 2016 (rllab ``ConjugateGradientOptimizer``: damping
1e-5, backtrack ratio 0.8, 15 backtracks).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch

from metarl.core.validation import check_int, check_number


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one flat vector  # [sum of numels]."""
    return torch.cat([tensor.reshape(-1) for tensor in tensors])


def unflatten(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split a flat vector into views shaped like ``like`` (inverse of :func:`flatten`)."""
    sizes = [tensor.numel() for tensor in like]
    if vector.numel() != sum(sizes):
        raise ValueError(f"vector has {vector.numel()} elements, the tensors have {sum(sizes)}")
    return [chunk.view_as(tensor) for chunk, tensor in zip(vector.split(sizes), like, strict=True)]


def hessian_vector_product_fn(
    gradient: Sequence[torch.Tensor], params: Sequence[torch.Tensor], damping: float = 0.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> (∂gradient/∂params) v + damping v`` by double backward.

    Args:
        gradient: ``∇f`` w.r.t. ``params``, computed with ``create_graph=True``.
        params: the tensors the gradient was taken against.
        damping: Tikhonov damping added to the product (keeps CG well posed).

    Returns:
        A function of a flat vector ``[n]`` returning a flat vector ``[n]``.
    """
    check_number("damping", damping, 0)
    flat_gradient = flatten(gradient)
    params = list(params)

    def product(vector: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(flat_gradient @ vector.detach(), params, retain_graph=True)
        return flatten(grads) + damping * vector

    return product


def conjugate_gradient(
    matrix_vector_product: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
) -> torch.Tensor:
    """Approximately solve ``A x = b`` for symmetric positive (semi-)definite ``A``.

    Args:
        matrix_vector_product: ``v -> A v`` on flat vectors.
        b: right-hand side ``[n]``.
        iters: maximum number of products (TRPO: 10).
        residual_tol: stop once ``|r|^2`` falls below this.

    Returns:
        ``x  # [n]`` (starting from 0).
    """
    check_int("iters", iters, 1)
    x = torch.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    residual_sq = residual @ residual
    for _ in range(iters):
        if residual_sq <= residual_tol:
            break
        product = matrix_vector_product(direction)
        alpha = residual_sq / (direction @ product)
        x = x + alpha * direction
        residual = residual - alpha * product
        new_residual_sq = residual @ residual
        direction = residual + (new_residual_sq / residual_sq) * direction
        residual_sq = new_residual_sq
    return x


@dataclasses.dataclass(frozen=True)
class TrustRegionStep:
    """A full trust-region step and its predicted effect."""

    step: torch.Tensor  # [n]
    """The step ``sqrt(2 δ / (d^T H d)) d`` along the CG direction ``d``."""
    expected_improvement: float
    """First-order predicted objective change ``g^T step``."""
    quadratic_kl: float
    """``0.5 step^T H step`` (equals ``max_kl`` up to round-off)."""


def trust_region_step(
    gradient: torch.Tensor,
    hessian_vector_product: Callable[[torch.Tensor], torch.Tensor],
    max_kl: float,
    cg_iters: int = 10,
    quadratic_form: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> TrustRegionStep:
    """Natural-gradient step for maximising an objective with gradient ``gradient``.

    Solves ``H d = g`` by CG and scales ``d`` to the boundary of the quadratic
    trust region ``0.5 s^T H s <= max_kl``.

    Args:
        gradient: ``g  # [n]``, gradient of the objective to maximise.
        hessian_vector_product: ``v -> H v`` of the KL (damped).
        max_kl: trust-region radius δ (> 0).
        cg_iters: conjugate-gradient iterations.
        quadratic_form: ``v -> v^T H v`` (damped, the same ``H``) when it is
            cheaper than a product (e.g. forward mode only); default
            ``v @ hessian_vector_product(v)``.

    Returns:
        The step (zero if the gradient or the curvature vanishes).
    """
    check_number("max_kl", max_kl, 0, low_open=True)
    direction = conjugate_gradient(hessian_vector_product, gradient, cg_iters)
    if quadratic_form is None:
        curvature = float(direction @ hessian_vector_product(direction))
    else:
        curvature = float(quadratic_form(direction))
    if not math.isfinite(curvature) or curvature <= 0.0:
        return TrustRegionStep(torch.zeros_like(gradient), 0.0, 0.0)
    scale = math.sqrt(2.0 * max_kl / curvature)
    step = scale * direction
    return TrustRegionStep(step, float(gradient @ step), 0.5 * scale * scale * curvature)


@dataclasses.dataclass(frozen=True)
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`."""

    accepted: bool
    """Whether some fraction of the step passed both checks."""
    step_fraction: float
    """Fraction of the full step accepted (0.0 if none)."""
    objective: float
    """Objective at the accepted point (the objective before, if none)."""
    kl: float
    """KL at the accepted point (0.0 if none)."""
    evaluations: int
    """How many candidate points were evaluated."""


def backtracking_line_search(
    evaluate: Callable[[float], tuple[float, float]],
    objective_before: float,
    max_kl: float,
    backtrack_ratio: float = 0.8,
    max_steps: int = 15,
) -> LineSearchResult:
    """Try fractions ``1, r, r^2, ...`` of a step until it improves the objective within the KL bound.

    Args:
        evaluate: ``fraction -> (objective, kl)`` at ``params + fraction * step``
            (the objective is maximised; the KL is the exact one, not the
            quadratic model).
        objective_before: objective at the current parameters.
        max_kl: the bound the KL must not exceed.
        backtrack_ratio: ``r`` in (0, 1).
        max_steps: number of fractions to try.

    Returns:
        The first fraction with ``objective > objective_before`` and
        ``kl <= max_kl`` (both finite), or ``accepted=False``.
    """
    check_number("backtrack_ratio", backtrack_ratio, 0, 1, low_open=True, high_open=True)
    check_int("max_steps", max_steps, 1)
    for attempt in range(max_steps):
        fraction = backtrack_ratio**attempt
        objective, kl = evaluate(fraction)
        if (
            math.isfinite(objective)
            and math.isfinite(kl)
            and objective > objective_before
            and kl <= max_kl
        ):
            return LineSearchResult(True, fraction, objective, kl, attempt + 1)
    return LineSearchResult(False, 0.0, objective_before, 0.0, max_steps)
