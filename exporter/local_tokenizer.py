"""A local base model's own tokenizer and chat template: ``--tokenizer DIR`` (a directory with
``tokenizer.json``, such as the local model's own), or a ``--base`` that is such a directory.

The tokenizer is read with the ``tokenizers`` library (part of the ``train`` extra: ``pip
install .[train]``); without it the count falls back to tiktoken, saying why. A row is counted
by rendering the model's chat template (``chat_template.jinja``, or ``chat_template`` in
``tokenizer_config.json``) over its messages and tools with jinja2, as ``transformers``'
``apply_chat_template`` does (a sandboxed environment, ``raise_exception``, ``tojson``), and
encoding the text: the exact number of tokens the model trains on. Without a template the
data-prep guide's per-message estimate is used with this tokenizer's text counts.

What the template shows about the destination: whether it refuses a system message (rendering
one raises), whether it renders tools at all (its source never mentions them), and which rows
it refuses (the template's own message, e.g. roles that must alternate). The context length is
``max_position_embeddings`` of the directory's ``config.json`` (else ``model_max_length`` of
its tokenizer config).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Protocol

from exporter.errors import BadFilter

TEMPLATE_FILE = "chat_template.jinja"
SYSTEM_PROBE = "SYSTEM-PROBE"
_MAX_CONTEXT = 1 << 30
"""``model_max_length`` above this is the library's "no limit" placeholder."""


class Encoding(Protocol):
    @property
    def ids(self) -> list[int]: ...


class Tokenizer(Protocol):
    def encode(
        self,
        sequence: Any,
        pair: Any | None = ...,
        is_pretokenized: bool = ...,
        add_special_tokens: bool = ...,
    ) -> Encoding: ...


class TemplateRefused(Exception):
    """The chat template raised for this row: its message says why."""


def load_tokenizer(directory: Path) -> Tokenizer:
    """The directory's ``tokenizer.json``; BadFilter when there is none, ImportError without
    the ``tokenizers`` library."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise BadFilter(
            f"--tokenizer {directory}: no tokenizer.json there (give the local model's "
            "directory, or a directory saved with tokenizer.save_pretrained)"
        )
    from tokenizers import Tokenizer as HFTokenizer

    try:
        tokenizer: Tokenizer = HFTokenizer.from_file(str(path))
    except Exception as exc:
        raise BadFilter(f"--tokenizer {directory}: cannot read tokenizer.json: {exc}") from None
    return tokenizer


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _token_text(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def template_source(directory: Path) -> str | None:
    """The chat template's jinja source, or None when the directory has none."""
    path = directory / TEMPLATE_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8")
    template = _json(directory / "tokenizer_config.json").get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) and template.strip() else None


def context_length(directory: Path) -> int | None:
    value = _json(directory / "config.json").get("max_position_embeddings")
    if isinstance(value, int) and value > 0:
        return value
    value = _json(directory / "tokenizer_config.json").get("model_max_length")
    if isinstance(value, int | float) and 0 < value < _MAX_CONTEXT:
        return int(value)
    return None


class ChatTemplate:
    """A compiled chat template, rendered as ``apply_chat_template`` would."""

    def __init__(self, source: str, directory: Path) -> None:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        class Generation(jinja2.ext.Extension):
            """``{% generation %}...{% endgeneration %}`` (assistant masks): renders its body."""

            tags = {"generation"}

            def parse(self, parser: Any) -> Any:
                lineno = next(parser.stream).lineno
                body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
                return jinja2.nodes.CallBlock(
                    self.call_method("_render", []), [], [], body
                ).set_lineno(lineno)

            def _render(self, caller: Any) -> str:
                return str(caller())

        def raise_exception(message: str) -> None:
            raise jinja2.exceptions.TemplateError(message)

        def tojson(
            value: Any,
            ensure_ascii: bool = False,
            indent: int | None = None,
            separators: Any = None,
            sort_keys: bool = False,
        ) -> str:
            return json.dumps(
                value,
                ensure_ascii=ensure_ascii,
                indent=indent,
                separators=separators,
                sort_keys=sort_keys,
            )

        def strftime_now(fmt: str) -> str:
            return dt.datetime.now().strftime(fmt)

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[Generation, jinja2.ext.loopcontrols],
        )
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = strftime_now
        try:
            self._template = env.from_string(source)
        except jinja2.exceptions.TemplateError as exc:
            raise BadFilter(f"the chat template of {directory} does not compile: {exc}") from None
        config = _json(directory / "tokenizer_config.json")
        self._special = {
            "bos_token": _token_text(config.get("bos_token")),
            "eos_token": _token_text(config.get("eos_token")),
        }
        self.renders_tools = "tools" in source or "tool_calls" in source
        self.system = "yes" if self._takes_system() else "no"

    def render(self, messages: list[Any], tools: Any = None) -> str:
        """The row as the model sees it in training; TemplateRefused when the template
        raises."""
        try:
            return str(
                self._template.render(
                    messages=messages,
                    tools=tools or None,
                    add_generation_prompt=False,
                    **self._special,
                )
            )
        except Exception as exc:  # the template's raise_exception, or its own mistake
            raise TemplateRefused(str(exc) or type(exc).__name__) from None

    def _takes_system(self) -> bool:
        probe = [
            {"role": "system", "content": SYSTEM_PROBE},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ]
        try:
            return SYSTEM_PROBE in self.render(probe)
        except TemplateRefused:
            return False
