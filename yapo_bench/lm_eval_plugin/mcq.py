"""Multiple-choice scoring shared by our lm-eval task families, built to measure knowledge, not position bias.

- cloze (default): the options' own text is scored after the question; `acc`, `acc_norm` (length-normalised
  by characters, like lm-eval's) and `p_gold`, the probability of the gold option among the options.
- letter: the options are listed as A, B, C... and the letter is scored; every item is asked once per
  cyclic rotation of its options (taken from a canonical, text-sorted order, so shuffling an item's options
  changes nothing) and the metrics average over the rotations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

SCORINGS = ("cloze", "letter")
LETTERS = "ABCDEFGHIJ"


def mcq_docs(question: str, options: Sequence[str], gold: int, scoring: str, extra: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """lm-eval docs for one item: one cloze doc, or one letter doc per cyclic rotation of the options."""
    if scoring == "cloze":
        yield {**extra, "prompt": question, "choices": list(options), "gold": gold, "rotation": 0}
        return
    if scoring != "letter":
        raise ValueError(f"scoring: {scoring!r}; expected one of {', '.join(SCORINGS)}")
    if len(options) > len(LETTERS):
        raise ValueError(f"options: {len(options)} options; letter scoring supports at most {len(LETTERS)}")
    canonical = sorted(range(len(options)), key=lambda i: options[i])
    for rotation in range(len(options)):
        order = canonical[rotation:] + canonical[:rotation]
        listing = "\n".join(f"{LETTERS[k]}. {options[i]}" for k, i in enumerate(order))
        yield {**extra, "prompt": f"{question}\n{listing}\nAnswer:", "choices": list(LETTERS[: len(options)]),
               "gold": order.index(gold), "rotation": rotation}


def process_mcq(doc: dict[str, Any], results: Sequence[tuple[float, bool]]) -> dict[str, float]:
    """acc, acc_norm and p_gold from the per-option log-likelihoods lm-eval hands back."""
    logliks = [float(r[0]) for r in results]
    gold = int(doc["gold"])
    normalised = [ll / max(1, len(choice)) for ll, choice in zip(logliks, doc["choices"])]
    top = max(logliks)
    weights = [math.exp(ll - top) for ll in logliks]
    return {
        "acc": float(max(range(len(logliks)), key=logliks.__getitem__) == gold),
        "acc_norm": float(max(range(len(normalised)), key=normalised.__getitem__) == gold),
        "p_gold": weights[gold] / sum(weights),
    }
