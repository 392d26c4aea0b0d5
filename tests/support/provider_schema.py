"""The google provider's schema, offline, from the generated bindings on PyPI, and a checker of
terraform/*.tf against it.

`cdktn-provider-google` 20.3.1 is generated from hashicorp/google 7.46.1; its wheel carries a jsii
assembly (`_jsii/provider-google@20.3.1.jsii.tgz` -> `package/.jsii`, JSON) in which every
resource and data source has a `...Config` struct: one property per argument and nested block,
`optional` unless required, each documented with a link whose anchor is the Terraform name
(`.../resources/compute_region_instance_group_manager#base_instance_name`). Nested blocks are
structs of their own; the resource's class lists every attribute it exports (getters).

The assembly is 127 MB of JSON; the slice for the types terraform/ uses is cached beside the wheel.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE = "@cdktn/provider-google"
_ANCHOR = re.compile(r"/docs/(?:resources|data-sources)/[a-z0-9_]+#([a-z0-9_]+) ")
META = {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection"}


@dataclass
class Block:
    """One resource, data source or nested block: its arguments and nested blocks by Terraform name."""

    arguments: dict[str, bool] = field(default_factory=dict)  # name -> required
    blocks: dict[str, tuple[bool, Block]] = field(default_factory=dict)  # name -> (required, schema)
    exported: set[str] = field(default_factory=set)  # attributes a reference may read (normalised)


def _pascal(snake: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


def _camel(snake: str) -> str:
    pascal = _pascal(snake)
    return pascal[:1].lower() + pascal[1:]


def fqn_of(kind: str, type_name: str) -> tuple[str, str]:
    """(config struct fqn, class fqn) of a `resource`/`data` type such as google_compute_network."""
    bare = type_name.removeprefix("google_")
    if kind == "data":
        module, cls = f"dataGoogle{_pascal(bare)}", f"DataGoogle{_pascal(bare)}"
    else:
        module, cls = _camel(bare), _pascal(bare)
    return f"{PACKAGE}.{module}.{cls}Config", f"{PACKAGE}.{module}.{cls}"


def _normal(name: str) -> str:
    return name.replace("_", "").lower()


def _structs(type_ref: Any) -> list[str]:
    """The provider structs a jsii type reference mentions (a block's element type)."""
    if isinstance(type_ref, dict):
        if "fqn" in type_ref:
            return [type_ref["fqn"]] if type_ref["fqn"].startswith(PACKAGE) else []
        return [fqn for value in type_ref.values() for fqn in _structs(value)]
    if isinstance(type_ref, list):
        return [fqn for value in type_ref for fqn in _structs(value)]
    return []


def read_assembly(wheel: Path) -> dict[str, Any]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(archive.read(name))) as tar:
            member = tar.extractfile("package/.jsii")
            assert member is not None
            return dict(json.load(member)["types"])


def slice_types(types: dict[str, Any], wanted: list[tuple[str, str]]) -> dict[str, Any]:
    """The types needed for `wanted` [(kind, type name)], with every nested struct."""
    keep: dict[str, Any] = {}
    pending = [fqn for kind, name in wanted for fqn in fqn_of(kind, name) if fqn in types]
    while pending:
        fqn = pending.pop()
        if fqn in keep:
            continue
        keep[fqn] = types[fqn]
        if types[fqn].get("kind") == "interface":
            for prop in types[fqn].get("properties", []):
                pending += [s for s in _structs(prop["type"]) if s in types and s not in keep]
    return keep


def _terraform_name(prop: dict[str, Any]) -> str:
    docs = prop.get("docs", {})
    found = _ANCHOR.search(f"{docs.get('remarks', '')} {docs.get('summary', '')} ")
    if found:
        return found[1]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", prop["name"]).lower()


def build(types: dict[str, Any], fqn: str) -> Block:
    block = Block()
    for prop in types[fqn].get("properties", []):
        name, required = _terraform_name(prop), not prop.get("optional", False)
        nested = [s for s in _structs(prop["type"]) if s in types and types[s].get("kind") == "interface"]
        if nested:
            block.blocks[name] = (required, build(types, nested[0]))
        else:
            block.arguments[name] = required
    return block


def resource_schema(types: dict[str, Any], kind: str, type_name: str) -> Block | None:
    config, cls = fqn_of(kind, type_name)
    if config not in types:
        return None
    block = build(types, config)
    names = {p["name"] for p in types.get(cls, {}).get("properties", [])}
    block.exported = {_normal(n) for n in names if not n.endswith("Input")}
    block.exported |= {_normal(n) for n in block.arguments} | {_normal(n) for n in block.blocks} | {"id"}
    return block


# -- checking terraform/ ---------------------------------------------------------------------


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _is_block(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and v.get("__is_block__") for v in value)


def check_body(body: dict[str, Any], schema: Block, where: str, *, top: bool = True) -> list[str]:
    """Problems of one block body against its schema (`top`: a resource's own body, where the
    meta-arguments live; a nested block may have a real argument called `count`)."""
    problems: list[str] = []
    present: set[str] = set()
    for raw_key, value in body.items():
        key = _unquote(raw_key)
        if key.startswith("__") or (top and key in META):
            continue
        if key == "dynamic":
            for dynamic in value:
                for raw_name, spec in dynamic.items():
                    name = _unquote(raw_name)
                    present.add(name)
                    if name not in schema.blocks:
                        problems.append(f"{where}: dynamic {name!r} is not a block of this type")
                        continue
                    for content in spec.get("content", []):
                        problems += check_body(content, schema.blocks[name][1], f"{where}.{name}", top=False)
            continue
        present.add(key)
        if key in schema.blocks:
            if not _is_block(value):
                problems.append(f"{where}: {key!r} is a block, written as an argument")
                continue
            for item in value:
                problems += check_body(item, schema.blocks[key][1], f"{where}.{key}", top=False)
        elif key in schema.arguments:
            if _is_block(value):
                problems.append(f"{where}: {key!r} is an argument, written as a block")
        else:
            problems.append(f"{where}: unknown argument or block {key!r}")
    for name, required in schema.arguments.items():
        if required and name not in present:
            problems.append(f"{where}: missing required argument {name!r}")
    for name, (required, _) in schema.blocks.items():
        if required and name not in present:
            problems.append(f"{where}: missing required block {name!r}")
    return problems


_REFERENCE = re.compile(r"\b(data\.)?(google_[a-z0-9_]+)\.([a-z0-9_]+)(?:\[[^\]]*\])?\.([a-z0-9_]+)")


def check_references(text: str, declared: dict[tuple[str, str, str], Block | None], where: str) -> list[str]:
    """`google_x.name.attr` references: the block must exist and export the attribute."""
    problems = []
    for data, rtype, name, attr in _REFERENCE.findall(text):
        kind = "data" if data else "resource"
        key = (kind, rtype, name)
        if key not in declared:
            problems.append(f"{where}: reference to undeclared {data}{rtype}.{name}")
            continue
        schema = declared[key]
        if schema is not None and _normal(attr) not in schema.exported:
            problems.append(f"{where}: {data}{rtype}.{name} has no attribute {attr!r}")
    return problems
