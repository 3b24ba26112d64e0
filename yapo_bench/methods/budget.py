"""The training budget a run config or yapo_steered's `train=` gives every method (a method's `spec` takes what it
uses of it: the mean-difference methods train nothing and use none of it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingBudget:
    steps: int = 200
    lr: float = 5e-4
    batch_size: int = 4
    seed: int = 0
    warmup_steps: int = 20
    # a run config's `training.seeds`: every learned vector is trained once per seed (`seed` is then the first);
    # None: the one `seed`. A method's spec reads `seed` only, so one seed trains what it always did
    seeds: tuple[int, ...] | None = None

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
        if self.seeds is not None:
            seeds = self.seeds
            if (not isinstance(seeds, (list, tuple)) or not seeds or len(set(seeds)) != len(seeds)
                    or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
                raise ValueError(f"training.seeds: {seeds!r}; expected a non-empty list of distinct integers >= 0, "
                                 "e.g. [0, 1, 2]")
            object.__setattr__(self, "seeds", tuple(seeds))  # frozen: hashable, as YAML's list is not
            object.__setattr__(self, "seed", seeds[0])

    @property
    def all_seeds(self) -> tuple[int, ...]:
        """The seeds every learned vector is trained with, in the config's order."""
        return self.seeds or (self.seed,)

    def for_seed(self, seed: int) -> TrainingBudget:
        """This budget with one seed: what one training of a learned vector reads."""
        return dataclasses.replace(self, seed=seed, seeds=None)
