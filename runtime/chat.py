"""Render a model's Jinja chat template the way transformers' apply_chat_template does, without transformers.

Templates come from downloaded model folders, so they are untrusted code: they run in Jinja's sandbox.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import jinja2
from jinja2.compiler import CodeGenerator
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from onnx_edge.errors import GenerationError
from onnx_edge.textfile import read_json, read_utf8


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


# Bounds on rendering a chat template (a model folder's file: hostile until proven otherwise).
MAX_TEMPLATE_CHARS = 16 << 20  # rendered text, and any string or list built on the way
MAX_TEMPLATE_SECONDS = 5.0


class TemplateLimit(jinja2.exceptions.TemplateError):
    """A template that renders too much, too long or too deep."""


def _bounded(value):
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_TEMPLATE_CHARS:
        raise TemplateLimit(f"it builds a value too large (over {MAX_TEMPLATE_CHARS} items)")
    return value


class _BoundedCodeGenerator(CodeGenerator):
    def visit_Concat(self, node, frame) -> None:
        # `a ~ b` compiles to a join jinja's sandbox does not intercept: route it through a bounded one.
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(["*", "**", "+"])

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, int) and abs(right) > 4096:
            raise TemplateLimit("it raises a number to a huge power")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_TEMPLATE_CHARS:
                    raise TemplateLimit(f"it builds a value too large (over {MAX_TEMPLATE_CHARS} items)")
        return _bounded(super().call_binop(context, operator, left, right))

    @staticmethod
    def bounded_join(seq) -> str:
        return _bounded("".join(map(str, seq)))


def _width_checked(fn):
    def wrapper(value, width=80, *args, **kwargs):
        if isinstance(width, int) and width > MAX_TEMPLATE_CHARS:
            raise TemplateLimit(f"it asks for a width of {width}")
        return fn(value, width, *args, **kwargs)

    return wrapper


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    # Cached: a chat session renders the same template every turn.
    env = _BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols])
    env.filters["tojson"] = _tojson
    for name in ("center", "indent", "wordwrap"):
        env.filters[name] = _width_checked(env.filters[name])
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    try:
        return env.from_string(template)
    except RecursionError:
        raise TemplateLimit("it is nested too deep") from None


def _render_bounded(template: jinja2.Template, **variables) -> str:
    """Render with the output size, time and depth bounded. Time is checked on every line the template's own
    code runs (a trace function on template frames only), so even a loop that prints nothing is stopped."""
    deadline = time.monotonic() + MAX_TEMPLATE_SECONDS

    def local(frame, event, arg):
        if time.monotonic() > deadline:
            raise TemplateLimit(f"it ran longer than {MAX_TEMPLATE_SECONDS:g} s")
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename == "<template>" else None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        parts, size = [], 0
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_TEMPLATE_CHARS:
                raise TemplateLimit(f"its output is too large (over {MAX_TEMPLATE_CHARS} characters)")
            parts.append(chunk)
        return "".join(parts)
    except RecursionError:
        raise TemplateLimit("it recurses too deep") from None
    finally:
        sys.settrace(previous)


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
        return _render_bounded(
            _compile(template),
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            **extra,
        )
    except TemplateLimit as e:
        raise GenerationError(f"chat template refused: {e}") from None
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
        return read_utf8(jinja_file, GenerationError)
    config_file = folder / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    config = read_json(config_file, GenerationError)
    template = config.get("chat_template")
    if template is None or isinstance(template, str):
        return template
    # Older transformers saved several named templates as [{"name": ..., "template": ...}].
    if isinstance(template, list):
        for entry in template:
            if isinstance(entry, dict) and entry.get("name") == "default" and isinstance(entry.get("template"), str):
                return entry["template"]
        raise GenerationError(f"{config_file} lists chat templates but none is named 'default'")
    raise GenerationError(f"{config_file}: chat_template must be a string or a list, got {type(template).__name__}")
