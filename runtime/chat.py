"""Render a model's Jinja chat template the way transformers' apply_chat_template does, without transformers.

Templates come from downloaded model folders, so they are untrusted code: they run in Jinja's sandbox.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from onnx_edge.errors import GenerationError


def _raise_exception(message):
    # Templates call raise_exception("...") to reject conversations they cannot format.
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes <, > and & for HTML, which would change the prompt text.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format):
    return datetime.now().strftime(format)


class _TemplateDict:
    # Stands in for the `dict` global so a template cannot reach the real type (dict.mro() and such).
    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    # namespace() that refuses underscore names, as transformers does, so templates cannot plant dunders.
    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]  # Jinja's signature trick: namespace(self=...) must still work
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore attributes, got {name!r}")


class _GenerationTag(Extension):
    # Training templates wrap assistant turns in {% generation %}...{% endgeneration %} to mask the
    # loss; at inference the block simply renders its body.
    tags = {"generation"}

    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    # Cached: a chat session renders the same template every turn.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env.from_string(template)


def _check_messages(messages) -> None:
    if not isinstance(messages, list) or not messages:
        raise GenerationError("messages must be a non-empty list of {'role': str, 'content': str} dicts")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise GenerationError(f"messages[{i}] must be a dict, got {type(message).__name__}")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise GenerationError(f"messages[{i}]['{key}'] must be a string, got {message.get(key)!r}")


def render_chat(
    template: str,
    messages: list[dict],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    **extra,
) -> str:
    """The prompt text for `messages`; extra keywords (tools, documents, enable_thinking...) reach the template."""
    _check_messages(messages)
    try:
        return _compile(template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            **extra,
        )
    # A broken or hostile template is a problem with the model folder or the request, not a crash of
    # ours: report it as one line. SecurityError (sandbox escapes) is a TemplateError too.
    except jinja2.exceptions.TemplateError as e:
        raise GenerationError(f"chat template failed: {type(e).__name__}: {e}") from e
    except (TypeError, ValueError, LookupError, AttributeError, ArithmeticError) as e:
        raise GenerationError(f"chat template failed: {type(e).__name__}: {e}") from e


def load_chat_template(folder: Path) -> str | None:
    """chat_template.jinja if present, else tokenizer_config.json's chat_template, else None."""
    folder = Path(folder)
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    config_file = folder / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenerationError(f"{config_file} is not valid JSON: {e}") from e
    template = config.get("chat_template") if isinstance(config, dict) else None
    if template is None or isinstance(template, str):
        return template
    # Older transformers saved several named templates as [{"name": ..., "template": ...}].
    if isinstance(template, list):
        for entry in template:
            if isinstance(entry, dict) and entry.get("name") == "default" and isinstance(entry.get("template"), str):
                return entry["template"]
        raise GenerationError(f"{config_file} lists chat templates but none is named 'default'")
    raise GenerationError(f"{config_file}: chat_template must be a string or a list, got {type(template).__name__}")
