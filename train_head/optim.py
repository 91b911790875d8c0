"""AdamW with weight decay on weight matrices only, and the learning rate as a function of the step
(linear warmup, then cosine down to min_lr), in the manner of nanoGPT's train.py."""
import math
from dataclasses import dataclass

import torch
from torch import nn

from data.errors import UserError, require

# Normalisation gains and shifts are never decayed, whatever their shape: the seed's
# LayerNorm([32, rows, cols]) has a 3-D weight that nanoGPT's plain ndim >= 2 rule would decay.
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._BatchNorm)


@dataclass
class OptimSettings:
    lr: float = 1e-3  # peak learning rate, reached at the end of warmup
    min_lr: float = 1e-4  # floor of the cosine, held after max_steps
    warmup_steps: int = 100
    max_steps: int = 5000  # where the cosine reaches min_lr (nanoGPT's lr_decay_iters)
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)  # a checkpoint stores it as a list
        require(self.max_steps >= 1, "--steps", self.max_steps, "at least 1")
        require(0 < self.lr <= 10, "--lr", self.lr, "a learning rate above 0 (and at most 10)")
        if not 0 <= self.min_lr <= self.lr:
            raise UserError(f"learning rates --lr {self.lr}, min_lr {self.min_lr}: need 0 <= min_lr <= lr")
        if not 0 <= self.warmup_steps < self.max_steps:
            raise UserError(f"{self.warmup_steps} warmup steps: must be >= 0 and below --steps {self.max_steps}")


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW parameter groups: weight tensors (ndim >= 2, not a norm's) decayed, the rest not."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False)}
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2 and id(p) not in norm_params]
    keep = [p for p in params if p.ndim < 2 or id(p) in norm_params]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, s: OptimSettings, device_type: str = "cpu") -> torch.optim.AdamW:
    """AdamW over `decay_groups`, fused on CUDA and CPUs (one kernel over every tensor: on a CPU 0.5-0.8 ms a
    step for the demo's 2M-parameter head against 4.5-5.9 for torch's default loop); its lr is set each step
    with `set_lr`."""
    def adamw(**fused) -> torch.optim.AdamW:  # fresh groups each time: a failed constructor may have filled them
        return torch.optim.AdamW(decay_groups(model, s.weight_decay), lr=lr_at(0, s), betas=s.betas, **fused)

    if device_type in ("cuda", "cpu"):
        try:
            return adamw(fused=True)
        except RuntimeError:  # a torch (pyproject allows >= 2.4) without the fused kernel for this device
            pass
    return adamw()


def lr_at(step: int, s: OptimSettings) -> float:
    """Learning rate for `step` (0-based): linear warmup to lr, cosine to min_lr, then min_lr."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / (s.warmup_steps + 1)
    if step >= s.max_steps:
        return s.min_lr
    progress = (step - s.warmup_steps) / (s.max_steps - s.warmup_steps)
    return s.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (s.lr - s.min_lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
