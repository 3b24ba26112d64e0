"""Preference pairs for a target country from culture items, with splits by question id.

chosen = the country's option (MCQ form) or its reference answer (open form); rejected, by `rejected`:
  sibling  every other option but the Western control, one pair each: the sibling countries' answers (the
           intra-language confusions), or plain distractors where options answer for no country
  western  the Western control option
  others   sibling + western
  model    the model's own answer, as the paper did: the item's `model_answers` for that model when the data has
           them (the paper's dataset ships them), else its greedy answer, sampled (needs a sampler)
Pairs whose chosen and rejected are equal are never made. A question's localized and non-localized
variants always land in the same split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from yapo_bench.data.culture import WESTERN, CultureItem
from yapo_bench.pairs import PairSet, PreferencePair

FORMS = ("mcq", "open")
REJECTED = ("sibling", "western", "others", "model")
SPLITS = ("train", "test", "all")
LOCALIZATION_CHOICES = ("localized", "nonlocalized", "both")


@dataclass(frozen=True)
class CulturePairSpec:
    country: str
    split: str = "train"
    form: str = "mcq"
    rejected: str = "sibling"
    localization: str = "both"
    test_fraction: float = 0.25
    seed: int = 0
    model: str | None = None  # whose answers `rejected: model` reads from the data (matched by culture_convert.model_key)

    def __post_init__(self) -> None:
        for field, allowed in (("split", SPLITS), ("form", FORMS), ("rejected", REJECTED),
                               ("localization", LOCALIZATION_CHOICES)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field}: {getattr(self, field)!r}; expected one of {', '.join(allowed)}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction: {self.test_fraction!r}; expected a number in (0, 1)")

    def describe(self) -> str:
        return (f"country={self.country} split={self.split} form={self.form} rejected={self.rejected} "
                f"localization={self.localization} test_fraction={self.test_fraction} seed={self.seed}")


def split_question_ids(question_ids: Sequence[str], test_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(train, test) question ids: a seeded shuffle of the sorted distinct ids; at least one of each when
    there are two or more."""
    ids = sorted(set(question_ids))
    order = [ids[i] for i in np.random.default_rng([seed, 11]).permutation(len(ids))]
    n_test = min(len(ids) - 1, max(1, round(len(ids) * test_fraction))) if len(ids) > 1 else 0
    return set(order[n_test:]), set(order[:n_test])


def _rejected_options(item: CultureItem, kind: str) -> list[str]:
    siblings = [o for i, (o, c) in enumerate(zip(item.options, item.option_country)) if i != item.gold_index and c != WESTERN]
    western = [item.option_for(WESTERN)] if item.option_for(WESTERN) else []
    return {"sibling": siblings, "western": western, "others": siblings + western}[kind]


def _model_answer(item: CultureItem, spec: CulturePairSpec) -> str | None:
    """The data's own answer of `spec.model` to `item` in `spec.form` (an MCQ answer naming an option by its
    number, letter or \\boxed{k} becomes that option's text, the form chosen responses take), or None."""
    from yapo_bench.data.culture_convert import model_key, option_index_of

    if spec.model is None or not item.model_answers:
        return None
    answer = item.model_answers.get(model_key(spec.model), {}).get(spec.form)
    if answer is None or spec.form == "open":
        return answer
    index = option_index_of(answer, list(item.options))
    return item.options[index] if index is not None and 0 <= index < len(item.options) else answer


def culture_pair_rows(items: Sequence[CultureItem], spec: CulturePairSpec,
                      sample: Callable[[str], str] | None = None) -> tuple[list[dict[str, str]], list[str]]:
    """Pair rows (prompt, chosen, rejected + the item they came from) for `spec.country` in the requested
    split, and the items skipped with why. `sample(prompt)` gives the model's own answer for 'model'."""
    mine = [i for i in items if i.country == spec.country]
    if not mine:
        countries = sorted({i.country for i in items})
        raise ValueError(f"country: {spec.country!r} has no items; expected one of {', '.join(countries)}")
    answers = [_model_answer(item, spec) for item in mine] if spec.rejected == "model" else []
    if spec.rejected == "model" and sample is None and not all(answers):
        raise ValueError("rejected: 'model' needs the model's own answers: the data has none for model "
                         f"{spec.model!r} and no sampler was given; choose sibling, western or others")
    train, test = split_question_ids([i.question_id for i in mine], spec.test_fraction, spec.seed)
    keep = {"train": train, "test": test, "all": train | test}[spec.split]
    rows, skipped = [], []
    for item in sorted(mine, key=lambda i: i.id):
        if item.question_id not in keep or spec.localization not in ("both", item.localization):
            continue
        if spec.form == "open" and not item.reference_answer:
            skipped.append(f"{item.id}: the open form needs a reference_answer")
            continue
        prompt = item.open_prompt if spec.form == "open" else item.mcq_prompt
        chosen = item.reference_answer if spec.form == "open" else item.gold_option
        if spec.rejected == "model":
            rejected = [_model_answer(item, spec) or sample(prompt)]
        else:
            rejected = _rejected_options(item, spec.rejected)
        for text in rejected:
            if not text.strip() or text.strip() == chosen.strip():
                skipped.append(f"{item.id}: rejected is empty or equals chosen")
                continue
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": text, "item_id": item.id,
                         "question_id": item.question_id, "localization": item.localization,
                         "form": spec.form, "rejected_kind": spec.rejected})
    if not rows:
        raise ValueError(f"pairs: none for {spec.describe()}" + (f" ({skipped[0]})" if skipped else ""))
    return rows, skipped


def culture_pairs(items: Sequence[CultureItem], spec: CulturePairSpec,
                  sample: Callable[[str], str] | None = None, source: str = "culture") -> PairSet:
    """The pairs of `culture_pair_rows` as a PairSet that records the spec and what chosen stands for."""
    rows, skipped = culture_pair_rows(items, spec, sample)
    return pair_set(rows, spec, f"{source} [{spec.describe()}]", skipped)


def pair_set(rows: Sequence[dict[str, str]], spec: CulturePairSpec, source: str,
             skipped: Sequence[str] = ()) -> PairSet:
    """Pair rows (as `culture_pair_rows` makes them) as a PairSet recording where they came from."""
    answer = "reference answer" if spec.form == "open" else "option"
    return PairSet([PreferencePair(r["prompt"], r["chosen"], r["rejected"]) for r in rows], source=source,
                   chosen=f"the {spec.country} {answer} (rejected: {spec.rejected})", skipped=skipped)
