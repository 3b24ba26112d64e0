"""Culture items: one schema for every cultural benchmark yapo-bench evaluates (documented in
data/culture_mini/README.md), its validator and its JSONL loader.

An item is one question for one country in one localization (`localized` names the country,
`nonlocalized` leaves it to language and dialect cues), with an MCQ form (options, one per country of the
language group plus usually a Western control, and the gold index) and, where the source has one, an
open-ended form with a reference answer. The two variants of a question share `question_id`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from yapo_bench.data.text import text_rows

LOCALIZATIONS = ("localized", "nonlocalized")
# The paper's 15 cultural contexts by language group: culture-mini covers them, the task YAMLs are generated for
# them, and the paper's dataset's countries are matched to them.
CONTEXTS = {"english": ("usa", "uk", "australia"), "spanish": ("spain", "mexico", "bolivia"),
            "portuguese": ("brazil", "portugal", "mozambique"), "arabic": ("egypt", "ksa", "levantine", "morocco"),
            "hindi": ("india", "nepal")}
LANGUAGE_OF = {country: language for language, countries in CONTEXTS.items() for country in countries}
WESTERN = "western"
FIELDS = ("id", "question_id", "country", "language_group", "localization", "topic", "mcq_prompt", "options",
          "gold_index", "option_country", "open_prompt", "reference_answer", "model_answers")
OPTIONAL = ("open_prompt", "reference_answer", "model_answers")
ANSWER_FORMS = ("mcq", "open")


@dataclass(frozen=True)
class CultureItem:
    id: str
    question_id: str
    country: str
    language_group: str
    localization: str
    topic: str
    mcq_prompt: str
    options: tuple[str, ...]
    gold_index: int
    option_country: tuple[str | None, ...]
    open_prompt: str | None = None
    reference_answer: str | None = None
    # a model's own answers to the item ({model: {"mcq": ..., "open": ...}}), as the paper's dataset ships them for
    # its rejected responses
    model_answers: dict[str, dict[str, str]] | None = dataclasses.field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        problem = _problem(asdict(self))
        if problem:
            raise ValueError(problem)

    @property
    def gold_option(self) -> str:
        return self.options[self.gold_index]

    def option_for(self, country: str) -> str | None:
        """The option that answers for `country` (or `western`), if the item has one."""
        return dict(zip(self.option_country, self.options)).get(country)

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["options"], row["option_country"] = list(self.options), list(self.option_country)
        if row["model_answers"] is None:
            del row["model_answers"]
        return row


def _nonempty(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _problem(row: dict[str, Any]) -> str | None:
    """The first thing wrong with a row, as 'field: expected ..., got ...', or None."""
    for field in FIELDS:
        if field not in row and field not in OPTIONAL:
            return f"{field}: missing; expected {_EXPECTED[field]}"
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        return f"{unknown[0]}: unknown field; expected only {', '.join(FIELDS)}"
    for field in ("id", "question_id", "country", "language_group", "topic", "mcq_prompt"):
        if not _nonempty(row[field]):
            return f"{field}: expected {_EXPECTED[field]}, got {row[field]!r}"
    for field in ("country", "language_group"):
        if row[field] != row[field].strip().lower() or " " in row[field]:
            return f"{field}: expected {_EXPECTED[field]}, got {row[field]!r}"
    if row["localization"] not in LOCALIZATIONS:
        return f"localization: expected one of {', '.join(LOCALIZATIONS)}, got {row['localization']!r}"
    options, countries = row["options"], row["option_country"]
    if not isinstance(options, (list, tuple)) or len(options) < 2 or not all(_nonempty(o) for o in options):
        return f"options: expected {_EXPECTED['options']}, got {options!r}"
    if len({o.strip() for o in options}) != len(options):
        return "options: expected mutually distinct options, found a repeated one"
    if (not isinstance(countries, (list, tuple)) or len(countries) != len(options)
            or not all(c is None or _nonempty(c) for c in countries)):
        return f"option_country: expected {_EXPECTED['option_country']} ({len(options)} entries), got {countries!r}"
    named = [c for c in countries if c is not None]
    if len(set(named)) != len(named):
        return "option_country: expected each country at most once, found a repeated one"
    gold = row["gold_index"]
    if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(options):
        return f"gold_index: expected {_EXPECTED['gold_index']} below {len(options)}, got {gold!r}"
    if countries[gold] != row["country"]:
        return f"gold_index: option {gold} answers for {countries[gold]!r}, expected the item's country {row['country']!r}"
    open_prompt, reference = row.get("open_prompt"), row.get("reference_answer")
    if (open_prompt is None) != (reference is None):
        return "open_prompt/reference_answer: expected both or neither"
    for field, value in (("open_prompt", open_prompt), ("reference_answer", reference)):
        if value is not None and not _nonempty(value):
            return f"{field}: expected {_EXPECTED[field]} or null, got {value!r}"
    answers = row.get("model_answers")
    if answers is not None and (not isinstance(answers, dict) or not all(
            _nonempty(model) and isinstance(forms, dict) and forms and set(forms) <= set(ANSWER_FORMS)
            and all(_nonempty(text) for text in forms.values()) for model, forms in answers.items())):
        return f"model_answers: expected {_EXPECTED['model_answers']}, got {answers!r}"
    return None


_EXPECTED = {
    "id": "a non-empty string, unique in the file",
    "question_id": "a non-empty string shared by a question's localized and non-localized variants",
    "country": "a lowercase country/context id such as 'egypt'",
    "language_group": "a lowercase language-group id such as 'arabic'",
    "localization": "localized or nonlocalized",
    "topic": "a non-empty string such as 'meals'",
    "mcq_prompt": "the question as a non-empty string (options are added by the task)",
    "options": "a list of at least 2 non-empty, distinct strings",
    "gold_index": "the 0-based index of the item country's option",
    "option_country": "a list parallel to options naming each option's country ('western' for the control, "
                      "null for a distractor that answers for no country)",
    "open_prompt": "the open-ended question as a non-empty string",
    "reference_answer": "the reference answer as a non-empty string",
    "model_answers": "null or {model: {\"mcq\": answer, \"open\": answer}} with non-empty answers",
}


def validate_rows(rows: Iterable[tuple[int, Any]], source: str) -> tuple[list[CultureItem], list[str]]:
    """Items and one error line per bad row ('<file> row N: field: expected ...'), including duplicate ids
    and a question_id whose variants disagree on country or repeat a localization."""
    items, errors, seen_ids = [], [], set()
    variants: dict[tuple[str, str], str] = {}
    for row_number, row in rows:
        where = f"{source} row {row_number}"
        if not isinstance(row, dict):
            errors.append(f"{where}: expected a JSON object, got {type(row).__name__}")
            continue
        problem = _problem(row)
        if problem is None and row["id"] in seen_ids:
            problem = f"id: {row['id']!r} repeats an earlier row; expected {_EXPECTED['id']}"
        key = (row.get("question_id"), row.get("localization"))
        if problem is None and key in variants:
            problem = f"question_id: {row['question_id']!r} already has a {row['localization']} variant ({variants[key]})"
        if problem is not None:
            errors.append(f"{where}: {problem}")
            continue
        seen_ids.add(row["id"])
        variants[key] = row["id"]
        items.append(CultureItem(**{**row, "options": tuple(row["options"]),
                                    "option_country": tuple(row["option_country"])}))
    by_question: dict[str, set[str]] = {}
    for item in items:
        by_question.setdefault(item.question_id, set()).add(item.country)
    for question_id, countries in sorted(by_question.items()):
        if len(countries) > 1:
            errors.append(f"{source}: question_id: {question_id!r} has variants for different countries "
                          f"{sorted(countries)}; expected one country per question_id")
    return items, errors


def read_culture_rows(path: str | Path) -> list[tuple[int, Any]]:
    """(row number, parsed JSON object or an error string) per non-empty line."""
    lines, problems = text_rows(path)
    rows: list[tuple[int, Any]] = list(problems)
    for row_number, line in lines:
        if not line.strip():
            continue
        try:
            rows.append((row_number, json.loads(line)))
        except json.JSONDecodeError as err:
            rows.append((row_number, f"invalid JSON ({err.msg})"))
    return sorted(rows, key=lambda row: row[0])


def _read_and_validate(path: str | Path) -> tuple[list[CultureItem], list[str]]:
    rows = read_culture_rows(path)
    errors = [f"{path} row {n}: {row}" for n, row in rows if isinstance(row, str)]
    items, row_errors = validate_rows([(n, row) for n, row in rows if not isinstance(row, str)], str(path))
    if not rows:
        errors.append(f"{path}: no rows; expected at least one culture item")
    return items, errors + row_errors


def validate_culture_file(path: str | Path) -> list[str]:
    """Every problem in a culture JSONL file, one line each (empty when the file is valid); a file that cannot
    be read is one problem, so that a caller validating several files reports them all."""
    try:
        return _read_and_validate(path)[1]
    except ValueError as err:
        return [str(err)]


def load_culture(path: str | Path) -> list[CultureItem]:
    """The items of a culture JSONL file; the first problem found is raised as a one-line error."""
    items, errors = _read_and_validate(path)
    if errors:
        more = f" (and {len(errors) - 1} more; `yapo-bench data validate` lists them all)" if len(errors) > 1 else ""
        raise ValueError(errors[0] + more)
    return items


def write_culture(items: Iterable[CultureItem], path: str | Path) -> Path:
    from yapo_bench.atomic import atomic_file

    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text("".join(json.dumps(item.to_json(), ensure_ascii=False) + "\n" for item in items),
                       encoding="utf-8")
    return path
