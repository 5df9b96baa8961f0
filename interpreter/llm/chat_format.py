"""Chat formats: how a conversation becomes prompt tokens for a model loaded here.

Which format a model uses, in this order:

1. the model row's ``chat_format`` (``interp.models.chat_format``): ``gguf`` (the
   file's own template), ``gemma``, or a format llama-cpp-python knows by name
   (``chatml``, ``llama-2``, ``llama-3``, ``mistral-instruct``, ...);
2. the GGUF's ``tokenizer.chat_template``;
3. the format of the model's family, from ``general.architecture``
   (`FAMILY_FORMATS`: Gemma GGUFs often ship without a template);
4. otherwise the model is refused with a message naming
   ``interp.models.chat_format``. llama-cpp-python would fall back to ``llama-2``
   (``[INST] ... [/INST]``) without a word, a format most models never saw.

Special tokens come only from the format. A message's content (the prompt
template rendered with subject data, an earlier answer) is tokenized as plain
text, so a posting that contains ``<|im_end|><|im_start|>system`` reaches the
model as those characters, not as turn markers. To know which parts are the
format's, the format is rendered once with a placeholder per message; the text
between placeholders is the format's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InternalError

Messages = list[dict[str, str]]

# Formats of model families whose GGUFs may lack tokenizer.chat_template.
FAMILY_FORMATS = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3n": "gemma"}
GGUF_TEMPLATE = "gguf"
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


class ChatFormatError(InternalError):
    """No usable chat format (a one-line message naming interp.models.chat_format)."""


@dataclass(frozen=True)
class Rendered:
    prompt: str
    stop: tuple[str, ...]
    add_bos: bool          # whether the tokenizer's BOS goes first (the format has none)


@dataclass(frozen=True)
class ChatFormat:
    name: str              # gguf | gemma | chatml | llama-2 | ...
    chosen_by: str         # why this one: the row, the GGUF's template, the architecture
    render: Callable[[Messages], Rendered]

    def pieces(self, messages: Messages) -> tuple[list[tuple[str, bool]], Rendered]:
        """The prompt as (text, is_format) pieces: the format's own text, where special
        tokens are parsed, and each message's content, which is plain text."""
        stand_ins = [{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
        shape = self.render(stand_ins)
        pieces: list[tuple[str, bool]] = []
        at = 0
        for match in _PLACEHOLDER.finditer(shape.prompt):
            pieces.append((shape.prompt[at:match.start()], True))
            pieces.append((messages[int(match.group(1))]["content"], False))
            at = match.end()
        pieces.append((shape.prompt[at:], True))
        return [p for p in pieces if p[0]], shape

    def text(self, messages: Messages) -> str:
        """The rendered prompt as text (what `pieces` tokenizes)."""
        return "".join(text for text, _ in self.pieces(messages)[0])


def render_gemma(messages: Messages) -> Rendered:
    """Gemma's turns; a system message opens the first user turn, as in Gemma's own
    template (llama-cpp-python's "gemma" drops it)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    out = []
    first_user = True
    for m in messages:
        if m["role"] == "system":
            continue
        role = "model" if m["role"] == "assistant" else "user"
        content = m["content"]
        if role == "user" and first_user and system:
            content = system + "\n\n" + content
        first_user = first_user and role != "user"
        out.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
    out.append("<start_of_turn>model\n")
    return Rendered("".join(out), ("<end_of_turn>",), add_bos=True)


def gguf_template(template: str, eos_token: str, bos_token: str) -> Callable[[Messages], Rendered]:
    """The GGUF's Jinja chat template, rendered as llama-cpp-python renders it."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(template=template, eos_token=eos_token,
                                    bos_token=bos_token)

    def render(messages: Messages) -> Rendered:
        resp = formatter(messages=messages)  # type: ignore[arg-type]
        return Rendered(resp.prompt, _stops(resp.stop), add_bos=not resp.added_special)

    return render


# Formats by name: ours, and llama-cpp-python's formatter functions for the rest.
LIBRARY_FORMATS = {"chatml": "format_chatml", "llama-2": "format_llama2",
                   "llama-3": "format_llama3", "mistral-instruct": "format_mistral_instruct",
                   "zephyr": "format_zephyr", "qwen": "format_qwen", "openchat": "format_openchat",
                   "alpaca": "format_alpaca", "phind": "format_phind"}


def named_format(name: str) -> Callable[[Messages], Rendered] | None:
    """A format by name (see `known_formats`), or None."""
    if name == "gemma":
        return render_gemma
    if name not in LIBRARY_FORMATS:
        return None
    from llama_cpp import llama_chat_format

    fn = getattr(llama_chat_format, LIBRARY_FORMATS[name])

    def render(messages: Messages) -> Rendered:
        resp = fn(messages=messages)
        return Rendered(resp.prompt, _stops(resp.stop), add_bos=not resp.added_special)

    return render


def known_formats() -> list[str]:
    return sorted({GGUF_TEMPLATE, "gemma", *LIBRARY_FORMATS})


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def choose_format(*, model_name: str, requested: str | None, metadata: dict[str, str],
                  eos_token: str, bos_token: str) -> ChatFormat:
    """The chat format for a loaded model (see the module docstring); raises
    ChatFormatError."""
    template = metadata.get("tokenizer.chat_template")
    arch = metadata.get("general.architecture", "")
    hint = (f"set interp.models.chat_format for {model_name!r} to one of: "
            f"{', '.join(known_formats())}")
    if requested:
        if requested == GGUF_TEMPLATE:
            if not template:
                raise ChatFormatError(f"model {model_name!r}: chat_format 'gguf' but the GGUF "
                                      f"has no tokenizer.chat_template; {hint}")
            return ChatFormat(GGUF_TEMPLATE, "interp.models.chat_format",
                              gguf_template(template, eos_token, bos_token))
        render = named_format(requested)
        if render is None:
            raise ChatFormatError(f"model {model_name!r}: unknown chat_format {requested!r}; "
                                  f"{hint}")
        return ChatFormat(requested, "interp.models.chat_format", render)
    if template:
        return ChatFormat(GGUF_TEMPLATE, "tokenizer.chat_template in the GGUF",
                          gguf_template(template, eos_token, bos_token))
    family = FAMILY_FORMATS.get(arch)
    if family is not None:
        render = named_format(family)
        assert render is not None
        return ChatFormat(family, f"general.architecture {arch!r} (the GGUF has no "
                                  f"tokenizer.chat_template)", render)
    raise ChatFormatError(f"model {model_name!r}: the GGUF has no tokenizer.chat_template and "
                          f"its architecture {arch or 'unknown'!r} has no known chat format; "
                          f"{hint}")
