"""Closed-form derivative products of the Gaussian MLP policy, one parameter set per task.

MAML-TRPO multiplies the Hessian of the post-adaptation KL by a vector about
eleven times per meta-update (conjugate gradient). Through autograd each
product rebuilds and walks a double-backward graph of the whole adaptation;
here the products are written out for :class:`~metarl.core.policy.GaussianMLPPolicy`
(tanh or ReLU MLP mean, state-independent log-std) on top of one cached forward
pass:

- :class:`TaskMLP`: the MLP evaluated for ``T`` parameter sets on ``T`` batches
  of observations, keeping every layer's input and the nonlinearity's slope
  (``1 - tanh²``, or ReLU's 0/1 step, whose own derivative is 0 almost
  everywhere, so ReLU networks skip the slope's derivative terms). Its methods are
  the three linear maps every product is made of: :meth:`TaskMLP.jvp`
  (parameter tangent -> mean tangent, forward mode), :meth:`TaskMLP.vjp` (mean
  cotangent -> parameter cotangent, reverse mode) and :meth:`TaskMLP.vjp_tangent`
  (the directional derivative of the reverse pass: forward over reverse).
- :class:`LikelihoodLossHessian`: gradient and Hessian-vector products of the
  inner-loop policy-gradient loss (``vpg`` or ``lvc``) of every task, i.e. of
  ``sum_n c_n log π(a_n|s_n)`` or ``sum_n c_n π(a_n|s_n)/π_old(a_n|s_n)``.
- :class:`GaussianFisher`: products with the Hessian of
  ``sum_n w_n KL(π_old(.|s_n) || π(.|s_n))`` at ``π = π_old`` (the Fisher
  ``J_μ^T diag(w/σ²) J_μ`` plus ``2 sum_n w_n`` on the log-std), and its
  quadratic form.

Everything runs without autograd (callers wrap it in ``torch.no_grad``);
per product the cost is a few batched matrix products per layer (a
Hessian-vector product of the loss: 6 products the size of the forward pass's
hidden layer, a Fisher product: 4). Parameter tangents and cotangents are
:data:`~metarl.core.policy.Params` dicts with a leading task dimension, like
per-task parameters (``name -> [tasks, *parameter shape]``).

References: Pearlmutter 1994 (fast exact Hessian-vector products); Martens
2010 / Schraudolph 2002 (Gauss-Newton products); Schulman et al. 2015 (TRPO,
Fisher-vector products of the Gaussian policy).
"""

from __future__ import annotations

import torch

from metarl.core.policy import LOG_2PI, GaussianMLPPolicy, Params


def _weight(index: int) -> str:
    return f"layers.{index}.weight"


def _bias(index: int) -> str:
    return f"layers.{index}.bias"


class TaskMLP:
    """The policy's mean network for ``T`` parameter sets, with its forward pass cached.

    Args:
        policy: the module (only its structure is used).
        task_params: per-task parameters ``[tasks, ...]`` (detached, or under no_grad).
        observations: ``[tasks, ..., obs_dim]``; flattened to ``[tasks, N, obs_dim]``.
    """

    def __init__(
        self, policy: GaussianMLPPolicy, task_params: Params, observations: torch.Tensor
    ) -> None:
        self.num_layers = len(policy.layers)
        self.relu = policy.nonlinearity == "relu"
        self.num_tasks = observations.shape[0]
        self.task_params = {name: value.detach() for name, value in task_params.items()}
        obs = observations.reshape(self.num_tasks, -1, observations.shape[-1])  # [T, N, obs]
        # Each layer's input is stored with a trailing column of ones, ``[x, 1]``, so that
        # one matrix product applies weight and bias (``[x, 1] [W, b]^T``) and gives the
        # gradients of both (``e^T [x, 1] = [e^T x, sum e]``) without extra passes.
        self.inputs_ones: list[torch.Tensor] = [_with_ones(obs)]  # layer l: [T, N, in + 1]
        self.inputs: list[torch.Tensor] = []  # layer l's input x (a view): [T, N, in]
        self.weights: list[torch.Tensor] = []  # layer l: [T, out, in]
        self.slopes: list[torch.Tensor] = []  # hidden layer l: 1 - tanh^2 or z > 0, [T, N, out]
        for index in range(self.num_layers):
            weight = task_params[_weight(index)].detach()  # [T, out, in]
            self.weights.append(weight)
            x_ones = self.inputs_ones[index]
            self.inputs.append(x_ones[..., :-1])
            z = torch.bmm(x_ones, _append_bias(weight, task_params[_bias(index)]).transpose(1, 2))
            if index < self.num_layers - 1:  # z: [T, N, out]
                x_ones = z.new_empty(*z.shape[:-1], z.shape[-1] + 1)
                x_ones[..., -1] = 1.0
                self.inputs_ones.append(x_ones)
                if self.relu:
                    torch.clamp(z, min=0.0, out=x_ones[..., :-1])
                    self.slopes.append((z > 0).to(z.dtype))  # ReLU's slope: 1 where z > 0
                else:
                    x = torch.tanh(z, out=x_ones[..., :-1])
                    self.slopes.append(torch.mul(x, x).neg_().add_(1.0))  # 1 - tanh²
        self.mean = z  # [T, N, act]
        self.log_std = task_params["log_std"].detach()  # [T, act]
        self._buffers: dict[tuple[str, int], torch.Tensor] = {}

    def _workspace(self, kind: str, index: int) -> torch.Tensor:
        """A buffer shaped like hidden layer ``index``'s output, allocated once and reused.

        Products write their large intermediates ``[T, N, hidden]`` into these
        instead of fresh tensors: allocating (and page-faulting) tens of
        megabytes per operation costs about as much as the arithmetic.
        """
        key = (kind, index)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = torch.empty_like(self.slopes[index])
        return buffer

    def jvp(self, tangent: Params) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mean tangent for a tangent of the layer parameters (forward mode).

        Args:
            tangent: per-task tangents of the layer parameters (a ``log_std``
                entry is ignored: the mean does not depend on it).

        Returns:
            The mean tangent ``[T, N, act]`` and the tangents of the hidden
            layers' outputs (``[T, N, hidden_l]`` each), which
            :meth:`vjp_tangent` needs. The hidden tangents live in this
            object's workspace: valid until the next :meth:`jvp`.
        """
        hidden_tangents: list[torch.Tensor] = []
        x_dot: torch.Tensor | None = None
        for index in range(self.num_layers):
            layer_dot = _append_bias(tangent[_weight(index)], tangent[_bias(index)])
            hidden = index < self.num_layers - 1
            out = self._workspace("x_dot", index) if hidden else None
            z_dot = torch.bmm(
                self.inputs_ones[index], layer_dot.transpose(1, 2), out=out
            )  # [T, N, out]
            if x_dot is not None:
                z_dot.baddbmm_(x_dot, self.weights[index].transpose(1, 2))
            if hidden:
                x_dot = z_dot.mul_(self.slopes[index])
                hidden_tangents.append(x_dot)
        return z_dot, hidden_tangents

    def vjp(self, cotangent: torch.Tensor) -> Params:
        """Layer-parameter cotangent for a mean cotangent ``[T, N, act]`` (reverse mode).

        Returns:
            The per-task cotangents of the layer parameters (no ``log_std``).
        """
        return self._vjp(cotangent, keep=False)[0]

    def vjp_with_intermediates(
        self, cotangent: torch.Tensor
    ) -> tuple[Params, list[torch.Tensor], list[torch.Tensor]]:
        """:meth:`vjp`, also returning what :meth:`vjp_tangent` needs at this cotangent.

        Returns:
            The layer cotangents, the cotangents of each layer's pre-activation
            (``[T, N, out_l]``, input layer first) and of each hidden layer's
            output (``[T, N, hidden_l]``); freshly allocated, kept by the caller.
        """
        return self._vjp(cotangent, keep=True)

    def _vjp(
        self, cotangent: torch.Tensor, keep: bool
    ) -> tuple[Params, list[torch.Tensor], list[torch.Tensor]]:
        grads: Params = {}
        pre_activation: list[torch.Tensor] = []
        hidden_output: list[torch.Tensor] = []
        e = cotangent
        for index in reversed(range(self.num_layers)):
            pre_activation.append(e)
            layer_grad = torch.bmm(e.transpose(1, 2), self.inputs_ones[index])  # [T, out, in+1]
            grads[_weight(index)], grads[_bias(index)] = layer_grad[..., :-1], layer_grad[..., -1]
            if index > 0:
                out = None if keep else self._workspace("a", index - 1)
                a = torch.bmm(e, self.weights[index], out=out)  # [T, N, in]
                if keep:
                    hidden_output.append(a)
                    e = a * self.slopes[index - 1]
                else:
                    e = a.mul_(self.slopes[index - 1])
        return grads, pre_activation[::-1], hidden_output[::-1]

    def slope_terms(self, hidden_output: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """``-2 a_l x_l`` per hidden layer (``a_l``: cotangent of its output ``x_l``):
        the derivative of ``a_l (1 - x_l²)`` w.r.t. ``x_l``, for :meth:`vjp_tangent`.
        None for ReLU, whose slope is piecewise constant (derivative 0)."""
        if self.relu:
            return None
        return [
            torch.mul(a, self.inputs[index + 1]).mul_(-2.0) for index, a in enumerate(hidden_output)
        ]

    def vjp_tangent(
        self,
        pre_activation: list[torch.Tensor],
        slope_terms: list[torch.Tensor] | None,
        cotangent_tangent: torch.Tensor,
        tangent: Params,
        hidden_tangents: list[torch.Tensor],
    ) -> Params:
        """Directional derivative of :meth:`vjp` (forward over reverse).

        The parameters move along ``tangent`` and the mean cotangent along
        ``cotangent_tangent``; the result is the change of the layer-parameter
        cotangent.

        Args:
            pre_activation: from :meth:`vjp_with_intermediates` at the base point.
            slope_terms: :meth:`slope_terms` of its hidden outputs (None for ReLU).
            cotangent_tangent: ``[T, N, act]``.
            tangent: per-task tangents of the layer parameters.
            hidden_tangents: from :meth:`jvp` of ``tangent``.

        Returns:
            Per-task tangents of the layer-parameter cotangent (no ``log_std``).
        """
        grads: Params = {}
        e_dot = cotangent_tangent
        for index in reversed(range(self.num_layers)):
            e = pre_activation[index]
            layer_grad = torch.bmm(
                e_dot.transpose(1, 2), self.inputs_ones[index]
            )  # [T, out, in + 1]
            weight_grad = layer_grad[..., :-1]
            if index > 0:
                weight_grad.baddbmm_(e.transpose(1, 2), hidden_tangents[index - 1])
            grads[_weight(index)], grads[_bias(index)] = weight_grad, layer_grad[..., -1]
            if index > 0:
                a_dot = torch.bmm(
                    e_dot, self.weights[index], out=self._workspace("a_dot", index - 1)
                )  # [T, N, in]
                a_dot.baddbmm_(e, tangent[_weight(index)])
                e_dot = a_dot.mul_(self.slopes[index - 1])
                if slope_terms is not None:
                    e_dot.addcmul_(slope_terms[index - 1], hidden_tangents[index - 1])
        return grads


def _with_ones(x: torch.Tensor) -> torch.Tensor:
    """``[x, 1]``: ``x`` with a trailing column of ones  # [..., d + 1]."""
    return torch.cat([x, x.new_ones(*x.shape[:-1], 1)], dim=-1)


def _append_bias(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``[W, b]``: the bias as an extra input column of the weight  # [T, out, in + 1]."""
    return torch.cat([weight, bias.unsqueeze(-1)], dim=-1)


def _log_prob_terms(
    mlp: TaskMLP, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``q = (a - μ)/σ²``, ``z² = (a - μ)²/σ²``, ``1/σ²`` and ``log π(a|s)`` of every step."""
    inverse_variance = torch.exp(-2.0 * mlp.log_std).unsqueeze(1)  # [T, 1, act]
    difference = actions.reshape(mlp.mean.shape) - mlp.mean  # [T, N, act]
    q = difference * inverse_variance  # [T, N, act]
    z_sq = difference * q  # [T, N, act]
    log_probs = (-0.5 * z_sq - mlp.log_std.unsqueeze(1) - 0.5 * LOG_2PI).sum(dim=-1)  # [T, N]
    return q, z_sq, inverse_variance, log_probs


class LikelihoodLossHessian:
    """Gradient and Hessian-vector products of ``L_i = sum_n c_n f_n`` per task.

    ``f_n = log π(a_n|s_n)`` (``likelihood_ratio=False``, the ``vpg`` inner loss
    with ``c_n = -A_n m_n / count``) or ``f_n = π(a_n|s_n) / π_old(a_n|s_n)``
    (``likelihood_ratio=True``, ``lvc``; ``old_log_probs`` default: the current
    log-probabilities, i.e. a ratio of 1 with its derivatives). The Hessian is
    the exact one, including the network's second derivatives.

    Args:
        mlp: the network at the parameters the derivatives are taken at.
        actions: ``[T, ..., act]`` (same leading shape as the observations).
        coefficients: ``c_n`` ``[T, ...]``.
        likelihood_ratio: see above.
        old_log_probs: ``[T, ...]`` log-probabilities of the sampling policy.
    """

    def __init__(
        self,
        mlp: TaskMLP,
        actions: torch.Tensor,
        coefficients: torch.Tensor,
        likelihood_ratio: bool,
        old_log_probs: torch.Tensor | None = None,
    ) -> None:
        self.mlp = mlp
        self.q, self.z_sq, self.inverse_variance, log_probs = _log_prob_terms(mlp, actions)
        self.log_probs = log_probs  # [T, N], log π(a_n|s_n) at the base point
        coefficients = coefficients.reshape(log_probs.shape)  # [T, N]
        if likelihood_ratio and old_log_probs is not None:
            ratio = torch.exp(log_probs - old_log_probs.reshape(log_probs.shape))  # [T, N]
            coefficients = coefficients * ratio
        self.likelihood_ratio = likelihood_ratio
        self.c = coefficients.unsqueeze(-1)  # [T, N, 1]
        self.mean_grad = self.c * self.q  # [T, N, act], ∂L/∂μ
        self.log_std_grad = (self.c * (self.z_sq - 1.0)).sum(dim=1)  # [T, act]
        self._layer_grads: Params | None = None
        self._pre_activation: list[torch.Tensor] = []
        self._slope_terms: list[torch.Tensor] | None = []

    def _prepare_products(self) -> None:
        """Cache the reverse pass at the base point (once, on the first product)."""
        layer_grads, self._pre_activation, hidden_output = self.mlp.vjp_with_intermediates(
            self.mean_grad
        )
        self._layer_grads = layer_grads
        self._slope_terms = self.mlp.slope_terms(hidden_output)

    def gradient(self) -> Params:
        """``∇L_i`` of every task (per-task tensors, ``log_std`` included)."""
        layer_grads = self._layer_grads
        if layer_grads is None:
            layer_grads = self.mlp.vjp(self.mean_grad)
        return {**layer_grads, "log_std": self.log_std_grad}

    def hessian_product(self, tangent: Params) -> Params:
        """``∇²L_i v_i`` of every task for the per-task tangents ``tangent``."""
        if self._layer_grads is None:
            self._prepare_products()
        mean_dot, hidden_tangents = self.mlp.jvp(tangent)  # [T, N, act]
        log_std_dot = tangent["log_std"].unsqueeze(1)  # [T, 1, act]
        c, q, z_sq = self.c, self.q, self.z_sq
        # second derivatives of log π: ∂²/∂μ² = -1/σ², ∂²/∂μ∂logσ = -2q, ∂²/∂logσ² = -2z²
        mean_grad_dot = c * (-self.inverse_variance * mean_dot - 2.0 * q * log_std_dot)
        log_std_grad_dot = (c * (-2.0 * q * mean_dot - 2.0 * z_sq * log_std_dot)).sum(dim=1)
        if self.likelihood_ratio:  # the ratio's Hessian adds ∇log π ∇log π^T
            directional = (q * mean_dot + (z_sq - 1.0) * log_std_dot).sum(
                dim=-1, keepdim=True
            )  # [T, N, 1]
            weighted = c * directional
            mean_grad_dot = mean_grad_dot + weighted * q
            log_std_grad_dot = log_std_grad_dot + (weighted * (z_sq - 1.0)).sum(dim=1)
        layer = self.mlp.vjp_tangent(
            self._pre_activation, self._slope_terms, mean_grad_dot, tangent, hidden_tangents
        )
        return {**layer, "log_std": log_std_grad_dot}


class GaussianFisher:
    """Hessian of ``sum_n w_n KL(π_old(.|s_n) || π(.|s_n))`` at ``π = π_old``, per task.

    With a state-independent log-std the Fisher of the diagonal Gaussian is
    ``J_μ^T diag(w_n / σ²) J_μ`` on the network's parameters and ``2 sum_n w_n``
    on each log-std entry, with no cross terms.

    Args:
        mlp: the network at π_old's parameters.
        weights: ``w_n`` ``[T, ...]`` (e.g. mask / count / tasks for a mean KL).
    """

    def __init__(self, mlp: TaskMLP, weights: torch.Tensor) -> None:
        self.mlp = mlp
        weights = weights.reshape(mlp.mean.shape[:2])  # [T, N]
        self.mean_scale = weights.unsqueeze(-1) * torch.exp(-2.0 * mlp.log_std).unsqueeze(1)
        self.log_std_scale = 2.0 * weights.sum(dim=1, keepdim=True)  # [T, 1]

    def product(self, tangent: Params) -> Params:
        """``F_i v_i`` of every task for the per-task tangents ``tangent``."""
        mean_dot, _ = self.mlp.jvp(tangent)
        layer = self.mlp.vjp(mean_dot.mul_(self.mean_scale))
        return {**layer, "log_std": self.log_std_scale * tangent["log_std"]}

    def quadratic_form(self, tangent: Params) -> torch.Tensor:
        """``v_i^T F_i v_i`` of every task  # [T] (forward mode only)."""
        mean_dot, _ = self.mlp.jvp(tangent)
        log_std_dot = tangent["log_std"]
        return (self.mean_scale * mean_dot * mean_dot).sum(dim=(1, 2)) + (
            self.log_std_scale * log_std_dot * log_std_dot
        ).sum(dim=1)
