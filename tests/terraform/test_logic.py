"""Logic rules of the configuration that `plan`/`apply` or the running deployment would hit, checked
offline: with python-hcl2 on the structure, and with Terraform's own evaluator (`terraform
console` in an empty folder: no provider needed) on the variables' validation conditions."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.terraform.test_terraform import _clean, config

TF = Path(__file__).resolve().parents[2] / "terraform"
ZONES = '["us-central1-a", "us-central1-b", "us-central1-c"]'


def _blocks() -> dict[str, dict[str, Any]]:
    """Every resource and data source: "type.name" -> its body."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(TF.glob("*.tf")):
        with path.open() as handle:
            data = _clean(hcl2.load(handle))
        for kind, prefix in (("resource", ""), ("data", "data."), ("ephemeral", "ephemeral.")):
            for block in data.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        found[f"{prefix}{rtype}.{name}"] = body
    return found


def _variable(name: str) -> dict[str, Any]:
    return dict(config()["variable"][name])


def _unwrap(text: str) -> str:
    return text[2:-1] if text.startswith("${") and text.endswith("}") else text


def evaluate(expression: str, **variables: str) -> Any:
    """`expression` with `var.NAME` replaced by the given HCL literals, evaluated by Terraform."""
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not installed")
    for name, literal in sorted(variables.items(), key=lambda item: -len(item[0])):
        expression = re.sub(rf"\bvar\.{name}\b", literal, expression)
    result = subprocess.run(
        ["terraform", "console"],
        input=f"jsonencode({expression})\n",
        capture_output=True,
        text=True,
        cwd=TF.parent / ".ci",  # an empty configuration: the evaluator alone, no provider
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(json.loads(result.stdout.strip()))


def _conditions(name: str) -> list[str]:
    return [_unwrap(v["condition"]) for v in _variable(name)["validation"]]


def _valid(name: str, **variables: str) -> bool:
    return all(evaluate(condition, **variables) for condition in _conditions(name))


def test_the_autoscaled_gpu_group_redistributes_proactively() -> None:
    # Autoscaling does not work on a regional group with proactive redistribution off.
    policy = _blocks()["google_compute_region_instance_group_manager.servers"]["update_policy"][0]
    assert policy["instance_redistribution_type"] == "PROACTIVE"


@pytest.mark.parametrize(("surge", "ok"), [("0", True), ("1", False), ("2", False), ("3", True), ("4", True)])
def test_surge_is_zero_or_at_least_the_zone_count(surge: str, ok: bool) -> None:
    assert _valid("update_max_surge", update_max_surge=surge, zones=ZONES) is ok


@pytest.mark.parametrize(("unavailable", "ok"), [("0", True), ("1", False), ("3", True)])
def test_unavailable_is_zero_or_at_least_the_zone_count(unavailable: str, ok: bool) -> None:
    assert _valid("update_max_unavailable", update_max_unavailable=unavailable, zones=ZONES) is ok


@pytest.mark.parametrize(("surge", "unavailable", "expected"), [("0", "0", 3), ("0", "4", 4), ("3", "0", 0)])
def test_the_groups_fixed_values_follow_the_regional_rule(surge: str, unavailable: str, expected: int) -> None:
    policy = _blocks()["google_compute_region_instance_group_manager.servers"]["update_policy"][0]
    value = evaluate(
        _unwrap(policy["max_unavailable_fixed"]),
        update_max_surge=surge,
        update_max_unavailable=unavailable,
        zones=ZONES,
    )
    assert value == expected and (value == 0 or value >= 3)
    gateway = _blocks()["google_compute_region_instance_group_manager.gateway"]["update_policy"][0]
    assert evaluate(_unwrap(str(gateway["max_surge_fixed"])), zones=ZONES) == 3


def test_defaults_pass_their_own_validations() -> None:
    assert _valid("update_max_surge", update_max_surge="0", zones=ZONES)
    assert _valid("update_max_unavailable", update_max_unavailable="0", zones=ZONES)
    assert _variable("update_max_unavailable")["default"] == 0


def test_at_most_five_allowed_source_ranges() -> None:
    five = json.dumps([f"10.0.{i}.0/24" for i in range(5)])
    six = json.dumps([f"10.0.{i}.0/24" for i in range(6)])
    assert _valid("allowed_source_ranges", allowed_source_ranges=five)
    assert not _valid("allowed_source_ranges", allowed_source_ranges=six)


@pytest.mark.parametrize(
    ("zones", "ok"), [(ZONES, True), ('["us-central1-a", "us-east1-b"]', False), ('["us-central11-a"]', False)]
)
def test_zones_must_be_in_the_region(zones: str, ok: bool) -> None:
    assert _valid("zones", zones=zones, region='"us-central1"') is ok


def test_server_env_may_not_move_the_health_checked_port() -> None:
    assert _valid("server_env", server_env='{ QUEUE_SIZE = "4" }')
    assert not _valid("server_env", server_env='{ PORT = "9000" }')


def test_rotating_the_key_keeps_the_old_version() -> None:
    version = _blocks()["google_secret_manager_secret_version.api_key"]
    assert version["deletion_policy"] == "ABANDON"


def test_alert_channel_is_referenced_only_when_it_exists() -> None:
    # `plan` failed with monitoring off and an e-mail set: the local indexed a channel whose count was 0.
    local = config()["locals"]["notification_names"]
    assert _unwrap(local) == "google_monitoring_notification_channel.email[*].id"


def test_the_certificate_name_follows_its_domain() -> None:
    cert = _blocks()["google_compute_managed_ssl_certificate.api"]
    assert cert["lifecycle"][0]["create_before_destroy"] is True
    assert "var.domain" in cert["name"]  # a new domain, a new name: create-before-destroy can work


def test_firestore_access_is_the_jobs_database_exactly() -> None:
    condition = _blocks()["google_project_iam_member.server_firestore"]["condition"][0]["expression"]
    name = "projects/p/databases/videogen-jobs"
    cel = condition.replace("${var.project_id}", "p").replace(
        "${google_firestore_database.jobs[0].name}", "videogen-jobs"
    )

    def allows(resource: str) -> bool:  # the CEL's two forms, == and startsWith, evaluated on a name
        exact = re.findall(r'resource\.name == \\?"([^"\\]+)\\?"', cel)
        prefixes = re.findall(r'startsWith\(\\?"([^"\\]+)\\?"\)', cel)
        return resource in exact or any(resource.startswith(p) for p in prefixes)

    assert allows(name) and allows(f"{name}/documents/jobs/1")
    assert not allows("projects/p/databases/videogen-jobs-staging")


def _references(body: Any, seen: frozenset[str] = frozenset()) -> set[str]:
    """The google_* blocks `body` refers to, through locals too."""
    text = json.dumps(body)
    found = set(re.findall(r"\b((?:data\.)?google_[a-z0-9_]+\.[a-z0-9_]+)", text))
    for local in set(re.findall(r"\blocal\.([a-z0-9_]+)", text)) - seen:
        if local in config()["locals"]:
            found |= _references(config()["locals"][local], seen | {local})
    return found


def test_every_google_resource_waits_for_the_apis() -> None:
    # A resource (or data source) with no dependency path to the API enablement is planned or
    # created before its API is on: the first plan on a fresh project failed this way.
    blocks = _blocks()
    apis = {name for name in blocks if name.startswith("google_project_service.")}
    reaches: dict[str, bool] = {}

    def waits(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name in apis:
            return True
        if name in reaches:
            return reaches[name]
        if name in seen or name not in blocks:
            return False
        result = any(waits(ref, seen | {name}) for ref in _references(blocks[name]))
        reaches[name] = result
        return result

    missing = sorted(
        name
        for name in blocks
        if name not in apis and (name.startswith(("google_", "data.google_"))) and not waits(name)
    )
    assert missing == []


def test_each_rate_rule_takes_its_own_requests() -> None:
    # A rate rule that matches every request ends evaluation for all of them (its conform action is
    # allow), so a later rate rule over the same requests never runs; and keyless requests keyed on
    # a header all share one bucket. Keyed requests: per key; keyless ones: per IP.
    rules = config()["resource"]["google_compute_security_policy"]["edge"]["rule"]
    rate = {r["rate_limit_options"][0]["enforce_on_key"]: r for r in rules if r.get("action") == "rate_based_ban"}
    assert set(rate) == {"HTTP_HEADER", "IP"}
    by_key, by_ip = (_unwrap(r["match"][0]["expr"][0]["expression"]) for r in (rate["HTTP_HEADER"], rate["IP"]))
    assert by_key == "has(request.headers['x-api-key'])"
    assert by_ip == "!has(request.headers['x-api-key'])"  # disjoint: both rules act
    assert all("config" not in r["match"][0] for r in rate.values())  # no match-everything src_ip_ranges
