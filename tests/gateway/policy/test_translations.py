"""Templates' ``category`` and ``translations``: checked like the template's own content, errors at ``file:line``; picked by locale."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import PolicyError
from gateway.plugins import PluginCatalog
from gateway.policy.loading import load_policies

TEMPLATE = """\
templates:
  welcome:
    category: onboarding
    channels:
      sms: {body: "Hello {{ name }}"}
      email: {subject: "Welcome", body: "Hello {{ name }}"}
    translations:
"""


@pytest.mark.parametrize(
    ("translations", "expected"),
    [
        ("      pt: {channels: {push: {body: Olá}}}\n", "a.yaml:8: templates.welcome.translations.pt.channels.push: the template has no content"),
        ("      pt: {channels: {sms: {body: '{{ oops'}}}\n", "a.yaml:8: templates.welcome.translations.pt.channels.sms.body: template syntax error"),
        ("      pt: {channels: {sms: {subject: Olá, body: Olá}}}\n", "a.yaml:8: templates.welcome.translations.pt.channels.sms: this channel has no subject"),
        ("      pt: {channels: {sms: {}}}\n", "a.yaml:8: templates.welcome.translations.pt.channels.sms: needs a body"),
        ("      pt: {channels: {}}\n", "a.yaml:8: templates.welcome.translations.pt.channels: must not be empty"),
        ("      portuguese_please: {channels: {sms: {body: Olá}}}\n", "a.yaml:8: templates.welcome.translations.portuguese_please"),
        ("      pt: {channels: {sms: {body: Olá}}}\n      PT: {channels: {sms: {body: Olá}}}\n", "a.yaml:9: templates.welcome.translations.PT: translation 'PT' is listed twice"),
    ],
)
def test_a_wrong_translation_is_refused_naming_file_line_and_path(
    tmp_path: Path, plugin_catalog: PluginCatalog, translations: str, expected: str
) -> None:
    (tmp_path / "a.yaml").write_text(TEMPLATE + translations)
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path, plugin_catalog)
    assert any(str(issue).startswith(expected) for issue in caught.value.issues), [str(i) for i in caught.value.issues]


def test_a_translation_uses_only_declared_variables_when_the_template_declares_them(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    text = TEMPLATE.replace("    category: onboarding\n", "    category: onboarding\n    variables: [name]\n")
    (tmp_path / "a.yaml").write_text(text + "      pt: {channels: {sms: {body: 'Olá {{ nome }}'}}}\n")
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path, plugin_catalog)
    assert [str(issue) for issue in caught.value.issues] == [
        "a.yaml:9: templates.welcome.translations.pt.channels: placeholders not listed in variables: nome"
    ]


def test_a_bad_category_is_refused(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    (tmp_path / "a.yaml").write_text(TEMPLATE.replace("category: onboarding", "category: 'on boarding'") + "      pt: {channels: {sms: {body: Olá}}}\n")
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path, plugin_catalog)
    assert any(str(issue).startswith("a.yaml:3: templates.welcome.category") for issue in caught.value.issues)


@pytest.mark.parametrize(
    ("locale", "picked"),
    [("pt-BR", "pt-br"), ("PT-br", "pt-br"), ("pt-PT", "pt"), ("pt", "pt"), ("fr", None), ("fr-CA", None), (None, None), ("", None)],
)
def test_a_locale_picks_the_exact_translation_then_its_language_then_none(
    tmp_path: Path, plugin_catalog: PluginCatalog, locale: str | None, picked: str | None
) -> None:
    (tmp_path / "a.yaml").write_text(TEMPLATE + "      pt: {channels: {sms: {body: 'Olá {{ name }}'}}}\n      pt-BR: {channels: {sms: {body: 'Oi {{ name }}'}}}\n")
    template = load_policies(tmp_path, plugin_catalog).template("acme", "welcome")
    assert template is not None and template.category == "onboarding"
    assert template.translation_for(locale) == picked
    # A channel a translation leaves out is sent in its language's translation, else in the template's own content.
    assert template.content("email", picked).render({"name": "Ana"}).subject == "Welcome"
    assert template.content("sms", picked).render({"name": "Ana"}).body == {"pt-br": "Oi Ana", "pt": "Olá Ana", None: "Hello Ana"}[picked]
