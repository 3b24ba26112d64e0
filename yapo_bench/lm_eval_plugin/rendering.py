"""How a steered lm-eval model renders its requests, on either engine: the prompting baseline's instruction in front
of each request (or in the chat template's system turn), and the chat template that rendered them, recorded with the
results. A mixin in front of lm-eval's HFLM (`yapo_steered`) and VLLM (`yapo_steered_vllm`): both render through
the same methods, so the two engines see the same text."""

from __future__ import annotations

import hashlib
from typing import Any

from yapo_bench.methods.prompt import Instruction, render_instruction


class PromptRendering:
    """Needs lm-eval's `tokenizer`, `chat_template(bool)` and `apply_chat_template` behind it (TemplateLM's)."""

    instruction: Instruction | None = None
    _system_turn: bool | None = None
    _chat_template: str | None = None  # the template a request was rendered through, recorded with results

    def instruct(self, prompt: str | None, direction: int) -> None:
        """State `prompt` (culture:<country> | behaviour:<name>) in every later request, toward the target for
        direction 1 and away for -1; None: no instruction."""
        self.instruction = render_instruction(prompt, direction) if prompt else None

    def _instructed(self, requests: list) -> list:
        """With a prompt, each request's context as it runs: the instruction in front, unless it is there already
        (put in the chat template's system or user turn by `apply_chat_template`, or a repeated request). The
        requests are lm-eval's own instances, changed in place, so that the arguments lm-eval logs are the ones
        that ran."""
        if self.instruction is None:
            return requests
        text = self.instruction.text
        for request in requests:
            context, *rest = request.args
            if text not in context:
                request.arguments = (f"{text}\n\n{context}", *rest)
        return requests

    def _refuse_rolling_with_prompt(self) -> None:
        if self.instruction is not None:  # a rolling window scores a text, it answers no question
            raise ValueError("prompt: not for loglikelihood_rolling tasks (perplexity has no question to instruct)")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """lm-eval's rendering through the chat template, with the prompt's instruction in the system turn (before
        any system text lm-eval passes). A template without a system turn (Gemma's) gets the system text in front of
        the first user turn: lm-eval would drop it, silently."""
        history = [dict(message) for message in chat_history]
        if self.instruction is not None:
            history = with_system_text(history, self.instruction.text)
        if self._system_turn is None:
            self._system_turn = has_system_turn(self.tokenizer)  # type: ignore[attr-defined]
        if not self._system_turn:
            history = system_into_user(history)
        self._chat_template = self.chat_template(True) or ""  # type: ignore[attr-defined]
        return super().apply_chat_template(history, add_generation_prompt)  # type: ignore[misc]

    def rendering_info(self) -> dict[str, Any]:
        """What the results record of the rendering: the chat template's hash (None: plain text)."""
        return {"chat_template_sha": hashlib.sha256(self._chat_template.encode()).hexdigest()
                if self._chat_template is not None else None}


def with_system_text(history: list[dict[str, str]], text: str) -> list[dict[str, str]]:
    """The chat with `text` as its system turn, in front of a system text it already has."""
    if history and history[0].get("role") == "system":
        return [{"role": "system", "content": f"{text}\n\n{history[0]['content']}"}, *history[1:]]
    return [{"role": "system", "content": text}, *history]


def system_into_user(history: list[dict[str, str]]) -> list[dict[str, str]]:
    """The chat without a system turn: its text in front of the first user turn."""
    if not history or history[0].get("role") != "system":
        return history
    system, rest = history[0]["content"], list(history[1:])
    for index, message in enumerate(rest):
        if message.get("role") == "user":
            rest[index] = {**message, "content": f"{system}\n\n{message['content']}"}
            return rest
    return [{"role": "user", "content": system}, *rest]


def has_system_turn(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders a system turn (Gemma's raises "System role not supported")."""
    import jinja2

    probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    try:
        tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except jinja2.TemplateError:
        return False
    return True
