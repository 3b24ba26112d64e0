"""The prompting baseline (`prompt`): no vector; the target is stated in the input. The field's first question of a
steering method is whether it beats simply asking (AxBench, ICML 2025: prompting beat every representation method on
Gemma-2). `prompt+<method>` states it and steers with the method's vector at once.

The instruction is a Jinja template per unit kind under steering_prompts/ (culture.jinja, behaviour.jinja), which a
user may edit; the rendered text is what a result records (its sha256, and the text). `yapo_steered` puts it in the
chat template's system turn, or in front of the user turn where the template has none (Gemma) or where no chat
template is applied, for log-likelihood and generation alike (`lm_eval_plugin.model`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import jinja2

from yapo_bench.resources import resource_dir

NAME = "prompt"
COMBINED = "prompt+"  # prompt+yapo: the instruction and yapo's vector at once
TEMPLATES_DIR = "steering_prompts"
UNIT_KINDS = ("culture", "behaviour")


@dataclass(frozen=True)
class Instruction:
    """The rendered instruction for one unit (`culture:egypt`, `behaviour:power-seeking`) and direction."""

    unit: str
    direction: int
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def record(self) -> dict[str, object]:
        return {"unit": self.unit, "direction": self.direction, "sha256": self.sha256, "text": self.text}


def parse_unit(unit: str) -> tuple[str, str]:
    """(kind, name) of `culture:<country>` or `behaviour:<behaviour>`."""
    kind, _, name = str(unit).partition(":")
    if kind not in UNIT_KINDS or not name:
        raise ValueError(f"prompt: {unit!r}; expected culture:<country> or behaviour:<behaviour>, e.g. culture:egypt")
    return kind, name


def render_instruction(unit: str, direction: int = 1) -> Instruction:
    """The instruction of steering_prompts/<kind>.jinja for `unit`, toward it (direction +1) or away (−1)."""
    kind, name = parse_unit(unit)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir(TEMPLATES_DIR))),
                                     undefined=jinja2.StrictUndefined, autoescape=False)
    variables = {"country": name} if kind == "culture" else {"behaviour": name}
    try:
        text = environment.get_template(f"{kind}.jinja").render(direction=direction, **variables).strip()
    except (jinja2.TemplateError, KeyError) as err:  # a behaviour the template does not describe: KeyError
        raise ValueError(f"prompt: {TEMPLATES_DIR}/{kind}.jinja cannot render {unit!r} ({err!r})") from None
    if not text:
        raise ValueError(f"prompt: {TEMPLATES_DIR}/{kind}.jinja renders {unit!r} as empty text")
    return Instruction(unit, direction, text)


def split_method(name: str) -> tuple[bool, str | None]:
    """(prompted, vector method) of a run's method name: base → (False, None), prompt → (True, None), yapo →
    (False, "yapo"), prompt+yapo → (True, "yapo"). Names are not checked here (`methods.run_method`)."""
    if name == NAME:
        return True, None
    if name.startswith(COMBINED):
        return True, name.removeprefix(COMBINED)
    return False, None if name == "base" else name
