"""The policy JSON Schema: generated from the policy models, shipped in the package, published.

``gateway/policy/policy.schema.json`` ships with the package and is what the loader validates against;
``schema/policy.schema.json`` at the top of the repository is the same file for editors (a
``# yaml-language-server: $schema=…`` comment in a policy file points at it). Both are written by
``tidings schema --write``; a test fails when either drifts from the models.

Channel names (the ``channels`` maps, ``senders``, a template's ``channels``, a route's
``channels`` list) are open strings here, never an enum: which channels exist depends on the
plugins installed, and the loader validates every policy set against this one shipped file.
The loader checks each channel name after the schema, against the built-in channels and those
installed plugins add (``PluginCatalog.channel_catalog``), at the name's file and line — and so
does ``tidings check`` offline. The schema is thus the same whatever is installed, a plugin's
channel passes it wherever a built-in one does, and ``tidings schema`` prints the shipped file.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any, Final

from jsonschema import Draft202012Validator

from gateway.policy.models import PolicyDocument

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SHIPPED: Final = "policy.schema.json"


def generate() -> dict[str, Any]:
    """The schema as the models define it today."""
    return {"$schema": DIALECT, **PolicyDocument.model_json_schema(by_alias=True)}


def render(schema: dict[str, Any]) -> str:
    """The file text: stable key order and layout, so diffs in review are readable."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


@functools.cache
def shipped() -> dict[str, Any]:
    """The schema file installed with this package."""
    loaded: dict[str, Any] = json.loads(resources.files("gateway.policy").joinpath(SHIPPED).read_text())
    return loaded


@functools.cache
def validator() -> Draft202012Validator:
    return Draft202012Validator(shipped())
