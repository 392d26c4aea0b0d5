"""terraform/, checked offline: `terraform fmt`, structure read with python-hcl2, checkov.

Providers cannot be downloaded here, so `terraform validate` cannot run; these tests check what
the deployment must guarantee, reading the configuration as data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest

from serve.config import Settings

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"
GOOGLE_LB_RANGES = {"130.211.0.0/22", "35.191.0.0/16"}
IAP_RANGES = {"35.235.240.0/20"}


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _clean(value: Any) -> Any:
    """python-hcl2 keeps quotes and bookkeeping keys; drop both."""
    if isinstance(value, dict):
        return {_unquote(k): _clean(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str):
        return _unquote(value)
    return value


@cache
def config() -> dict[str, Any]:
    """All .tf files: resources[type][name], variables[name], outputs[name], locals (merged)."""
    merged: dict[str, Any] = {"resource": {}, "variable": {}, "output": {}, "locals": {}, "ephemeral": {}}
    for path in sorted(TF.glob("*.tf")):
        with path.open() as handle:
            data = _clean(hcl2.load(handle))
        for block in data.get("resource", []) + data.get("ephemeral", []):
            kind = "ephemeral" if block in data.get("ephemeral", []) else "resource"
            for rtype, named in block.items():
                merged[kind].setdefault(rtype, {}).update(named)
        for kind in ("variable", "output"):
            for block in data.get(kind, []):
                merged[kind].update(block)
        for block in data.get("locals", []):
            merged["locals"].update(block)
    return merged


def resources(rtype: str) -> dict[str, Any]:
    return dict(config()["resource"].get(rtype, {}))


def only(rtype: str) -> dict[str, Any]:
    found = resources(rtype)
    assert len(found) == 1, f"expected one {rtype}, found {list(found)}"
    return next(iter(found.values()))


def _require_tool(name: str, path: str | None) -> str:
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is missing; `make test` installs it")
    pytest.skip(f"{name} is not installed (make test installs it)")


def test_terraform_fmt_is_clean() -> None:
    terraform = _require_tool("terraform", shutil.which("terraform"))
    done = subprocess.run([terraform, "fmt", "-check", "-recursive", str(TF)], capture_output=True, text=True)
    assert done.returncode == 0, f"not formatted: {done.stdout}{done.stderr}"


def test_no_vm_has_an_external_ip_and_gpus_stop_for_maintenance() -> None:
    templates = resources("google_compute_region_instance_template")
    assert set(templates) == {"server", "gateway"}
    assert not resources("google_compute_instance_template") and not resources("google_compute_instance")
    for template in templates.values():
        for interface in template["network_interface"]:
            assert "access_config" not in interface and "ipv6_access_config" not in interface
    template = templates["server"]
    (scheduling,) = template["scheduling"]
    assert scheduling["on_host_maintenance"] == "TERMINATE"
    # The model's L4 count, which variables.tf checks against its G2 machine type.
    assert template["guest_accelerator"][0]["count"] == "${each.value.gpu_count}"


def test_vm_hardening_that_checkov_cannot_see_on_regional_templates() -> None:
    """checkov has no policies for google_compute_region_instance_template; these stand in for
    CKV_GCP_30/31 (service account), 32 (project SSH keys), 34 (serial port), 35 (IP
    forwarding), 39 (Shielded VM), 40 (public IP, above)."""
    for template in resources("google_compute_region_instance_template").values():
        (account,) = template["service_account"]
        assert account["email"] == "${google_service_account.server.email}"
        assert account["scopes"] == ["cloud-platform"]
        assert template.get("can_ip_forward") in (None, False)
        (shielded,) = template["shielded_instance_config"]
        assert shielded["enable_vtpm"] is True and shielded["enable_integrity_monitoring"] is True
    metadata = config()["locals"]["metadata"]
    assert metadata["block-project-ssh-keys"] == "TRUE" and metadata["enable-oslogin"] == "TRUE"
    assert "serial-port-enable" not in metadata
    templates = resources("google_compute_region_instance_template")
    assert templates["server"]["metadata"] == "${local.model_metadata[each.key]}"
    assert templates["gateway"]["metadata"] == "${local.gateway_metadata[each.key]}"
    assert "merge(local.metadata, {" in config()["locals"]["model_metadata"]
    gateway = config()["locals"]["gateway_metadata"]
    assert "merge(local.model_metadata[name], {" in gateway and 'role = "api"' in gateway


def test_startup_and_shutdown_scripts_in_metadata_are_the_files_in_startup() -> None:
    metadata = config()["locals"]["metadata"]
    for key, name in (("startup-script", "startup.sh"), ("shutdown-script", "shutdown.sh")):
        assert metadata[key] == f'${{file("${{path.module}}/../startup/{name}")}}'
        assert (TF / ".." / "startup" / name).is_file()


def test_metadata_attributes_are_exactly_what_startup_sh_reads() -> None:
    script = (ROOT / "startup" / "startup.sh").read_text()
    read = set(re.findall(r"metadata instance/attributes/([a-z0-9-]+)", script))
    google = {"startup-script", "shutdown-script", "enable-oslogin", "block-project-ssh-keys", "install-nvidia-driver"}
    per_model = set(re.findall(r"\b([a-z][a-z0-9-]+)\s*=(?![=>])", config()["locals"]["model_metadata"]))
    given = (set(config()["locals"]["metadata"]) | per_model) - google
    assert given == read


def test_server_env_names_are_server_settings() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    names = set(config()["locals"]["server_env"])
    names |= set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", config()["locals"]["model_server_env"]))
    assert "MODEL_ALIAS" in names and names <= fields, names - fields


def test_backend_timeout_outlasts_the_longest_generation() -> None:
    variables = config()["variable"]
    backend = only("google_compute_backend_service")
    assert backend["timeout_sec"] == "${var.backend_timeout_seconds}"
    assert (
        config()["locals"]["server_env"]["GENERATION_TIMEOUT_SECONDS"] == "${tostring(var.generation_timeout_seconds)}"
    )
    assert variables["backend_timeout_seconds"]["default"] > variables["generation_timeout_seconds"]["default"]
    condition = variables["backend_timeout_seconds"]["validation"][0]["condition"]
    assert "var.backend_timeout_seconds > var.generation_timeout_seconds" in condition
    # The server's keep-alive outlasts the load balancer's 610 s HTTP keep-alive.
    assert Settings.model_fields["keep_alive_seconds"].default > 610


def test_health_checks_probe_health_on_the_serving_port() -> None:
    checks = resources("google_compute_health_check")
    assert set(checks) == {"lb", "autohealing"}
    for check in checks.values():
        (http,) = check["http_health_check"]
        assert http["request_path"] == "/health"
        assert http["port"] == "${local.serving_port}"
    for mig in resources("google_compute_region_instance_group_manager").values():
        assert (
            mig["auto_healing_policies"][0]["health_check"] == "${google_compute_health_check.autohealing[each.key].id}"
        )
        assert mig["named_port"][0]["port"] == "${local.serving_port}"
    assert only("google_compute_backend_service")["health_checks"] == ["${google_compute_health_check.lb[each.key].id}"]


def test_cloud_armor_policy_is_attached_and_complete() -> None:
    backend = only("google_compute_backend_service")
    assert backend["security_policy"] == "${google_compute_security_policy.edge.id}"
    assert backend["load_balancing_scheme"] == "EXTERNAL_MANAGED"
    policy = only("google_compute_security_policy")
    assert policy["advanced_options_config"][0]["json_parsing"] == "STANDARD"
    rules = policy["rule"]
    expressions = " ".join(str(rule.get("match")) for rule in rules)
    assert "has(request.headers['x-api-key'])" in expressions and "'/health'" in expressions
    limits = [r["rate_limit_options"][0] for r in rules if r.get("action") == "rate_based_ban"]
    keys = {(limit["enforce_on_key"], limit.get("enforce_on_key_name")) for limit in limits}
    assert keys == {("HTTP_HEADER", "X-API-Key"), ("IP", None)}
    waf = config()["locals"]["waf_rules"]
    assert {"sqli-v33-stable", "xss-v33-stable", "rce-v33-stable", "lfi-v33-stable"} <= set(waf.values())


def test_firewall_admits_only_google_ranges_to_serving_and_iap_to_ssh() -> None:
    locals_ = config()["locals"]
    ranges = {f"${{local.{name}}}": set(locals_[name]) for name in ("google_lb_ranges", "iap_ranges")}
    rules = resources("google_compute_firewall")
    assert set(rules) == {"serving", "iap_ssh"}
    assert ranges[rules["serving"]["source_ranges"]] == GOOGLE_LB_RANGES
    assert rules["serving"]["allow"][0]["ports"] == ["${tostring(local.serving_port)}"]
    assert ranges[rules["iap_ssh"]["source_ranges"]] == IAP_RANGES
    assert rules["iap_ssh"]["allow"][0]["ports"] == ["22"]
    for rule in rules.values():
        assert rule["direction"] == "INGRESS" and rule["target_tags"] == ["${local.network_tag}"]


def test_secret_access_is_granted_on_the_secret_not_the_project() -> None:
    on_secret = resources("google_secret_manager_secret_iam_member")
    roles = {binding["role"] for binding in on_secret.values()}
    assert "roles/secretmanager.secretAccessor" in roles
    for binding in on_secret.values():
        assert binding["secret_id"] == "${google_secret_manager_secret.api_keys.id}"
    project_roles = {b["role"] for b in resources("google_project_iam_member").values()}
    assert project_roles == {"roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/datastore.user"}
    firestore = resources("google_project_iam_member")["server_firestore"]
    assert "databases/${google_firestore_database.jobs[0].name}" in firestore["condition"][0]["expression"]
    assert not resources("google_project_iam_binding") and not resources("google_project_iam_policy")


def test_api_key_is_write_only_by_default() -> None:
    version = only("google_secret_manager_secret_version")
    assert "ephemeral.random_password.api_key" in version["secret_data_wo"]
    assert config()["variable"]["api_key_in_state"]["default"] is False


def test_buckets_are_private_and_uniform() -> None:
    for bucket in resources("google_storage_bucket").values():
        assert bucket["uniform_bucket_level_access"] is True
        assert bucket["public_access_prevention"] == "enforced"
    outputs = resources("google_storage_bucket")["outputs"]
    ages = [rule["condition"][0].get("age") for rule in outputs["lifecycle_rule"]]
    assert "${var.output_retention_days}" in ages


def test_every_variable_is_typed_and_described_and_every_output_described() -> None:
    for name, variable in config()["variable"].items():
        assert variable.get("type"), f"variable {name} has no type"
        assert len(variable.get("description", "")) > 10, f"variable {name} has no description"
    for name, output in config()["output"].items():
        assert len(output.get("description", "")) > 10, f"output {name} has no description"
    expected = {"load_balancer_ip", "url", "api_key", "ssh_command", "weights_bucket", "outputs_bucket"}
    assert expected | {"instance_group", "region", "curl_example"} <= set(config()["output"])
    assert config()["output"]["api_key"]["sensitive"] is True


def test_checkov_finds_no_failed_checks_and_every_skip_has_a_reason() -> None:
    checkov = _require_tool("checkov", os.environ.get("CHECKOV") or shutil.which("checkov"))
    for path in TF.glob("*.tf"):
        for skip in re.findall(r"checkov:skip=([^\n]*)", path.read_text()):
            check, _, reason = skip.partition(":")
            assert re.match(r"^CKV2?_GCP_\d+$", check) and len(reason.strip()) > 30, f"{path.name}: {skip}"
    done = subprocess.run(
        [checkov, "-d", str(TF), "--framework", "terraform", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BC_API_KEY": ""},
    )
    report = json.loads(done.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    summary = report["summary"]
    assert summary["parsing_errors"] == 0 and summary["passed"] > 30
    print(f"\ncheckov {summary['checkov_version']}: {summary['passed']} passed, {summary['skipped']} skipped")


def test_job_queue_has_dead_lettering_and_bindings_on_the_topics_and_subscription() -> None:
    workers = resources("google_pubsub_subscription")["workers"]
    assert workers["topic"] == "${google_pubsub_topic.jobs[0].id}"
    (policy,) = workers["dead_letter_policy"]
    assert policy["dead_letter_topic"] == "${google_pubsub_topic.dead_letter[0].id}"
    assert policy["max_delivery_attempts"] >= 5  # Pub/Sub's minimum; the workers give up after 3
    assert workers["ack_deadline_seconds"] >= 30
    server_env = config()["locals"]["jobs_server_env"]
    assert 'JOBS_ENABLED = "true"' in server_env
    assert "PUBSUB_SUBSCRIPTION = google_pubsub_subscription.workers[name].name" in server_env
    assert "local.jobs_server_env[name]" in config()["locals"]["model_server_env"]
    names = set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", server_env))
    assert names <= {name.upper() for name in Settings.model_fields}, names
    topic_roles = {(b["topic"], b["member"]) for b in resources("google_pubsub_topic_iam_member").values()}
    assert ("${google_pubsub_topic.jobs[0].id}", "${local.server_member}") in topic_roles
    subscriptions = resources("google_pubsub_subscription_iam_member")
    assert subscriptions["server_pulls_jobs"]["role"] == "roles/pubsub.subscriber"
    field = only("google_firestore_field")
    assert field["field"] == "expire_at" and "ttl_config" in field


def test_gateway_mode_scales_gpus_from_zero_on_the_backlog() -> None:
    autoscaler = resources("google_compute_region_autoscaler")["servers"]
    (policy,) = autoscaler["autoscaling_policy"]
    assert policy["min_replicas"] == "${local.gateway ? 0 : each.value.min_replicas}"
    (metric,) = [block["metric"] for block in policy["dynamic"] if "metric" in block]
    content = metric["content"][0]
    assert content["name"] == "pubsub.googleapis.com/subscription/num_undelivered_messages"
    assert content["single_instance_assignment"] == 1
    assert "google_pubsub_subscription.workers[each.key].name" in content["filter"]
    backend = only("google_compute_backend_service")["backend"][0]
    assert "google_compute_region_instance_group_manager.gateway[each.key].instance_group" in backend["group"]
    modes = config()["variable"]["deployment_mode"]
    assert modes["default"] == "all_in_one"
    assert any("var.jobs_enabled" in v["condition"] for v in modes["validation"])


def test_input_buckets_reach_the_server_and_only_they_are_readable_as_inputs() -> None:
    assert config()["locals"]["server_env"]["INPUT_BUCKETS"] == '${join(",", var.input_buckets)}'
    readers = resources("google_storage_bucket_iam_member")
    assert readers["inputs_reader"]["for_each"] == "${toset(var.input_buckets)}"


def test_uploads_have_a_bucket_every_vm_writes_and_reads_that_deletes_them() -> None:
    uploads = resources("google_storage_bucket")["uploads"]
    assert uploads["public_access_prevention"] == "enforced" and uploads["uniform_bucket_level_access"] is True
    ages = [rule["condition"][0].get("age") for rule in uploads["lifecycle_rule"]]
    assert 2 in ages  # the server refuses an upload after a day (UPLOAD_TTL_SECONDS); the bucket deletes it
    assert config()["locals"]["server_env"]["UPLOAD_BUCKET"] == "${google_storage_bucket.uploads.name}"
    roles = {(b["bucket"], b["role"]) for b in resources("google_storage_bucket_iam_member").values()}
    bucket = "${google_storage_bucket.uploads.name}"
    assert {(bucket, "roles/storage.objectCreator"), (bucket, "roles/storage.objectViewer")} <= roles
