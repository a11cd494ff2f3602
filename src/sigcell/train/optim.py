"""AdamW with decoupled weight decay on weight matrices only, and the warmup + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from sigcell.train.config import OptimConfig

__all__ = ["WarmupCosine", "build_optimizer", "build_scheduler", "decay_groups"]


def decay_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed) parameters: 2-D+ weights decay; norms, biases, gains and key biases do not."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.dim() < 2 or name.endswith("gene_key_bias.weight"):
            no_decay.append(p)
        else:
            decay.append(p)
    return decay, no_decay


def build_optimizer(model: nn.Module, config: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over two parameter groups (see :func:`decay_groups`); fused on CUDA."""
    decay, no_decay = decay_groups(model)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps,
                             fused=device.type == "cuda")


class WarmupCosine:
    """LR factor: linear warmup to 1 over ``warmup`` steps, then cosine to ``min_ratio`` at ``total``.

    A plain callable object (not a lambda), so ``LambdaLR.state_dict()`` saves and restores it.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup + cosine over ``total_steps`` optimizer steps."""
    warmup = min(config.warmup_steps, total_steps)
    schedule = WarmupCosine(warmup, total_steps, config.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
