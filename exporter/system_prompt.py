"""What to do with the system prompt of each example: keep it, replace it, or drop it.

Fine-tuning lets a short prompt (or none) do the work of the long one the teacher needed, which
cuts every later call's input tokens; ``replace`` and ``drop`` are the experiments that test
how short it can get. Replacing or dropping removes every system message of the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from exporter.examples import Example

Mode = Literal["keep", "replace", "drop"]


@dataclass(frozen=True, slots=True)
class SystemPrompt:
    mode: Mode = "keep"
    text: str | None = None
    """The replacement, for ``replace``."""

    def __post_init__(self) -> None:
        if (self.mode == "replace") != (self.text is not None):
            raise ValueError("a replacement text goes with mode 'replace', and only with it")

    def apply(self, example: Example) -> None:
        if self.mode == "keep":
            return
        messages = [m for m in example.messages if m["role"] != "system"]
        if self.text is not None:
            messages.insert(0, {"role": "system", "content": self.text})
        example.messages = messages

    def describe(self) -> str:
        if self.mode == "replace":
            return f"replaced by a {len(self.text or '')}-character prompt"
        return {"keep": "kept", "drop": "dropped"}[self.mode]
