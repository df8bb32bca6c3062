"""The policy JSON Schema: shipped, published for editors, and never out of step with the models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from gateway.policy import schema

ROOT = Path(__file__).resolve().parents[3]
TIDINGS = Path(sys.executable).parent / "tidings"


def test_the_shipped_and_published_schemas_are_what_the_models_generate() -> None:
    expected = schema.render(schema.generate())
    assert (ROOT / "gateway" / "policy" / "policy.schema.json").read_text() == expected, "run `make schema`"
    assert (ROOT / "schema" / "policy.schema.json").read_text() == expected, "run `make schema`"
    Draft202012Validator.check_schema(orjson.loads(expected))


def test_tidings_schema_prints_it() -> None:
    printed = subprocess.run([str(TIDINGS), "schema"], capture_output=True, text=True, check=True).stdout
    assert orjson.loads(printed) == schema.shipped()


def test_each_shipped_policy_file_points_editors_at_the_published_schema_and_passes_it_alone() -> None:
    validator = Draft202012Validator(schema.shipped())
    for path in sorted((ROOT / "policies").glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schema/policy.schema.json", path.name
        errors = [e.message for e in validator.iter_errors(YAML(typ="safe").load(path.read_text()))]
        assert errors == [], path.name
