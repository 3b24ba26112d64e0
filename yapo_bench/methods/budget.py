"""The training budget a run config or yapo_steered's `train=` gives every method (a method's `spec` takes what it
uses of it: the mean-difference methods train nothing and use none of it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingBudget:
    steps: int = 200
    lr: float = 5e-4
    batch_size: int = 4
    seed: int = 0
    warmup_steps: int = 20

    def __post_init__(self) -> None:
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"training.warmup_steps: {self.warmup_steps!r}; expected an integer >= 0")
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"training.{name}: {value!r}; expected a positive integer")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"training.seed: {self.seed!r}; expected an integer")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"training.lr: {self.lr!r}; expected a positive number")
