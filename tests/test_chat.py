"""Chat templates: exact ChatML rendering, Hugging Face helpers, sandboxing, message checks, loading."""

import json

import pytest

from onnx_edge.errors import GenerationError
from onnx_edge.runtime.chat import load_chat_template, render_chat

# SmolLM2-Instruct's template, minus its default system prompt.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi 👋"},
]


def test_chatml_renders_exactly():
    assert render_chat(CHATML, MESSAGES) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi 👋<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_chat(CHATML, MESSAGES, add_generation_prompt=False).endswith("Hi 👋<|im_end|>\n")


def test_trim_and_lstrip_blocks_and_special_tokens():
    template = """{{ bos_token }}
    {% for m in messages %}
        {% if m.role == 'user' %}
[U]{{ m.content }}
        {% endif %}
    {% endfor %}
{{ eos_token }}"""
    out = render_chat(template, [{"role": "user", "content": "a"}], bos_token="<s>", eos_token="</s>")
    assert out == "<s>\n[U]a\n</s>"


def test_hugging_face_helpers():
    template = (
        "{{ messages[0].content | tojson }}|{{ strftime_now('%Y') | length }}|"
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}|"
        "{% generation %}{{ extra_flag }}{% endgeneration %}"
    )
    out = render_chat(template, [{"role": "user", "content": "<b>é</b>"}] * 2, extra_flag="X")
    # tojson leaves HTML characters and non-ASCII alone, unlike Jinja's built-in filter.
    assert out == '"<b>é</b>"|4|user|X'


def test_raise_exception_becomes_generation_error():
    template = "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be user') }}{% endif %}"
    with pytest.raises(GenerationError, match="first message must be user"):
        render_chat(template, MESSAGES)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.append(1) }}",  # immutable sandbox: no mutating calls
        "{% set ns = namespace(__class__=1) %}",
        "{% set ns = namespace() %}{% set ns._x = 1 %}",
    ],
)
def test_sandbox_blocks_escapes(template):
    with pytest.raises(GenerationError, match="SecurityError"):
        render_chat(template, MESSAGES)


def test_broken_template_is_generation_error():
    with pytest.raises(GenerationError, match="TemplateSyntaxError"):
        render_chat("{% for m in messages %}", MESSAGES)


@pytest.mark.parametrize(
    "messages",
    [
        [],
        "hello",
        {"role": "user", "content": "hi"},
        ["hi"],
        [{"role": "user"}],
        [{"content": "hi"}],
        [{"role": 1, "content": "hi"}],
        [{"role": "user", "content": None}],
    ],
)
def test_bad_messages_rejected(messages):
    with pytest.raises(GenerationError, match="messages"):
        render_chat(CHATML, messages)


def test_load_from_jinja_file_wins(tmp_path):
    (tmp_path / "chat_template.jinja").write_text(CHATML, encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "other"}), encoding="utf-8")
    assert load_chat_template(tmp_path) == CHATML


def test_load_from_tokenizer_config_string(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML}), encoding="utf-8")
    assert load_chat_template(tmp_path) == CHATML


def test_load_from_tokenizer_config_named_list(tmp_path):
    templates = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": CHATML}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": templates}), encoding="utf-8")
    assert load_chat_template(str(tmp_path)) == CHATML


def test_load_missing_gives_none(tmp_path):
    assert load_chat_template(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 8}), encoding="utf-8")
    assert load_chat_template(tmp_path) is None


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"chat_template": [{"name": "rag", "template": "x"}]}), json.dumps({"chat_template": 3})],
)
def test_load_malformed_config(tmp_path, content):
    (tmp_path / "tokenizer_config.json").write_text(content, encoding="utf-8")
    with pytest.raises(GenerationError, match="tokenizer_config.json"):
        load_chat_template(tmp_path)
