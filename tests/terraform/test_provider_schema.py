"""terraform/ against the google provider's real schema (7.46.1, from the generated bindings on
PyPI; see tests/support/provider_schema.py): every argument and nested block known and written as
what it is, required ones present, every reference to an attribute the type exports."""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.support import provider_schema as ps

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"
VERSION = "20.3.1"  # cdktn-provider-google, generated from hashicorp/google 7.46.1
CACHE = ROOT / ".cache" / "provider-google"


def _wheel() -> Path:
    given = os.environ.get("PROVIDER_SCHEMA_WHEEL")
    path = Path(given) if given else CACHE / f"cdktn_provider_google-{VERSION}-py3-none-any.whl"
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the provider schema wheel is missing at {path} (make test downloads it)")
        pytest.skip(f"the provider schema wheel is not at {path} (make test downloads it)")
    return path


@cache
def _config() -> dict[str, list[tuple[str, str, str, dict[str, Any]]]]:
    """(kind, type, name, raw body) of every resource, data and ephemeral block, per file."""
    found: dict[str, list[tuple[str, str, str, dict[str, Any]]]] = {}
    for path in sorted(TF.glob("*.tf")):
        with path.open() as handle:
            data = hcl2.load(handle)
        for kind in ("resource", "data", "ephemeral"):
            for block in data.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        found.setdefault(path.name, []).append((kind, ps._unquote(rtype), ps._unquote(name), body))
    return found


def _wanted() -> list[tuple[str, str]]:
    return sorted({(k, t) for blocks in _config().values() for k, t, _, _ in blocks if t.startswith("google_")})


@pytest.fixture(scope="module")
def types() -> dict[str, Any]:
    wheel = _wheel()
    sliced = CACHE / f"schema-slice-{VERSION}.json"
    if sliced.is_file():
        cached = json.loads(sliced.read_text())
        if all(ps.fqn_of(k, t)[0] in cached for k, t in _wanted()):
            return dict(cached)
    types = ps.slice_types(ps.read_assembly(wheel), _wanted())
    sliced.parent.mkdir(parents=True, exist_ok=True)
    sliced.write_text(json.dumps(types))
    return types


def _declared(types: dict[str, Any]) -> dict[tuple[str, str, str], ps.Block | None]:
    declared: dict[tuple[str, str, str], ps.Block | None] = {}
    for blocks in _config().values():
        for kind, rtype, name, _ in blocks:
            schema = ps.resource_schema(types, kind, rtype) if rtype.startswith("google_") else None
            declared[(kind, rtype, name)] = schema
    return declared


def test_every_google_block_matches_the_provider_schema(types: dict[str, Any]) -> None:
    declared = _declared(types)
    unknown_types = sorted(f"{k} {t}" for (k, t, _), s in declared.items() if t.startswith("google_") and s is None)
    assert unknown_types == []
    problems, checked = [], 0
    for filename, blocks in _config().items():
        for kind, rtype, name, body in blocks:
            where = f"{filename}: {kind} {rtype}.{name}"
            schema = declared[(kind, rtype, name)]
            if schema is not None:
                checked += 1
                problems += ps.check_body(body, schema, where)
            problems += ps.check_references(json.dumps(body), declared, where)
    print(f"\nprovider schema: {checked} google blocks checked against hashicorp/google 7.46.1")
    assert checked >= 60
    assert problems == []


def test_outputs_and_locals_reference_real_attributes(types: dict[str, Any]) -> None:
    declared = _declared(types)
    problems = []
    for path in sorted(TF.glob("*.tf")):
        with path.open() as handle:
            data = hcl2.load(handle)
        for kind in ("output", "locals"):
            problems += ps.check_references(json.dumps(data.get(kind, [])), declared, f"{path.name}: {kind}")
    assert problems == []


def _real(rtype: str) -> tuple[str, dict[str, Any]]:
    for blocks in _config().values():
        for kind, t, _, body in blocks:
            if t == rtype:
                return kind, json.loads(json.dumps(body))
    raise KeyError(rtype)


@pytest.mark.parametrize(
    ("rtype", "plant", "expected"),
    [
        ("google_compute_region_instance_group_manager", lambda b: b.update(made_up_argument="x"), "unknown argument"),
        (
            "google_compute_region_instance_group_manager",
            lambda b: b.update(update_policy={"type": "PROACTIVE"}),
            "is a block, written as an argument",
        ),
        (
            "google_compute_region_instance_group_manager",
            lambda b: b.update(region=[{"x": 1, "__is_block__": True}]),
            "is an argument, written as a block",
        ),
        (
            "google_compute_region_instance_group_manager",
            lambda b: b.pop("base_instance_name"),
            "missing required argument 'base_instance_name'",
        ),
        (
            "google_compute_region_instance_group_manager",
            lambda b: b.pop("version"),
            "missing required block 'version'",
        ),
        (
            "google_compute_region_instance_group_manager",
            lambda b: b["update_policy"][0].update(max_surge_percentt=1),
            "update_policy: unknown argument",
        ),
        (
            "google_compute_security_policy",
            lambda b: b["dynamic"][0].update({'"rules"': {"content": []}}),
            "dynamic 'rules' is not a block",
        ),
    ],
    ids=[
        "unknown",
        "block-as-argument",
        "argument-as-block",
        "missing-argument",
        "missing-block",
        "nested-unknown",
        "dynamic",
    ],
)
def test_the_checker_catches_each_kind_of_error(types: dict[str, Any], rtype: str, plant: Any, expected: str) -> None:
    kind, body = _real(rtype)
    schema = ps.resource_schema(types, kind, rtype)
    assert schema is not None and ps.check_body(body, schema, rtype) == []  # the real block is clean
    plant(body)
    problems = ps.check_body(body, schema, rtype)
    assert any(expected in problem for problem in problems), problems


def test_the_checker_catches_a_reference_to_a_missing_attribute(types: dict[str, Any]) -> None:
    declared = _declared(types)
    good = '"${google_compute_region_instance_group_manager.servers["ltx-video"].instance_group}"'
    bad = '"${google_compute_region_instance_group_manager.servers["ltx-video"].instance_groups}"'
    undeclared = '"${google_compute_network.nope.id}"'
    assert ps.check_references(good, declared, "x") == []
    assert "has no attribute 'instance_groups'" in ps.check_references(bad, declared, "x")[0]
    assert "undeclared" in ps.check_references(undeclared, declared, "x")[0]


def test_the_provider_range_is_the_checked_version() -> None:
    text = (TF / "versions.tf").read_text()
    google = re.search(r'google\s*=\s*\{[^}]*version\s*=\s*"([^"]+)"', text)
    assert google is not None and google[1] == "~> 7.46.0"
