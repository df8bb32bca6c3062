"""Message templates: compiled once per policy set, rendered per request with checked variables.

Templates use Jinja2 syntax (``Hello {{ name }}``) in a sandboxed environment with strict
undefined variables, so a missing value is an error the caller sees, never an empty string
delivered to a customer. HTML parts are autoescaped; text parts are not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import escape

from gateway.plugin_api import ProviderTemplate

_TEXT_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_HTML_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True)


class TemplateRenderError(Exception):
    """Rendering failed even though every top-level variable was supplied (say ``{{ a.b }}``)."""


@dataclass(frozen=True, slots=True)
class RenderedContent:
    """What a delivery carries: the text to send, frozen at accept time."""

    body: str | None = None
    subject: str | None = None
    html: str | None = None
    provider_template: ProviderTemplate | None = None

    def as_dict(self) -> dict[str, Any]:
        content: dict[str, Any] = {}
        if self.subject is not None:
            content["subject"] = self.subject
        if self.body is not None:
            content["body"] = self.body
        if self.html is not None:
            content["html"] = self.html
        if self.provider_template is not None:
            pt = self.provider_template
            content["provider_template"] = {"name": pt.name, "language": pt.language, "parameters": list(pt.parameters)}
        return content

    @classmethod
    def from_dict(cls, content: Mapping[str, Any]) -> RenderedContent:
        pt = content.get("provider_template")
        return cls(
            body=content.get("body"),
            subject=content.get("subject"),
            html=content.get("html"),
            provider_template=ProviderTemplate(pt["name"], pt["language"], tuple(pt["parameters"])) if pt else None,
        )


class _Substitution:
    """A template that is only text and ``{{ name }}`` placeholders, rendered without Jinja's runtime.

    Most notification templates are exactly this; joining strings costs a fraction of building
    a Jinja context per request. The output is the same as Jinja's (``str`` of the value, escaped
    in HTML parts); anything richer (filters, attributes, tags) goes to Jinja.
    """

    __slots__ = ("_parts", "_html")

    def __init__(self, parts: tuple[tuple[bool, str], ...], *, html: bool) -> None:
        self._parts = parts  # (is_variable, literal text or variable name)
        self._html = html

    @classmethod
    def of(cls, parsed: nodes.Template, *, html: bool) -> _Substitution | None:
        if not parsed.body:
            return cls((), html=html)
        if len(parsed.body) != 1 or not isinstance(output := parsed.body[0], nodes.Output):
            return None
        parts: list[tuple[bool, str]] = []
        for node in output.nodes:
            if isinstance(node, nodes.TemplateData):
                parts.append((False, node.data))
            elif isinstance(node, nodes.Name) and node.ctx == "load":
                parts.append((True, node.name))
            else:
                return None
        return cls(tuple(parts), html=html)

    def render(self, data: Mapping[str, Any]) -> str:
        out = []
        for is_variable, text in self._parts:
            if not is_variable:
                out.append(text)
                continue
            try:
                value = data[text]
            except KeyError:
                raise TemplateError(f"'{text}' is undefined") from None
            out.append(str(escape(value)) if self._html else str(value))
        return "".join(out)


def _compile(source: str, *, html: bool = False) -> tuple[Any, frozenset[str]]:
    env = _HTML_ENV if html else _TEXT_ENV
    parsed = env.parse(source)
    variables = frozenset(meta.find_undeclared_variables(parsed))
    return _Substitution.of(parsed, html=html) or env.from_string(source), variables


class CompiledContent:
    """One channel's content of a template, compiled, with the variables it needs."""

    def __init__(
        self,
        *,
        body: str | None = None,
        subject: str | None = None,
        html: str | None = None,
        provider_template: Mapping[str, Any] | None = None,
    ) -> None:
        self._parts: dict[str, Any] = {}
        variables: set[str] = set()
        for part, source in (("body", body), ("subject", subject), ("html", html)):
            if source is not None:
                compiled, needs = _compile(source, html=part == "html")
                self._parts[part] = compiled
                variables |= needs
        self._provider_template: tuple[str, str, tuple[Any, ...]] | None = None
        if provider_template is not None:
            params = []
            for source in provider_template.get("parameters", []):
                compiled, needs = _compile(str(source))
                params.append(compiled)
                variables |= needs
            self._provider_template = (provider_template["name"], provider_template["language"], tuple(params))
        self.variables = frozenset(variables)

    def render(self, data: Mapping[str, Any]) -> RenderedContent:
        """Render with ``data``; the caller has already checked :attr:`variables` are present."""
        try:
            rendered = {part: template.render(data) for part, template in self._parts.items()}
            provider_template = None
            if self._provider_template is not None:
                name, language, params = self._provider_template
                provider_template = ProviderTemplate(name, language, tuple(p.render(data) for p in params))
        except Exception as err:  # a filter given a value it cannot take (``truncate`` of a number) as much as a TemplateError
            raise TemplateRenderError(str(err)) from err
        return RenderedContent(provider_template=provider_template, **rendered)


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    """A policy template: an id and its compiled content per channel, and per locale its translations' (keys lower case)."""

    template_id: str
    channels: Mapping[str, CompiledContent]
    priority: str | None = None
    declared: frozenset[str] = frozenset()  # variables the policy says every request must supply
    strategy: str | None = None
    fallback_after: float | None = None  # seconds
    ttl: float | None = None  # seconds
    category: str | None = None
    translations: Mapping[str, Mapping[str, CompiledContent]] = field(default_factory=dict)
    version: str | None = None  # the policy's version marker, recorded with each notification
    language: str | None = None  # the language its content is written in, recorded with each notification
    tags: Mapping[str, str] = field(default_factory=dict)  # each translation's tag as policy spells it, by its key (lower case)

    def translation_for(self, locale: str | None) -> str | None:
        """The translation ``locale`` picks: the exact tag, else its language (``pt-BR`` → ``pt``); None: the template's own content.

        Tags compare without regard to case, as BCP 47 says.
        """
        if not locale or not self.translations:
            return None
        wanted = locale.lower()
        if wanted in self.translations:
            return wanted
        language = wanted.split("-", 1)[0]
        return language if language in self.translations else None

    def content(self, channel: str, translation: str | None) -> CompiledContent:
        """The channel's content in ``translation`` (a key :meth:`translation_for` gave), else in its language's, else the template's own.

        A ``pt-BR`` translation that only words the SMS differently sends the ``pt`` email.
        """
        if translation is not None:
            for key in dict.fromkeys((translation, translation.split("-", 1)[0])):
                translated = self.translations.get(key, {}).get(channel)
                if translated is not None:
                    return translated
        return self.channels[channel]


def template_syntax_error(source: str) -> str | None:
    """Why ``source`` is not a valid template, or None."""
    try:
        _TEXT_ENV.parse(source)
    except TemplateError as err:
        return str(err)
    return None
