"""Chat templates: named Jinja templates, tokenizer preparation, and rendering into trained segments.

A conversation is rendered with the tokenizer's own `apply_chat_template(tokenize=False)`, one
assistant turn at a time, and the strings are diffed:

    render(msgs[:i], add_generation_prompt=True)  = prompt so far       -> Segment(train=False)
    render(msgs[:i+1])                            = ... + reply + <eot> -> Segment(train=True)

so the text a model sees at generation time is, by construction, a prefix of the training text.
A template for which this does not hold (it rewrites earlier turns) is refused with a ConfigError.

Named templates (`data.template`): alpaca (the two Stanford Alpaca prompts, Taori et al. 2023),
chatml (<|im_start|>role ... <|im_end|>) and llama3 (<|begin_of_text|>, <|start_header_id|>,
<|end_header_id|>, <|eot_id|>, as in Meta's Llama 3 tokenizer config).
"""

from __future__ import annotations

import re
import weakref
from pathlib import Path
from typing import Iterable

from tunewright.data.types import Message, Segment
from tunewright.errors import ConfigError, DataError
from tunewright.registry import suggest

__all__ = ["NAMED", "resolve_template", "prepare_tokenizer", "end_of_turn_ids", "end_of_turn_tokens",
           "render", "conversation_dicts"]

_ALPACA_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                      "context. Write a response that appropriately completes the request.")
_ALPACA_NO_INPUT = ("Below is an instruction that describes a task. "
                    "Write a response that appropriately completes the request.")

# Multi-turn alpaca repeats the whole block; a system message replaces the first (sentence) line.
# The separator between blocks opens the next prompt, so a reply ends exactly at its EOS.
_ALPACA = (r"""{%- if messages and messages[0]['role'] == 'system' -%}
{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}
{%- else -%}{%- set system = none -%}{%- set loop_messages = messages -%}{%- endif -%}
{%- for m in loop_messages -%}
{%- if m['role'] == 'user' -%}
{%- set has_input = m.context is defined and m.context -%}
{%- set header = system if system is not none else ('""" + _ALPACA_WITH_INPUT + r"""' if has_input
    else '""" + _ALPACA_NO_INPUT + r"""') -%}
{{- ('' if loop.first else '\n\n') + header + '\n\n### Instruction:\n' + m['content'] -}}
{{- ('\n\n### Input:\n' + m['context'] if has_input else '') + '\n\n### Response:\n' -}}
{%- elif m['role'] == 'assistant' -%}
{{- m['content'] + (eos_token if eos_token is defined and eos_token else '') -}}
{%- else -%}
{{- raise_exception('the alpaca template has no role ' + m['role']
    + ' (only a first system message, user and assistant)') -}}
{%- endif -%}
{%- endfor -%}""")

# Standard ChatML, except that the newline after <|im_end|> is written before the next <|im_start|>:
# the same tokens for every turn, and a finished conversation ends on its end-of-turn token.
_CHATML = r"""{%- for m in messages -%}
{%- if not loop.first -%}{{ '\n' }}{%- endif -%}
{{ '<|im_start|>' + m['role'] + '\n' + m['content'] }}
{%- if m.context is defined and m.context -%}{{ '\n\n' + m['context'] }}{%- endif -%}
{{ '<|im_end|>' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ ('\n' if messages else '') + '<|im_start|>assistant\n' }}{%- endif -%}"""

_LLAMA3 = r"""{{ '<|begin_of_text|>' }}
{%- for m in messages -%}
{%- set content = m['content'] + ('\n\n' + m['context'] if m.context is defined and m.context else '') -%}
{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + content | trim + '<|eot_id|>' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif -%}"""

NAMED: dict[str, str] = {"alpaca": _ALPACA, "chatml": _CHATML, "llama3": _LLAMA3}

# Markers a template writes that must be single special tokens: <|im_start|>, <|eot_id|>, ...
_MARKER = re.compile(r"<\|[A-Za-z0-9_]+\|>")
_PROBE = "tunewright-probe-reply"  # assistant text used to find what a template writes after a reply
_EOT_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# ------------------------------------------------------------------ choosing and installing a template

def resolve_template(name: str | None, tokenizer) -> str:
    """The Jinja text for `data.template`: a NAMED template, a `.jinja` file, or None for the tokenizer's own."""
    if name is None:
        own = tokenizer.chat_template
        if isinstance(own, dict):  # several named templates: the default one
            own = own.get("default")
        if not own:
            raise ConfigError(f"data.template: the tokenizer has no chat template; set data.template to one of "
                              f"{', '.join(NAMED)} or a .jinja file")
        return own
    if name in NAMED:
        return NAMED[name]
    if name.endswith(".jinja"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"data.template: no such template file {name}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{name}: data.template: not UTF-8 text ({e.reason})") from None
        _check_syntax(text, name)
        return text
    raise ConfigError(f"data.template: unknown template {name!r}{suggest(name, NAMED)}; "
                      f"known: {', '.join(NAMED)}, or a path ending in .jinja")


def _check_syntax(text: str, where: str) -> None:
    import jinja2

    try:
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(text)
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"{where}:{e.lineno}: data.template: Jinja syntax error: {e.message}") from None


def prepare_tokenizer(tokenizer, template: str) -> list[int]:
    """Install `template` on `tokenizer`; return the ids of tokens added to its vocabulary.

    Adds the `<|...|>` markers the template writes that the tokenizer lacks (ChatML on a base model)
    as special tokens, so each is one id; the caller resizes the embeddings and trains those rows.
    Sets a pad token when missing, reusing unk or eos: our labels, not pad ids, decide the loss, so
    an EOS that doubles as pad still keeps its label. Records the end-of-turn tokens as
    `tokenizer.end_of_turn_tokens` (also recomputed from the template by `end_of_turn_ids`).
    """
    tokenizer.chat_template = template
    vocab = tokenizer.get_vocab()
    missing = [m for m in dict.fromkeys(_MARKER.findall(_literal_text(template))) if m not in vocab]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        reuse = tokenizer.unk_token or tokenizer.eos_token
        if reuse is not None:
            tokenizer.pad_token = reuse
        else:  # nothing to reuse: a fresh token, which the caller resizes for like the markers
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
            missing.append("<|pad|>")
    tokenizer.end_of_turn_tokens = end_of_turn_tokens(tokenizer, template)
    return [tokenizer.convert_tokens_to_ids(t) for t in missing]


def _literal_text(template: str) -> str:
    """The template's literal strings (its raw text and string constants), where markers are written."""
    import jinja2
    from jinja2 import nodes

    try:
        ast = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(template)
    except jinja2.TemplateSyntaxError:
        return template
    parts = [n.data for n in ast.find_all(nodes.TemplateData)]
    parts += [n.value for n in ast.find_all(nodes.Const) if isinstance(n.value, str)]
    return "\0".join(parts)


def end_of_turn_tokens(tokenizer, template: str) -> list[str]:
    """The token strings that end an assistant turn: the template's marker (found by rendering a probe
    reply and reading the special token written right after it) and the tokenizer's EOS."""
    # Asked once per row by render(): remembered per tokenizer state (its size and EOS can change).
    key = (template, len(tokenizer), str(tokenizer.eos_token))
    known = _EOT_CACHE.setdefault(tokenizer, {})
    if key not in known:
        known[key] = _probe_end_of_turn(tokenizer, template)
    return list(known[key])


def _probe_end_of_turn(tokenizer, template: str) -> list[str]:
    found: list[str] = []
    try:
        text = _apply(tokenizer, template, [{"role": "user", "content": "hi"},
                                            {"role": "assistant", "content": _PROBE}], False)
    except Exception:  # a template that refuses the probe conversation: EOS alone ends a turn
        text = ""
    at = text.find(_PROBE)
    if at >= 0:
        tail = text[at + len(_PROBE):]
        ids = tokenizer(tail, add_special_tokens=False).input_ids if tail else []
        if ids and ids[0] in tokenizer.added_tokens_decoder:
            found.append(tokenizer.convert_ids_to_tokens(ids[0]))
    if tokenizer.eos_token is not None:
        found.append(str(tokenizer.eos_token))
    return list(dict.fromkeys(found))


def end_of_turn_ids(tokenizer, template: str) -> list[int]:
    """Ids that end an assistant turn (e.g. <|im_end|>, <|eot_id|>) plus EOS: generation stops on any."""
    return [tokenizer.convert_tokens_to_ids(t) for t in end_of_turn_tokens(tokenizer, template)]


# ------------------------------------------------------------------ rendering into segments

def conversation_dicts(messages: Iterable[Message | dict], system_prompt: str | None = None,
                       template: str = "") -> tuple[list[dict], list[bool | None]]:
    """Messages as the dicts Jinja sees ({role, content} plus `context` when present) and their
    per-message `train` flags; `system_prompt` becomes a first system message when there is none.

    A template that never reads `context` (any chat template but alpaca's) would drop alpaca's
    `input` without a word: there it is appended to the content, "instruction\n\ninput"."""
    keeps_context = "context" in template
    dicts, flags = [], []
    for m in messages:
        if isinstance(m, Message):
            role, content, train, context = m.role, m.content, m.train, m.context
        else:
            role, content, train, context = m["role"], m["content"], m.get("train"), m.get("context")
        d = {"role": role, "content": content}
        if context is not None and keeps_context:
            d["context"] = context
        elif context:
            d["content"] = f"{content}\n\n{context}"
        dicts.append(d)
        flags.append(train)
    if system_prompt is not None and not any(d["role"] == "system" for d in dicts):
        dicts.insert(0, {"role": "system", "content": system_prompt})
        flags.insert(0, None)
    return dicts, flags


def render(messages, tokenizer, template: str, *, train_on_turns: str = "all", train_on_inputs: bool = False,
           system_prompt: str | None = None, add_generation_prompt: bool = False) -> list[Segment]:
    """Render a conversation into segments whose `train` flag says which text carries loss.

    Prompt text is train=False; each assistant reply with its end-of-turn marker is train=True,
    limited to the final reply by `train_on_turns="last"`; a message's own `train` flag wins;
    `train_on_inputs=True` trains every segment. Whitespace the template writes after a reply's
    end-of-turn marker is a separate untrained segment. With `add_generation_prompt` the text ends
    with the assistant header, ready for generation. Raises ConfigError when the template is not
    prefix-stable and DataError("<messages>", ...) when the template rejects the conversation.
    """
    msgs, flags = conversation_dicts(messages, system_prompt, template)
    replies = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    for j, (m, flag) in enumerate(zip(msgs, flags)):
        if flag and m["role"] != "assistant":  # prompts are rendered in one piece: no per-turn loss there
            raise DataError("<messages>", None, f"messages[{j}].train",
                            f"only assistant messages can carry loss, not {m['role']!r} ones; "
                            f"data.train_on_inputs trains on every prompt")
    markers = end_of_turn_tokens(tokenizer, template)
    segments: list[Segment] = []
    done = ""  # text rendered so far; every later rendering must extend it
    for i in replies:
        prompt = _apply(tokenizer, template, msgs[:i], True)
        full = _apply(tokenizer, template, msgs[:i + 1], False)
        _check_prefix(done, prompt, i, "the prompt for assistant message")
        _check_prefix(prompt, full, i, "assistant message")
        segments.append(Segment(prompt[len(done):], train_on_inputs))
        flag = flags[i] if flags[i] is not None else (train_on_turns == "all" or i == replies[-1])
        body, tail = _split_tail(full[len(prompt):], markers)
        segments.append(Segment(body, train_on_inputs or flag))
        segments.append(Segment(tail, train_on_inputs))
        done = full
    if not replies or replies[-1] < len(msgs) - 1 or add_generation_prompt:
        end = _apply(tokenizer, template, msgs, add_generation_prompt)
        _check_prefix(done, end, len(msgs) - 1, "the end of the conversation at message")
        segments.append(Segment(end[len(done):], train_on_inputs))
    return [s for s in segments if s.text]


def _apply(tokenizer, template: str, msgs: list[dict], generation_prompt: bool) -> str:
    """One rendering through transformers (the same Jinja sandbox and variables as at inference)."""
    import jinja2

    try:
        if msgs:
            return tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False,
                                                 add_generation_prompt=generation_prompt)
        # apply_chat_template refuses an empty conversation; a reply that opens one needs its header
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(conversations=[[]], chat_template=template,
                                            add_generation_prompt=generation_prompt, **tokenizer.special_tokens_map)
        return rendered[0]
    except jinja2.TemplateError as e:
        raise DataError("<messages>", None, "messages", f"the chat template rejected the conversation: {e}") from None


def _check_prefix(before: str, after: str, index: int, what: str) -> None:
    if not after.startswith(before):
        raise ConfigError(
            f"data.template: the chat template is not prefix-stable: rendering {what} {index} changes the text "
            f"of earlier turns, so prompt and training tokens would disagree; use a template that renders "
            f"earlier turns identically (e.g. data.template: {' / '.join(NAMED)}, or a .jinja file)")


def _split_tail(reply: str, markers: list[str]) -> tuple[str, str]:
    """Split `reply<eot>\\n` into (`reply<eot>`, `\\n`): only the reply and its marker carry loss."""
    ends = [reply.rfind(m) + len(m) for m in markers if m and m in reply]
    if ends:
        cut = max(ends)
        if reply[cut:].strip() == "":
            return reply[:cut], reply[cut:]
    return reply, ""
