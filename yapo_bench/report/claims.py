"""The evidence for each claim of the paper that a report's runs can test, as scorecard rows (the statistics and
verdict rules are in report.scorecard; docs/scorecard.md documents the result).

Methods are compared as the sweep does: a method run at several λ on the same items is taken at the λ chosen on
the validation half of the culture questions and every culture comparison is scored on the other half; a method
at one λ (or one λ per country's vector) is taken as run. Every method-vs-method culture row states the
disruption each side caused (mean KL of the answer distribution from the base run's, on the culture MCQ items):
unless the two are within `kl_match_ratio` of each other the row says the comparison is at unmatched disruption,
and where the runs hold a λ pair whose KLs do match, a row at matched KL is added.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from yapo_bench.families import behaviours
from yapo_bench.metrics import pnlg_array, rca_array
from yapo_bench.report import published_side as paper
from yapo_bench.report.items import (
    SeedScores,
    against_base,
    answer_kl,
    culture_item_scores,
    family_tasks,
    mmlu_group,
    run_directions,
    sample_scores,
    unit_of,
    verdict_values,
)
from yapo_bench.report.runs import EvalRun, culture_task, language_of
from yapo_bench.report.scorecard import (
    Scorecard,
    ScorecardRow,
    ScorecardSpec,
    equivalence_evidence,
    finalise,
    item_moves,
    mean_evidence,
    seed_evidence,
    seeds_note,
    strata_evidence,
)
from yapo_bench.report.selection import MultiplierChoice, choose_multipliers, swept_methods
from yapo_bench.report.training import mean_loss, steps_to_threshold, training_logs

CHAIN = ("base", "bipo", "yapo")  # claim b: each method at least the one before it
COLLAPSING = ("caa", "sas")  # claim e: the dense/contrastive methods said to collapse at large λ
FAMILY_MEASURES = {"mcq": ("mcq", "culture MCQ {metric} (%)"),
                   "open": ("open", "culture open-ended judge score (1–10)")}
UNTESTED = {
    "a": "needs a BiPO and a YaPO vector trained on the same data, with their training logs on disk",
    "b": "needs localized/non-localized culture scores of two of base, BiPO and YaPO on the same items",
    "c": "needs localized and non-localized culture scores of YaPO and of the base or BiPO on the same items",
    "d": "needs MMLU tasks evaluated with --log_samples for the base and a steered run",
    "e": "needs YaPO and CAA or SAS each run at several λ on the same culture MCQ items (a sweep), each with a λ "
         "above the one chosen on validation, and a drop from the chosen λ to the largest on at least one side",
    "f": "needs behaviour tasks (bipo_*_ab, or judged bipo_*_open) for the base and a steered run",
    "g": "needs the prompt method and a steering method evaluated on the same culture or behaviour items",
}
# AxBench (ICML 2025), the comparison claim g repeats: on its concepts, prompting beat every representation method
AXBENCH = ("AxBench, Gemma-2-2B, λ chosen on a held-out half, LLM judge: prompting 0.698 / 0.731 vs SAE-feature "
           "steering 0.177 / 0.151 (layers 10 / 20)")


@dataclass
class Arm:
    """One method's culture runs as compared, and why those."""

    method: str
    runs: list[EvalRun]
    basis: str


def _country(item: str) -> str:
    return culture_task(item.rsplit("/", 1)[0]).unit


def _localization(item: str) -> str:
    return culture_task(item.rsplit("/", 1)[0]).variant


def _language_mean(per_country: dict[str, Any]) -> Any:
    """The paper's pooling (Table 3 'Overall'): the mean over languages of the mean over each one's countries."""
    by_language: dict[str, list[Any]] = {}
    for country, value in per_country.items():
        by_language.setdefault(language_of(country), []).append(value)
    return np.mean([np.mean(values, axis=0) for values in by_language.values()], axis=0)


class CultureEvidence:
    """The culture runs of a report: each method's arm, the items compared, their scores and disruption."""

    def __init__(self, runs: list[EvalRun], spec: ScorecardSpec, choice: MultiplierChoice) -> None:
        self.spec = spec
        self.runs = [run for run in runs if family_tasks(run, "mcq") or family_tasks(run, "open")]
        self.choice = choice
        self.question_of: dict[str, str] = dict(self.choice.question_of)
        self.base_of_task = {task: run for run in runs if run.method == "base" for task in run.tasks}
        self.notes: list[str] = [self.choice.note] if self.choice.note else []
        self._kl: dict[tuple[int, ...], float] = {}
        self.arms: dict[str, Arm] = {}
        by_multiplier: dict[str, dict[float, list[EvalRun]]] = {}
        for run in self.runs:
            by_multiplier.setdefault(run.method, {}).setdefault(run.multiplier, []).append(run)
        for method, groups in by_multiplier.items():
            if method in self.choice.selections:
                chosen = self.choice.selections[method].multiplier
                self.arms[method] = Arm(method, groups[chosen], f"{method} λ {chosen:g} (chosen on validation)")
            elif len(groups) == 1:
                (multiplier, group), = groups.items()
                self.arms[method] = Arm(method, group, method if method in ("base", "prompt") else
                                        f"{method} λ {multiplier:g}")
            elif method in swept_methods(self.choice.scores):
                self.notes.append(f"{method} ran at several λ but none could be chosen: left out")
            else:  # one λ per country's vector: nothing to choose between
                per_country = sorted({(country, m) for m, group in groups.items() for run in group
                                      for _, country, _ in family_tasks(run, "mcq") + family_tasks(run, "open")})
                self.arms[method] = Arm(method, [run for group in groups.values() for run in group],
                                        f"{method} λ per country: " + ", ".join(f"{c} {m:g}" for c, m in per_country))

    def scores(self, runs: list[EvalRun], family: str) -> SeedScores:
        """Item scores of `runs` on `family` per training seed, keyed "<task>/<doc_id>", localized and non-localized
        tasks only (the `both` task repeats their items), on the test questions when a λ was chosen on
        validation."""
        metric = self.spec.mcq_metric
        scores = SeedScores()
        for run in runs:
            scores.add(run, culture_item_scores(run, metric, self.question_of, family))
        test = self.choice.split.test if self.choice.split is not None else None
        return scores.filtered(lambda item: _localization(item) != "both"
                               and (test is None or self.question_of[item] in test))

    def paired(self, runs_a: list[EvalRun], runs_b: list[EvalRun], family: str) -> dict[str, tuple[float, float]]:
        """Per item both sides scored, the two sides' scores (each its mean over its seeds)."""
        a, b = self.scores(runs_a, family).means(), self.scores(runs_b, family).means()
        return {item: (a[item], b[item]) for item in sorted(a.keys() & b.keys())}

    def paired_seeds(self, runs_a: list[EvalRun], runs_b: list[EvalRun],
                     family: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The items every seed of both sides scored, and each side's scores of them (seeds × items)."""
        a, b = self.scores(runs_a, family), self.scores(runs_b, family)
        items = sorted(set(a.common_items()) & set(b.common_items()))
        return items, a.matrix(items), b.matrix(items)

    def scoped(self, runs_a: list[EvalRun], runs_b: list[EvalRun],
               family: str) -> Iterator[tuple[str, str, list[str], np.ndarray, np.ndarray]]:
        """Per scope of the items both sides scored (pooled, then each country: `_scopes`), its row family, name and
        items, and each side's scores of them (seeds × items)."""
        paired, seeds_a, seeds_b = self.paired_seeds(runs_a, runs_b, family)
        column = {item: i for i, item in enumerate(paired)}
        for row_family, scope, items in _scopes(paired) if paired else []:
            columns = [column[i] for i in items]
            yield row_family, scope, items, seeds_a[:, columns], seeds_b[:, columns]

    def kl_mnat(self, runs: list[EvalRun]) -> float:
        """Mean KL(base ‖ run) of the answer distribution over the options, culture MCQ items, millinats (cached:
        the matched-KL search asks for every λ of two methods)."""
        key = tuple(sorted(id(run) for run in runs))
        if key not in self._kl:
            values = [kl for run in runs if run.method != "base" for task, _, _ in family_tasks(run, "mcq")
                      if task in self.base_of_task for kl in answer_kl(self.base_of_task[task], run, task)]
            self._kl[key] = (1000.0 * float(np.mean(values)) if values else
                             0.0 if all(r.method == "base" for r in runs) else math.nan)
        return self._kl[key]

    def items_note(self) -> str:
        return "test questions" if self.choice.split is not None else "all items"

    def disruption(self, runs_a: list[EvalRun], runs_b: list[EvalRun], name_a: str, name_b: str) -> str:
        """How far each side moved the answers; whether the comparison is at matched disruption."""
        kl_a, kl_b = self.kl_mnat(runs_a), self.kl_mnat(runs_b)
        if name_b == "base":
            return f"answer KL to base {kl_a:.3g} mnat"
        matched = kl_a > 0 and kl_b > 0 and max(kl_a, kl_b) / min(kl_a, kl_b) <= self.spec.kl_match_ratio
        return (f"{'matched' if matched else 'unmatched'} disruption (answer KL to base: {name_a} {kl_a:.3g} vs "
                f"{name_b} {kl_b:.3g} mnat)")

    def runs_at(self, method: str, multiplier: float) -> list[EvalRun]:
        return [run for run in self.runs if run.method == method and run.multiplier == multiplier]


def _scopes(items: list[str]) -> list[tuple[str, str, list[str]]]:
    """(family, scope, items): pooled, then each country when there are several."""
    countries = sorted({_country(item) for item in items})
    scopes = [("scorecard", "pooled", items)]
    if len(countries) > 1:
        scopes += [("per-country", country, [i for i in items if _country(i) == country]) for country in countries]
    return scopes


def _chain_links(methods: set[str]) -> list[tuple[str, str]]:
    present = [method for method in CHAIN if method in methods]
    return [(present[i + 1], present[i]) for i in range(len(present) - 1)]


def _paper_score_difference(family: str, method: str, reference: str, countries: list[str]) -> str:
    published = paper.paper_culture_scores(family)
    differences = [published[(c, s, method)] - published[(c, s, reference)] for c in countries
                   for s in ("localized", "nonlocalized")
                   if (c, s, method) in published and (c, s, reference) in published]
    if not differences:
        return ""
    unit = "points of accuracy" if family == "mcq" else "judge points (0–10)"
    where = ", ".join(sorted({c for c in countries if (c, "localized", method) in published}))
    return (f"{method} − {reference}: {np.mean(differences):+.2f} {unit}, mean over {where} × localized/non-localized "
            f"({paper.paper_provenance('table1' if family == 'mcq' else 'table2')})")


def _claim_b(culture: CultureEvidence, spec: ScorecardSpec) -> list[ScorecardRow]:
    rows = []
    for family, (measure, label) in FAMILY_MEASURES.items():
        for method, reference in _chain_links(set(culture.arms)):
            arm, ref = culture.arms[method], culture.arms[reference]
            comparisons = [(arm.runs, ref.runs, f"{arm.basis} vs {ref.basis}")]
            if family == "mcq" and reference != "base":
                comparisons += _matched_kl(culture, method, reference)
            for runs_a, runs_b, basis in comparisons:
                note = f"{basis}; {culture.items_note()}; {culture.disruption(runs_a, runs_b, method, reference)}"
                matched = basis != comparisons[0][2]
                for row_family, scope, items, a, b in culture.scoped(runs_a, runs_b, family):
                    if matched and scope != "pooled":
                        continue  # the matched-KL comparison is a headline check, not split by country
                    scope = "pooled, matched KL" if matched else scope
                    countries = sorted({_country(i) for i in items})
                    rows.append(ScorecardRow(
                        claim="b", family=row_family, kind="superiority", method=method, reference=reference,
                        measure=measure, measure_label=label.format(metric=spec.mcq_metric), scope=scope, direction=1,
                        basis=note, paper=_paper_score_difference(family, method, reference, countries),
                        detail=seeds_note({method: len(a), reference: len(b)}),
                        **seed_evidence(a, b, spec.seed), **item_moves(a.mean(axis=0), b.mean(axis=0), 1)))
    return rows


def _matched_kl(culture: CultureEvidence, method: str,
                reference: str) -> list[tuple[list[EvalRun], list[EvalRun], str]]:
    """The (λ, λ') pair of the two methods whose answer KLs are closest, when within kl_match_ratio and not the
    pair the main comparison already uses."""
    candidates = []
    for (m_a, lam_a) in [k for k in culture.choice.scores if k[0] == method]:
        for (m_b, lam_b) in [k for k in culture.choice.scores if k[0] == reference]:
            runs_a, runs_b = culture.runs_at(m_a, lam_a), culture.runs_at(m_b, lam_b)
            kl_a, kl_b = culture.kl_mnat(runs_a), culture.kl_mnat(runs_b)
            if kl_a > 0 and kl_b > 0:
                candidates.append((abs(math.log(kl_a / kl_b)), lam_a, lam_b, runs_a, runs_b))
    if not candidates:
        return []
    distance, lam_a, lam_b, runs_a, runs_b = min(candidates, key=lambda c: (c[0], c[1], c[2]))
    main = (culture.arms[method].runs, culture.arms[reference].runs)
    if distance > math.log(culture.spec.kl_match_ratio) or (runs_a, runs_b) == main:
        return []
    return [(runs_a, runs_b, f"at matched answer KL: {method} λ {lam_a:g} vs {reference} λ {lam_b:g}")]


def _gap_statistic(measure: str, countries: list[str]) -> Callable[[dict, dict], Any]:
    """The antisymmetric claim-c statistic over per-(country, localization) means: |PNLG_b| − |PNLG_a| ("pnlg", the
    gap narrows) or RCA_a − RCA_b ("rca"), each pooled over countries as the paper pools (mean of language means)."""
    per_country = pnlg_array if measure == "pnlg" else rca_array
    transform = np.abs if measure == "pnlg" else (lambda x: x)

    def pooled(means: dict) -> Any:
        return _language_mean({c: transform(per_country(means[(c, "localized")], means[(c, "nonlocalized")]))
                               for c in countries})

    if measure == "pnlg":
        return lambda a, b: pooled(b) - pooled(a)
    return lambda a, b: pooled(a) - pooled(b)


def _paper_gap(family: str, measure: str, method: str, reference: str, countries: list[str]) -> str:
    """The paper's Table 5 values for the same countries, pooled as ours are."""
    published = paper.paper_gap_values(family, measure)
    known = [c for c in countries if (c, method) in published and (c, reference) in published]
    if not known:
        return ""
    transform = abs if measure == "pnlg" else float
    ours, theirs = (_language_mean({c: transform(published[(c, m)]) for c in known}) for m in (method, reference))
    effect = theirs - ours if measure == "pnlg" else ours - theirs
    name = "mean |PNLG| narrowed by" if measure == "pnlg" else "RCA up by"
    return (f"{name} {effect:+.3g} ({method} {ours:.3g} vs {reference} {theirs:.3g}; {', '.join(known)}; "
            f"{paper.paper_provenance('table5')})")


def _claim_c(culture: CultureEvidence, spec: ScorecardSpec) -> list[ScorecardRow]:
    rows = []
    for family in FAMILY_MEASURES:
        for reference in ("base", "bipo"):
            if "yapo" not in culture.arms or reference not in culture.arms:
                continue
            arm, ref = culture.arms["yapo"], culture.arms[reference]
            pairs = culture.paired(arm.runs, ref.runs, family)
            complete = sorted(c for c in {_country(i) for i in pairs}
                              if {_localization(i) for i in pairs if _country(i) == c} == {"localized", "nonlocalized"})
            disruption = culture.disruption(arm.runs, ref.runs, "yapo", reference)
            note = f"{arm.basis} vs {ref.basis}; {culture.items_note()}; {disruption}"
            seeds = seeds_note({m: len(culture.scores(r, family)) for m, r in (("yapo", arm.runs),
                                                                             (reference, ref.runs))}, False)
            for measure in ("pnlg", "rca"):
                key = measure if measure == "pnlg" else f"rca_{family}"
                label = f"{'|PNLG_1|' if measure == 'pnlg' else 'RCA'} of culture {family} scores"
                for row_family, scope, countries in ([("scorecard", "pooled", complete)] if complete else []) + (
                        [("per-country", c, [c]) for c in complete] if len(complete) > 1 else []):
                    strata = {(c, loc): ([pairs[i][0] for i in pairs if _country(i) == c and _localization(i) == loc],
                                         [pairs[i][1] for i in pairs if _country(i) == c and _localization(i) == loc])
                              for c in countries for loc in ("localized", "nonlocalized")}
                    rows.append(ScorecardRow(
                        claim="c", family=row_family, kind="superiority", method="yapo", reference=reference,
                        measure=key, measure_label=label, scope=scope, direction=1, basis=note,
                        paper=_paper_gap(family, measure, "yapo", reference, countries), detail=seeds,
                        **strata_evidence(strata, _gap_statistic(measure, countries), spec.seed)))
    return rows


def _claim_e(culture: CultureEvidence, spec: ScorecardSpec, untestable: list[str]) -> list[ScorecardRow]:
    """Per item, the drop in score from each method's chosen λ to its largest λ; YaPO's drop against CAA's/SAS's.
    The test needs, on both sides, a λ above the one chosen on validation (else the degradation beyond the chosen λ
    was never measured, 0 by construction), and a drop on at least one side (else nothing degraded, gracefully or
    not); a comparison without them is named in `untestable` with the reason, never given a verdict."""
    selections, scores = culture.choice.selections, culture.choice.scores
    if "yapo" not in selections:
        return []
    rows = []
    ends = {m: (selections[m].multiplier, max(lam for k, lam in scores if k == m)) for m in selections}
    for other in (m for m in COLLAPSING if m in selections):
        comparison = f"yapo vs {other}"
        at_largest = [m for m in ("yapo", other) if ends[m][0] == ends[m][1]]
        if at_largest:
            untestable.extend(f"{comparison}: {m}'s λ chosen on validation ({ends[m][0]:g}) is its largest, so its "
                              "degradation beyond it was never measured" for m in at_largest)
            continue
        chosen_runs = {m: culture.runs_at(m, ends[m][0]) for m in ("yapo", other)}
        largest_runs = {m: culture.runs_at(m, ends[m][1]) for m in ("yapo", other)}
        drops = {}  # per method, its items and each seed's drop on them (a seed's vector at both λ: seeds × items)
        for m in ("yapo", other):
            items, largest, chosen = culture.paired_seeds(largest_runs[m], chosen_runs[m], "mcq")
            drops[m] = (items, largest - chosen)
        items = sorted(set(drops["yapo"][0]) & set(drops[other][0]))
        if not items:
            continue
        seeds_a, seeds_b = (drops[m][1][:, [drops[m][0].index(i) for i in items]] for m in ("yapo", other))
        a, b = seeds_a.mean(axis=0), seeds_b.mean(axis=0)
        if a.mean() >= 0 and b.mean() >= 0:
            untestable.append(f"{comparison}: neither degrades from its chosen λ to its largest on the "
                              f"{culture.items_note()} (yapo {a.mean():+.3g}, {other} {b.mean():+.3g} points), so "
                              "there is no collapse to degrade gracefully against")
            continue
        basis = (f"largest λ vs λ chosen on validation: yapo {ends['yapo'][1]:g} vs {ends['yapo'][0]:g}, {other} "
                 f"{ends[other][1]:g} vs {ends[other][0]:g}; {culture.items_note()}; at the largest λ, "
                 + culture.disruption(largest_runs["yapo"], largest_runs[other], "yapo", other))
        rows.append(ScorecardRow(
            claim="e", family="scorecard", kind="superiority", method="yapo", reference=other, measure="mcq",
            measure_label=f"change in culture MCQ {spec.mcq_metric} (points) from the chosen to the largest λ",
            scope="pooled", direction=1, basis=basis, paper=paper.paper_claim_figures("e"),
            detail=seeds_note({"yapo": len(seeds_a), other: len(seeds_b)}),
            **seed_evidence(seeds_a, seeds_b, spec.seed), **item_moves(a, b, 1)))
    return rows


def _claim_a(runs: list[EvalRun], spec: ScorecardSpec) -> list[ScorecardRow]:
    """Per pair of BiPO and YaPO vectors trained on the same data with the same seed (a (seed, unit) pair): mean
    train loss over their common steps (the area under the curve per step), and the step where the smoothed loss
    first falls below the threshold."""
    logs = training_logs(runs)
    by_data = {(log.method, log.data, log.seed): log for log in logs}
    pairs = [(by_data[("yapo", data, seed)], by_data[("bipo", data, seed)])
             for method, data, seed in sorted(by_data, key=lambda k: (k[0], k[1], k[2] is None, k[2] or 0))
             if method == "yapo" and ("bipo", data, seed) in by_data]
    seeded = len({log.seed for log in logs}) > 1
    if not pairs:
        return []
    yapo_loss, bipo_loss, details, differences = [], [], [], set()
    for yapo, bipo in pairs:
        steps = min(len(yapo.losses), len(bipo.losses))
        yapo_loss.append(mean_loss(yapo.losses, steps))
        bipo_loss.append(mean_loss(bipo.losses, steps))
        reached = [steps_to_threshold(log.losses, spec.loss_threshold, spec.loss_window) for log in (yapo, bipo)]
        unit = f"{yapo.short_data} seed {yapo.seed}" if seeded else yapo.short_data
        details.append(f"{unit}: mean loss {yapo_loss[-1]:.3f} vs {bipo_loss[-1]:.3f} over {steps} steps, "
                       f"{spec.loss_window}-step mean < {spec.loss_threshold:g} at step "
                       + " vs ".join(str(r) if r else "never" for r in reached))
        differences |= {k for k in ("lr", "batch_size", "seed", "steps")
                        if yapo.config.get(k) != bipo.config.get(k)}
    basis = f"vector pairs trained on the same data{' with the same seed' if seeded else ''}" + (
        f"; their training configs differ in {', '.join(sorted(differences))}" if differences else ", same config")
    return [ScorecardRow(
        claim="a", family="scorecard", kind="superiority", method="yapo", reference="bipo", measure="train_loss",
        measure_label="mean train loss (area under the curve per step)", scope="pooled",
        direction=-1, basis=basis, paper=paper.paper_claim_figures("a"), detail="; ".join(details),
        **mean_evidence(np.array(yapo_loss), np.array(bipo_loss), spec.seed))]


def _claim_d(runs: list[EvalRun], culture: CultureEvidence, spec: ScorecardSpec) -> list[ScorecardRow]:
    rows = []
    margin = spec.smallest_effects["mmlu"]
    for (method, multiplier, group), (seeded, seeded_base) in against_base(
            runs, mmlu_group, lambda run, task: sample_scores(run, task, "acc")).items():
        ours, base = seeded.means(), seeded_base.means()  # the TOST is on seed means: no seed variance in its CI
        items = sorted(ours.keys() & base.keys())
        if not items:
            continue
        chosen = culture.choice.selections.get(method)
        basis = f"{method} λ {multiplier:g}" + (" (chosen on validation)" if chosen and chosen.multiplier == multiplier
                                               else "") + f"; all {group} items"
        a, b = np.array([ours[i] for i in items]), np.array([base[i] for i in items])
        rows.append(ScorecardRow(
            claim="d", family="scorecard", kind="equivalence", method=method, reference="base", measure="mmlu",
            measure_label=f"MMLU accuracy (%), {group}", scope=group, direction=0, basis=basis,
            paper=paper.paper_mmlu_figure(method),
            detail="; ".join(filter(None, [_at_chance(group, list(b)), seeds_note({method: len(seeded)}, False)])),
            **equivalence_evidence(a, b, margin, spec.seed), **item_moves(a, b, 0)))
    return rows


def _at_chance(group: str, base_scores: list[float]) -> str:
    """A caveat when the base model's MMLU accuracy is indistinguishable from guessing one of 4 options: keeping
    knowledge is then easy to show, there being little to lose."""
    from scipy.stats import binomtest

    correct = sum(score > 0 for score in base_scores)
    if binomtest(correct, len(base_scores), 0.25).pvalue <= 0.05:
        return ""
    return (f"the base model is at chance on {group} ({100 * correct / len(base_scores):.1f} % of "
            f"{len(base_scores)}, chance 25 %): equivalence here shows steering did not move its answers, not that "
            "it keeps knowledge the model has")


def _claim_f(runs: list[EvalRun], spec: ScorecardSpec) -> list[ScorecardRow]:
    """P(matching answer) on the A/B items and the judge's score on the open prompts, steered vs base, in the
    direction each run steered (d = +1: towards the behaviour its vector was trained to show)."""
    directions = run_directions(runs)
    rows = []
    for measure, label, select, scores in (
            ("behaviour_ab", "P(matching answer), A/B (%)", lambda t: unit_of(t, behaviours.AB),
             lambda run, task: sample_scores(run, task, "p_gold")),
            ("behaviour_judge", "behaviour judge score (1–4)", lambda t: unit_of(t, behaviours.OPEN),
             lambda run, task: {f"{task}/{k}": v for k, v in verdict_values(run, task).items()})):
        for (method, multiplier, behaviour), (ours, base) in against_base(runs, select, scores).items():
            items = sorted(set(ours.common_items()) & set(base.common_items()))
            if not items:
                continue
            direction = directions.get((method, multiplier), 1)
            seeds_a, seeds_b = ours.matrix(items), base.matrix(items)
            a, b = seeds_a.mean(axis=0), seeds_b.mean(axis=0)
            rows.append(ScorecardRow(
                claim="f", family="scorecard", kind="superiority", method=method, reference="base", measure=measure,
                measure_label=label, scope=behaviour, direction=direction,
                basis=f"{method} λ {multiplier:g}, direction {direction:+d}; all items",
                paper=paper.paper_behaviour_figure(behaviour, method), detail=seeds_note({method: len(seeds_a)}),
                **seed_evidence(seeds_a, seeds_b, spec.seed), **item_moves(a, b, direction)))
    return rows


def _steering_methods(methods: set[str]) -> list[str]:
    """The methods that steer with a vector alone (not the base, the prompt, or a prompt with a vector)."""
    from yapo_bench.methods import method_names

    return [method for method in method_names() if method in methods]


def _claim_g(runs: list[EvalRun], culture: CultureEvidence, spec: ScorecardSpec) -> list[ScorecardRow]:
    """Each steering method against the prompting baseline on the same items: culture MCQ and open-ended scores
    (test questions when λ was chosen on validation; each side's λ and disruption in the basis) and the BiPO
    behaviours in the direction each run steered."""
    rows = []
    if "prompt" in culture.arms:
        reference = culture.arms["prompt"]
        for method in _steering_methods(set(culture.arms)):
            arm = culture.arms[method]
            for family, (measure, label) in FAMILY_MEASURES.items():
                note = (f"{arm.basis} vs {reference.basis}; {culture.items_note()}; "
                        + culture.disruption(arm.runs, reference.runs, method, "prompt"))
                for row_family, scope, _items, a, b in culture.scoped(arm.runs, reference.runs, family):
                    rows.append(ScorecardRow(
                        claim="g", family=row_family, kind="superiority", method=method, reference="prompt",
                        measure=measure, measure_label=label.format(metric=spec.mcq_metric), scope=scope,
                        direction=1, basis=note, detail=f"{seeds_note({method: len(a)})}; {AXBENCH}",
                        **seed_evidence(a, b, spec.seed), **item_moves(a.mean(axis=0), b.mean(axis=0), 1)))
    directions = run_directions(runs)
    for (method, multiplier, behaviour), (ours, prompted) in against_base(
            runs, lambda t: unit_of(t, behaviours.AB), lambda run, task: sample_scores(run, task, "p_gold"),
            reference="prompt").items():
        items = sorted(set(ours.common_items()) & set(prompted.common_items()))
        if not _steering_methods({method}) or not items:
            continue
        direction = directions.get((method, multiplier), 1)
        seeds_a, seeds_b = ours.matrix(items), prompted.matrix(items)
        rows.append(ScorecardRow(
            claim="g", family="scorecard", kind="superiority", method=method, reference="prompt",
            measure="behaviour_ab", measure_label="P(matching answer), A/B (%)", scope=behaviour,
            direction=direction, basis=f"{method} λ {multiplier:g} vs prompt, direction {direction:+d}; all items",
            detail=f"{seeds_note({method: len(seeds_a)})}; {AXBENCH}", **seed_evidence(seeds_a, seeds_b, spec.seed),
            **item_moves(seeds_a.mean(axis=0), seeds_b.mean(axis=0), direction)))
    return rows


def report_choice(runs: list[EvalRun], spec: ScorecardSpec) -> MultiplierChoice:
    """The report's one multiplier choice, in the scorecard's MCQ measure and seed: the scorecard, the selection
    table and the steerability table all read this one."""
    return choose_multipliers(runs, spec.mcq_metric, spec.seed)


def build_scorecard(runs: list[EvalRun], spec: ScorecardSpec | None = None,
                    choice: MultiplierChoice | None = None) -> Scorecard:
    """Every claim the runs can test, as finalised rows (Holm, MDE, verdict), and why the others cannot be.
    `choice`: the report's multiplier choice (`report_choice`; made here when not given)."""
    spec = spec or ScorecardSpec()
    culture = CultureEvidence(runs, spec, choice or report_choice(runs, spec))
    untestable: dict[str, list[str]] = {"e": []}  # comparisons the runs hold but cannot test, and why
    found = {"a": _claim_a(runs, spec), "b": _claim_b(culture, spec), "c": _claim_c(culture, spec),
             "d": _claim_d(runs, culture, spec), "e": _claim_e(culture, spec, untestable["e"]),
             "f": _claim_f(runs, spec), "g": _claim_g(runs, culture, spec)}
    rows = finalise([row for claim in sorted(found) for row in found[claim]], spec)
    untested = {claim: UNTESTED[claim] for claim, claim_rows in found.items() if not claim_rows}
    if culture.notes:
        untested.update({claim: f"{UNTESTED[claim]} ({'; '.join(culture.notes)})" for claim in untested
                         if claim in ("b", "c", "e")})
    for claim, reasons in untestable.items():
        if reasons:  # a claim tested on some comparisons names the others; one tested on none gives their reasons
            untested[claim] = "; ".join(reasons) if found[claim] else f"{untested[claim]} ({'; '.join(reasons)})"
    provenance = paper.provenance_of(runs)
    return Scorecard(rows, untested, spec, provenance.models, provenance.culture_data)
