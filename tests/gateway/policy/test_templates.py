"""Templates render what Jinja would, whether or not they take the plain-substitution path."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gateway.policy.templates import CompiledContent, TemplateRenderError

DATA: dict[str, Any] = {"name": "Ada <Lovelace> & co", "code": 123456, "ok": True, "none": None, "user": {"first": "Ada"}}

SOURCES = [
    "",
    "plain text, no placeholders\n",
    "Your code is {{ code }}.",
    "{{name}}{{ code }}",
    "{{ ok }} / {{ none }}",
    "Hello {{ user.first }}",  # attribute access: Jinja path
    "{{ name | upper }}",  # filter: Jinja path
    "{% if ok %}yes{% endif %}",  # tag: Jinja path
]


def jinja(source: str, *, html: bool) -> str:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=html, keep_trailing_newline=True)
    return env.from_string(source).render(DATA)


@pytest.mark.parametrize("source", SOURCES)
def test_text_and_html_parts_render_exactly_as_jinja_renders_them(source: str) -> None:
    content = CompiledContent(body=source, html=source)
    rendered = content.render(DATA)
    assert (rendered.body, rendered.html) == (jinja(source, html=False), jinja(source, html=True))


def test_html_parts_escape_values_and_text_parts_do_not() -> None:
    rendered = CompiledContent(body="Hi {{ name }}", html="<p>Hi {{ name }}</p>").render(DATA)
    assert rendered.body == "Hi Ada <Lovelace> & co"
    assert rendered.html == "<p>Hi Ada &lt;Lovelace&gt; &amp; co</p>"


@pytest.mark.parametrize("source", ["Code {{ missing }}", "Hello {{ missing.first }}"])
def test_a_value_missing_at_render_time_is_a_render_error_naming_it(source: str) -> None:
    content = CompiledContent(body=source)
    assert content.variables == {"missing"}
    with pytest.raises(TemplateRenderError, match="'missing' is undefined"):
        content.render({})
