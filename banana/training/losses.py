"""Two optional additions to the paper's loss (issue 12), both off by default (the paper's recipe):

* ``loss_normalisation="per-task"`` - the batch loss is a sum over example kinds (generation and
  each vision task) of ``share_k * L_k / sg(L_k)``, where ``L_k`` is the kind's mean loss in the
  batch, ``sg`` stops the gradient and ``share_k`` is the kind's fraction of the batch. Each kind
  then pulls with a gradient of the same scale (``grad log L_k``) whatever its loss magnitude -
  segmentation targets are flat colours with a tiny MSE, depth walks and normals are not - while
  the mixing ratio still decides how much of the batch each kind is. Stateless, so resumed runs
  stay exact. ``"batch"``: the plain mean over the batch.
* ``task_loss_weight`` - adds ``weight *`` a loss in the task's own space on the model's x0
  prediction of vision rows (:func:`task_space_loss`): segmentation cross-entropy over the
  target's palette colours with logits ``-||y - c_k||^2 / tau``; normals ``1 - cos`` between the
  predicted and true normal; depth, the L1 between log-depths after a *soft* decode of the cube
  walk (a softmax over the walk's segments of the squared distance, so the decode has a gradient).
  Pixel generators only (the x0 prediction must be an image).
"""

from __future__ import annotations

import torch

__all__ = ["LOSS_NORMALISATIONS", "combine_losses", "x0_prediction", "task_space_loss", "soft_walk_parameter"]

LOSS_NORMALISATIONS = ("batch", "per-task")
#: Temperature of the segmentation logits (model-range colours: squared distances between palette colours are ~0.5-12).
SEGMENTATION_TAU = 0.25
#: Temperature of the soft walk decode (squared distances to the walk's segments).
WALK_TAU = 0.01
#: Walk parameters at or above this are "beyond range" (sky): no log-depth there.
WALK_END = 1.0 - 1e-4


def combine_losses(per_example: torch.Tensor, kinds, mode: str) -> torch.Tensor:
    """The scalar batch loss from per-example losses ``[B]`` and their kinds (see the module docstring)."""
    if mode not in LOSS_NORMALISATIONS:
        raise ValueError(f"loss_normalisation must be one of {LOSS_NORMALISATIONS}, got {mode!r}")
    if mode == "batch":
        return per_example.mean()
    kinds = [str(k) for k in kinds]
    total = per_example.new_zeros(())
    for kind in sorted(set(kinds)):
        selected = torch.as_tensor([k == kind for k in kinds], device=per_example.device)
        mean = per_example[selected].mean()
        total = total + selected.float().mean() * mean / mean.detach().clamp_min(1e-12)
    return total


def x0_prediction(scheduler, output: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The model's clean-sample estimate from its output, whatever the prediction type."""
    kind = scheduler.config.prediction_type
    if kind == "sample":
        return output
    alpha = scheduler.alphas_cumprod.to(output.device, output.dtype)[timesteps].view(-1, 1, 1, 1)
    if kind == "epsilon":
        return (noisy - (1 - alpha).sqrt() * output) / alpha.sqrt()
    if kind == "v_prediction":
        return alpha.sqrt() * noisy - (1 - alpha).sqrt() * output
    raise ValueError(f"unknown prediction type {kind!r}")


def soft_walk_parameter(rgb01: torch.Tensor, vertices: torch.Tensor, tau: float = WALK_TAU) -> torch.Tensor:
    """Differentiable decode of a colour walk: ``rgb01 [N, 3]`` -> walk parameter ``t [N]`` in [0, 1]
    (segments share ``t`` equally, as in :class:`banana.codecs.depth.ColorPath`)."""
    start, end = vertices[:-1], vertices[1:]                       # [S, 3]
    direction = end - start
    u = ((rgb01[:, None, :] - start) * direction).sum(-1) / direction.pow(2).sum(-1)   # [N, S]
    u = u.clamp(0.0, 1.0)
    nearest = start + u[..., None] * direction
    weights = torch.softmax(-(rgb01[:, None, :] - nearest).pow(2).sum(-1) / tau, dim=-1)
    steps = torch.arange(len(start), device=rgb01.device, dtype=rgb01.dtype)
    return ((steps + u) * weights).sum(-1) / len(start)


def _segmentation(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pixels, truth = pred.reshape(3, -1).T, target.reshape(3, -1).T
    colours, labels = torch.unique(truth, dim=0, return_inverse=True)   # the palette colours painted here
    logits = -(pixels[:, None, :] - colours).pow(2).sum(-1) / SEGMENTATION_TAU
    return torch.nn.functional.cross_entropy(logits, labels)


def _normals(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    valid = target.norm(dim=0) > 0.5                       # sky has no normal (the zero vector)
    if not bool(valid.any()):
        return pred.new_zeros(())
    cos = torch.nn.functional.cosine_similarity(pred, target, dim=0, eps=1e-6)
    return (1 - cos)[valid].mean()


def _depth(pred: torch.Tensor, target: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    from banana.codecs.depth import inverse_metric_warp

    t_pred = soft_walk_parameter(((pred + 1) / 2).reshape(3, -1).T, vertices)
    t_true = soft_walk_parameter(((target + 1) / 2).reshape(3, -1).T, vertices).detach()
    valid = t_true < WALK_END
    if not bool(valid.any()):
        return pred.new_zeros(())

    def log_depth(t):                                      # the codec's own inverse warp, in log metres
        return torch.log(inverse_metric_warp(t.clamp(0.0, WALK_END)) + 1e-3).float()

    return (log_depth(t_pred) - log_depth(t_true))[valid].abs().mean()


def task_space_loss(x0: torch.Tensor, target: torch.Tensor, kinds) -> torch.Tensor:
    """Per-example task-space losses ``[B]`` (0 for generation rows) of x0 predictions against the
    targets, both ``[B, 3, H, W]`` in the model range [-1, 1] (see the module docstring)."""
    from banana.codecs.depth import CUBE_PATH_VERTICES

    vertices = torch.tensor(CUBE_PATH_VERTICES, dtype=x0.dtype, device=x0.device)
    losses = []
    for pred, truth, kind in zip(x0.float(), target.float(), kinds):
        if kind == "segmentation":
            losses.append(_segmentation(pred, truth))
        elif kind == "normals":
            losses.append(_normals(pred, truth))
        elif kind == "depth":
            losses.append(_depth(pred, truth, vertices.float()))
        else:
            losses.append(pred.new_zeros(()))
    return torch.stack(losses)
