"""Requests between OpenAI chat completions and Anthropic Messages.

Both translators (``dialects.chat_to_messages``, ``dialects.messages_to_chat``) read the
parsed body and build a new dict; they never mutate their input.
Every field is looked at: a field that changes the answer and has no equivalent raises
``Untranslatable`` naming the client's path to it (the gateway answers 400), and so does an
unknown field (an upstream of the other dialect would refuse it or, worse, ignore it).
``null`` values count as absent, as both APIs treat them.

OpenAI -> Anthropic
    system and developer messages, wherever they stand, become ``system`` (Anthropic has no
    mid-conversation system turn): a string for one plain message, text blocks otherwise.
    Consecutive messages of one role are merged into one turn (tool results with the user
    turn after them), since Anthropic wants alternating turns; an assistant message with no
    text and no tool calls is left out (Anthropic refuses empty content, and it said nothing).
    Images: ``data:`` URLs become base64 sources, http(s) URLs url sources; a ``file`` part with
    ``file_data`` (PDF) becomes a base64 document. Tool call arguments must be a JSON object
    ("" counts as {}). ``max_completion_tokens`` (else ``max_tokens``, else the provider's
    default) becomes ``max_tokens``. ``reasoning_effort`` becomes ``thinking`` with a budget of
    1024 (minimal, low), 4096 (medium), 16384 (high) or 32768 (xhigh) tokens ("none": no
    thinking); Anthropic counts thinking inside ``max_tokens`` and wants the budget below it,
    so without a client limit ``max_tokens`` is the default plus the budget, and under a
    client limit the budget is cut to fit (below Anthropic's minimum of 1024: Untranslatable).
    ``user`` (else ``safety_identifier``) becomes ``metadata.user_id``; ``top_k`` (an extra
    vLLM and others accept) is passed on.
    Dropped, because they do not change the answer: ``store``, ``metadata`` (stored-completion
    tags; the gateway reads them as tags before translating), ``service_tier``, ``prediction``
    (a latency hint), ``prompt_cache_key``/``prompt_cache_options``/``prompt_cache_retention``
    (Anthropic caches by its own rules), ``stream_options`` (Anthropic streams always carry
    usage), ``seed`` (best-effort determinism on OpenAI's side only; dropping it does not change
    which answers are likely), a content part's ``detail`` and a message's ``name`` (Anthropic
    has no participant names), an assistant message's ``reasoning_content`` (DeepSeek-style
    history: Anthropic takes back only thinking it signed itself). For the same reason a tool
    loop with ``reasoning_effort`` gets Anthropic's own 400 on the second turn (it wants the
    previous turn's signed thinking blocks, which an OpenAI client cannot hold).
    Refused: ``n`` > 1, ``logprobs``, ``top_logprobs``, ``audio``, non-text ``modalities``,
    ``logit_bias``, non-zero ``presence_penalty``/``frequency_penalty``, ``response_format``
    other than text, ``functions``/``function_call`` (the legacy API: its answer shape
    differs), ``verbosity``, ``web_search_options``, ``moderation``, ``temperature`` over 1
    (Anthropic's range is 0..1), audio input, ``file_id`` references, tools other than
    functions, ``tool_choice`` ``allowed_tools``.

Anthropic -> OpenAI
    ``system`` becomes one system message first. Text and images (base64 -> ``data:`` URL,
    an http(s) url -> url: no other scheme, which an OpenAI-format server might read from its
    own disk); documents: a base64 PDF becomes a ``file`` part (title -> filename), a text
    source a text part (its title on the first line); ``tool_use`` blocks become the assistant's
    ``tool_calls`` (input dumped compactly); each ``tool_result`` becomes a ``tool`` message,
    placed before the rest of its user turn as OpenAI requires; its text blocks are kept as text
    parts, and ``is_error: true`` (which OpenAI cannot say) is kept as an "Error: " prefix on the
    text so the model still learns the call failed. Thinking and redacted thinking blocks in the
    history are dropped: OpenAI chat has no place for them and models do not read back earlier
    turns' reasoning. ``max_tokens`` stays ``max_tokens`` (what vLLM, Together, Fireworks and
    OpenAI's non-reasoning models read; a provider needing ``max_completion_tokens`` renames
    it). ``stop_sequences`` -> ``stop``, ``metadata.user_id`` -> ``user``, ``top_k`` is passed
    on as an extra field (vLLM and others honour it; OpenAI itself would refuse it), ``stream``
    asks for ``stream_options.include_usage`` so usage is known. ``thinking`` enabled becomes
    ``reasoning_effort`` (budget <= 2048 low, <= 8192 medium, else high); disabled or adaptive
    thinking sends none (the upstream model decides, as adaptive asks). ``output_config.effort``
    low/medium/high becomes ``reasoning_effort`` too.
    Dropped, because they do not change the answer: ``cache_control`` (top level and on blocks
    and tools), ``service_tier``, ``speed``, ``diagnostics``, citations already in history.
    Refused: server tools (web search, code execution, ...), ``container``, ``mcp_servers``,
    ``context_management``, ``inference_geo`` (a residency promise we cannot keep upstream),
    ``output_config.format``, images by ``file_id``, image ``transformations``, URL or content
    documents, documents with citations enabled or ``context``, search results, images or
    documents inside tool results (OpenAI tool messages carry text only), server tool blocks.
    A final assistant message (Anthropic's prefill) is sent as an ordinary assistant message.
"""

from __future__ import annotations

from dialects.chat_to_messages import openai_chat_to_anthropic
from dialects.messages_to_chat import anthropic_to_openai_chat

__all__ = ["anthropic_to_openai_chat", "openai_chat_to_anthropic"]
