"""Converters from public cultural datasets into the culture schema (plain functions; `yapo-bench data
convert --from {paper,localization-gap,culturalbench} IN OUT` is their front).

- paper: the YaPO paper's `MBZUAI-Paris/Deep-Culture-Lense` (hub id, local dir or file readable by `datasets`):
  columns country, localization_status (localized / nolocalized), prompt-mcq (question with its numbered or
  lettered options), chosen-mcq (the gold option as \\boxed{k}, a number/letter or its text),
  prompt_open_ended, chosen_open_ended, optional question_id / id / topic.
- localization-gap: Veselovsky et al. 2025, the cleaned JSONL (fields idx, pair_idx, subtask, lang,
  explicit_context, question, options, option_by_culture, gold_culture, gold_idx) or the upstream CSV
  (context, idx, lang, option_<culture>, option_<culture>_idx, question, subtask).
- culturalbench: CulturalBench-Easy, the upstream CSV (question_idx, prompt_question, prompt_option_a..d,
  answer, country) or the JSONL (question_idx, country, question, choices, answer). Explicit only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from yapo_bench.data.culture import LANGUAGE_OF, CultureItem
from yapo_bench.data.text import read_text

# Hub country names vary in spelling, so match loosely.
COUNTRY_ALIASES = {
    "united states": "usa", "united states of america": "usa", "us": "usa", "america": "usa",
    "united kingdom": "uk", "britain": "uk", "great britain": "uk", "england": "uk",
    "saudi arabia": "ksa", "saudi": "ksa", "kingdom of saudi arabia": "ksa",
    "levant": "levantine", "lebanon": "levantine", "syria": "levantine", "jordan": "levantine", "palestine": "levantine",
}
LOCALIZATION_GAP_CULTURES = {"bn": "bangladesh", "fr": "france", "ru": "russia", "tr": "turkey", "us": "united-states"}
_OPTION_LINE = re.compile(r"^\s*\(?([A-Ea-e]|[1-9])[\.\):]\s+(.+?)\s*$")
_BOXED = re.compile(r"\\boxed\{\s*([A-Ea-e]|[1-9])\s*\}")


def country_id(name: str) -> str:
    """A schema country id from a free-form name: lowercase, spaces to hyphens, paper aliases resolved."""
    key = " ".join(str(name).strip().lower().replace("_", " ").split())
    return COUNTRY_ALIASES.get(key, key.replace(" ", "-"))


def _index_of(label: str) -> int:
    return int(label) - 1 if label.isdigit() else ord(label.upper()) - ord("A")


def split_mcq_prompt(prompt: str) -> tuple[str, list[str]]:
    """(question stem, options) from an MCQ prompt whose options are lines like '1. text' or '(B) text'."""
    stem, options = [], []
    for line in str(prompt).splitlines():
        match = _OPTION_LINE.match(line)
        if match and _index_of(match.group(1)) == len(options):
            options.append(match.group(2))
        elif not options:
            stem.append(line)
    return "\n".join(stem).strip(), options


def option_index_of(answer: str, options: list[str]) -> int | None:
    """The option an answer names: `\\boxed{k}`, a bare number or letter (from 1 / A), or the option's own text."""
    answer = str(answer).strip()
    boxed = _BOXED.search(answer)
    if boxed:
        return _index_of(boxed.group(1))
    label = re.fullmatch(r"\(?([A-Ea-e]|[1-9])[\.\)]?(\s.*)?", answer)
    if label:
        return _index_of(label.group(1))
    matches = [i for i, option in enumerate(options) if option.strip() == answer]
    return matches[0] if len(matches) == 1 else None


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a CSV or JSON/JSONL file, numbered from 1."""
    text = read_text(path)  # a byte that is not UTF-8 is named by row here, in every format
    if path.suffix == ".csv":
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise ValueError(f"{path}: not a readable CSV ({err})") from None
        yield from enumerate(frame.to_dict("records"), 1)
        return
    try:
        if text.lstrip().startswith("["):
            yield from enumerate(json.loads(text), 1)
            return
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a valid JSON list ({err})") from None
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} row {number}: invalid JSON ({err.msg})") from None


def _item(where: str, **fields: Any) -> CultureItem:
    try:
        return CultureItem(**fields)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _require(row: dict[str, Any], columns: tuple[str, ...], where: str) -> None:
    missing = [c for c in columns if c not in row]
    if missing:
        raise ValueError(f"{where}: column {missing[0]!r} is missing; expected {', '.join(columns)}")


def convert_localization_gap(path: str | Path) -> list[CultureItem]:
    """Each row is one question for the prompt language's culture; explicit rows (with a country cue) are
    localized, implicit ones non-localized; an explicit row and its implicit twin share question_id."""
    path = Path(path)
    items = []
    for number, row in _rows(path):
        where = f"{path} row {number}"
        if "option_by_culture" in row:  # the cleaned JSONL
            _require(row, ("idx", "lang", "explicit_context", "question", "options", "option_by_culture", "gold_culture"), where)
            options, by_culture, gold_culture = list(row["options"]), row["option_by_culture"], row["gold_culture"]
            explicit, idx, twin = bool(row["explicit_context"]), int(row["idx"]), row.get("pair_idx")
            topic = row.get("subtask") or "general"
        else:  # the upstream CSV
            _require(row, ("context", "idx", "lang", "question", "subtask", "option_us", "option_us_idx"), where)
            by_culture = {c: row[f"option_{c}"] for c in LOCALIZATION_GAP_CULTURES if f"option_{c}" in row}
            positions = {c: int(row[f"option_{c}_idx"]) for c in by_culture}
            options = [by_culture[c] for c in sorted(by_culture, key=positions.get)]
            gold_culture = _LANGUAGE_CULTURE.get(row["lang"].strip().lower())
            explicit, idx, twin, topic = str(row["context"]).strip().lower() == "true", int(row["idx"]), None, row["subtask"]
        if gold_culture not in by_culture:
            raise ValueError(f"{where}: gold_culture: {gold_culture!r} has no option; expected one of {sorted(by_culture)}")
        # a few rows give two cultures the same option text: keep it once, owned by the gold culture if it is theirs
        owners = {by_culture[gold_culture]: gold_culture}
        for culture in sorted(by_culture):
            owners.setdefault(by_culture[culture], culture)
        options = list(dict.fromkeys(options))
        base = min(idx, int(twin)) if twin is not None else idx % 600  # upstream: implicit idx, explicit idx + 600
        items.append(_item(where,
            id=f"localization-gap-{idx}", question_id=f"localization-gap-{base}",
            country=LOCALIZATION_GAP_CULTURES[gold_culture], language_group=row["lang"].strip().lower(),
            localization="localized" if explicit else "nonlocalized", topic=topic, mcq_prompt=row["question"],
            options=tuple(options), gold_index=options.index(by_culture[gold_culture]),
            option_country=tuple(LOCALIZATION_GAP_CULTURES[owners[o]] for o in options),
        ))
    return items


_LANGUAGE_CULTURE = {"turkish": "tr", "french": "fr", "russian": "ru", "bengali": "bn", "english": "us"}


def convert_culturalbench(path: str | Path) -> list[CultureItem]:
    """CulturalBench questions all name their country, so every item is localized; distractor options
    answer for no country (null in option_country). Empty options are dropped."""
    path = Path(path)
    items = []
    for number, row in _rows(path):
        where = f"{path} row {number}"
        if "choices" in row:
            _require(row, ("question_idx", "country", "question", "choices", "answer"), where)
            choices, question = list(row["choices"]), row["question"]
        else:
            _require(row, ("question_idx", "prompt_question", "prompt_option_a", "answer", "country"), where)
            choices = [row.get(f"prompt_option_{c}") for c in "abcd"]
            question = row["prompt_question"]
        gold_label = str(row["answer"]).strip().upper()
        if gold_label not in "ABCD" or not gold_label:
            raise ValueError(f"{where}: answer: expected a letter A-D, got {row['answer']!r}")
        gold_text = choices[_index_of(gold_label)]
        options = list(dict.fromkeys(str(c).strip() for c in choices if c is not None and str(c).strip()))
        country = country_id(row["country"])
        items.append(_item(where,
            id=f"culturalbench-{row['question_idx']}", question_id=f"culturalbench-{row['question_idx']}",
            country=country, language_group="english", localization="localized", topic="general",
            mcq_prompt=question, options=tuple(options), gold_index=options.index(str(gold_text).strip()),
            option_country=tuple(country if o == str(gold_text).strip() else None for o in options),
        ))
    return items


def convert_paper(source: str | Path, split: str = "train") -> list[CultureItem]:
    """The paper's dataset from a local file/dir or, when the hub is reachable, its hub id; `split` one of its splits
    or `all` (every split, rows numbered per split). Without an id column the two variants of a question are paired
    by content: same country, same option set, same gold option. The `rejected_<model>_mcq` / `_open_ended` columns
    (a model's own answers, the paper's rejected responses) become the items' `model_answers`."""
    rows = _paper_rows(source, split)
    items = []
    for number, row in rows:
        where = f"{source} row {number}"
        _require(row, ("country", "localization_status", "prompt-mcq", "chosen-mcq"), where)
        if not isinstance(row["country"], str) or not row["country"].strip():
            raise ValueError(f"{where}: country: expected a country name, got {row['country']!r}")
        country = country_id(row["country"])
        stem, options = _paper_options(str(row["prompt-mcq"]), where)
        gold = _paper_gold(str(row["chosen-mcq"]), options, where)
        status = str(row["localization_status"]).strip().lower()
        localization = "localized" if status == "localized" else "nonlocalized" if status in ("nolocalized", "nonlocalized", "non-localized") else None
        if localization is None:
            raise ValueError(f"{where}: localization_status: expected localized or nolocalized, got {status!r}")
        open_prompt = row.get("prompt_open_ended") or None
        reference = row.get("chosen_open_ended") or None
        if bool(open_prompt) != bool(reference):
            empty = "chosen_open_ended" if open_prompt else "prompt_open_ended"
            raise ValueError(f"{where}: {empty}: empty while its open-ended counterpart is set")
        question_id = str(row.get("question_id") or row.get("id") or _paper_question_key(country, options, gold))
        items.append(_item(where,
            id=f"{question_id}-{localization}" if row.get("question_id") else f"paper-{number}",
            question_id=question_id, country=country, language_group=LANGUAGE_OF.get(country, "unknown"),
            localization=localization, topic=str(row.get("topic") or "general"), mcq_prompt=stem or row["prompt-mcq"],
            options=tuple(options), gold_index=gold,
            option_country=tuple(country if i == gold else None for i in range(len(options))),
            open_prompt=open_prompt, reference_answer=reference, model_answers=_model_answers(row),
        ))
    return items


_REJECTED_COLUMN = re.compile(r"^rejected[_-](.+?)[_-](mcq|open[_-]ended)$")


def _model_answers(row: dict[str, Any]) -> dict[str, dict[str, str]] | None:
    """{model: {"mcq": answer, "open": answer}} from a row's rejected_<model>_{mcq,open_ended} columns."""
    answers: dict[str, dict[str, str]] = {}
    for column, value in row.items():
        match = _REJECTED_COLUMN.match(str(column))
        if match and isinstance(value, str) and value.strip():
            form = "mcq" if match[2] == "mcq" else "open"
            answers.setdefault(model_key(match[1]), {})[form] = value.strip()
    return answers or None


def model_key(name: str) -> str:
    """How a model is named in the paper's columns and matched to a run's model: `google/gemma-2-2b-it` and
    `gemma_2_2b_it` are both `gemma-2-2b-it`."""
    return re.sub(r"[^a-z0-9.]+", "-", str(name).split("/")[-1].lower()).strip("-")


def _paper_options(prompt: str, where: str) -> tuple[str, list[str]]:
    """Stem and options of prompt-mcq; an option-like line out of sequence after the options began is an error
    (it would otherwise be dropped, and the gold number could then point at the wrong option)."""
    stem, options = split_mcq_prompt(prompt)
    if len(options) < 2:
        raise ValueError(f"{where}: prompt-mcq: expected numbered or lettered option lines, found {len(options)}")
    lines = prompt.splitlines()
    first = next(i for i, line in enumerate(lines) if (m := _OPTION_LINE.match(line)) and m.group(2) == options[0])
    for line in lines[first:]:
        match = _OPTION_LINE.match(line)
        if match and match.group(2) not in options:
            raise ValueError(f"{where}: prompt-mcq: option line {line.strip()!r} is out of sequence after "
                             f"{len(options)} options")
    return stem, options


def _paper_gold(answer: str, options: list[str], where: str) -> int:
    """The gold index from chosen-mcq: one \\boxed{k} (k the option's printed number or letter), a bare label, or
    the option's text. `\\boxed{k}: text` must name option k's own text."""
    boxed = set(_BOXED.findall(answer))
    if len(boxed) > 1:
        raise ValueError(f"{where}: chosen-mcq: {answer!r} boxes {len(boxed)} different answers")
    gold = option_index_of(answer, options)
    if gold is None or not 0 <= gold < len(options):
        raise ValueError(f"{where}: chosen-mcq: {answer!r} names none of the {len(options)} options")
    match = _BOXED.search(answer)
    if match and not answer[: match.start()].strip() and answer[match.end():].lstrip()[:1] in (":", "-"):
        text = answer[match.end():].lstrip()[1:].strip()
        if text and text != options[gold].strip():
            raise ValueError(f"{where}: chosen-mcq: {match.group(0)} is option {options[gold]!r} but the answer "
                             f"text reads {text!r}")
    return gold


def _paper_question_key(country: str, options: list[str], gold: int) -> str:
    """A question id shared by a question's localized and non-localized rows (they differ in the prompt only)."""
    key = json.dumps([country, sorted(o.strip() for o in options), options[gold].strip()], ensure_ascii=False)
    return f"paper-{country}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _paper_rows(source: str | Path, split: str) -> list[tuple[int, dict[str, Any]]]:
    path = Path(source)
    if path.is_file() and path.suffix in (".csv", ".json", ".jsonl"):
        return list(_rows(path))
    import datasets  # a hub id, a local dataset dir or a parquet file: the real hub code path

    try:
        if path.is_file():
            loaded = datasets.load_dataset(path.suffix.lstrip("."), data_files=str(path))
        else:
            loaded = datasets.load_dataset(str(source))
    except Exception as err:  # noqa: BLE001 - datasets raises many types (network, missing split, format)
        raise ValueError(f"paper data: cannot load {source!r} ({type(err).__name__}: {err})") from None
    if split == "all":
        return [(f"{name}:{number}", row) for name in sorted(loaded) for number, row in enumerate(loaded[name], 1)]
    if split not in loaded:
        raise ValueError(f"paper data: {source!r} has no split {split!r}; expected one of {', '.join(sorted(loaded))} "
                         "or all")
    return list(enumerate(loaded[split], 1))


CONVERTERS: dict[str, Callable[[str | Path], list[CultureItem]]] = {
    "paper": convert_paper, "localization-gap": convert_localization_gap, "culturalbench": convert_culturalbench,
}
