"""Several models behind one load balancer (terraform/models.tf and the resources made per model):
the models map resolved by Terraform's own evaluator on the example tfvars and on the
single-model variables, its validations, and the per-model wiring read with python-hcl2."""

from __future__ import annotations

import re

import pytest

from tests.support.terraform import EXAMPLE, Refused, console
from tests.terraform.test_terraform import config, resources

BASE = 'project_id = "p"\n'
PER_MODEL = {
    "google_compute_region_instance_template": {"server", "gateway"},
    "google_compute_region_instance_group_manager": {"servers", "gateway"},
    "google_compute_region_autoscaler": {"servers", "gateway"},
    "google_compute_health_check": {"lb", "autohealing"},
    "google_compute_backend_service": {"servers"},
}


def test_the_example_deploys_ltx_video_and_latentsync_with_ltx_video_as_default() -> None:
    models, default, filters = console("[local.models, local.default_model, local.job_filters]", EXAMPLE.read_text())
    assert set(models) == {"ltx-video", "latentsync"} and default == "ltx-video"
    assert models["latentsync"]["model"] == "latentsync" and models["latentsync"]["revision"] == "1.6"
    assert models["latentsync"]["spot"] is True and models["ltx-video"]["spot"] is False
    assert {m["path"] for m in models.values()} == {"/models/ltx-video/", "/models/latentsync/"}
    # Resource names stay unique per model and within Compute Engine's 63 characters.
    prefixes = {m["prefix"] for m in models.values()}
    assert prefixes == {"videogen-ltx-video", "videogen-latentsync"}
    assert max(len(f"{p}-gateway-autoscaler") for p in prefixes) <= 63
    assert filters == {"ltx-video": 'attributes.model = "ltx-video"', "latentsync": 'attributes.model = "latentsync"'}


def test_the_single_model_variables_keep_working_under_their_old_names() -> None:
    tfvars = BASE + 'model = "latentsync"\nmodel_revision = "1.6"\nmin_replicas = 2\nmax_replicas = 3\nspot = true\n'
    models, default, filters = console("[local.models, local.default_model, local.job_filters]", tfvars)
    assert list(models) == ["latentsync"] and default == "latentsync"
    model = models["latentsync"]
    assert (model["revision"], model["min_replicas"], model["max_replicas"], model["spot"]) == ("1.6", 2, 3, True)
    # The bare deployment name: the group, template and subscription keep the names they had.
    assert model["prefix"] == "videogen"
    # No filter: adding one would recreate the existing subscription (a filter is immutable).
    assert filters == {"latentsync": None}


@pytest.mark.parametrize(
    ("models", "complaint"),
    [
        ('{ "LTX" = { model = "ltx-video", revision = "1" } }', "names of 2-20"),
        ('{ ltx = { model = "sora", revision = "1" } }', "each model is"),
        ('{ ltx = { model = "ltx-video", revision = "a b" } }', "each revision"),
        ('{ ltx = { model = "ltx-video", revision = "1", machine_type = "g2-standard-24" } }', "L4 count is gpu_count"),
        ('{ ltx = { model = "ltx-video", revision = "1", machine_type = "n2-standard-8" } }', "L4 count is gpu_count"),
        ('{ ltx = { model = "ltx-video", revision = "1", min_replicas = 0 } }', "min_replicas"),
        ('{ ltx = { model = "ltx-video", revision = "1", server_env = { PORT = "9" } } }', "not PORT"),
        ('{ ltx = { model = "ltx-video", revision = "1", server_env = { MODEL_ALIAS = "x" } } }', "not PORT"),
    ],
)
def test_a_bad_model_entry_is_refused_with_its_reason(models: str, complaint: str) -> None:
    with pytest.raises(Refused, match=complaint):
        console("local.models", BASE + f"models = {models}\n")


def test_four_l4s_on_a_g2_standard_48_are_accepted() -> None:
    tfvars = (
        BASE
        + 'models = { big = { model = "ltx-video", revision = "1", machine_type = "g2-standard-48", gpu_count = 4 } }\n'
    )
    assert console("local.models", tfvars)["big"]["gpu_count"] == 4


def test_the_default_model_must_be_one_of_the_models() -> None:
    two = 'models = { bb = { model = "ltx-video", revision = "1" }, aa = { model = "latentsync", revision = "1" } }\n'
    assert console("local.default_model", BASE + two) == "aa"  # the first name
    assert console("local.default_model", BASE + two + 'default_model = "bb"\n') == "bb"
    with pytest.raises(Refused, match="default_model"):
        console("local.default_model", BASE + two + 'default_model = "cc"\n')
    with pytest.raises(Refused, match="default_model"):
        console("local.default_model", BASE + 'default_model = "latentsync"\n')  # single model: ltx-video


def test_every_serving_resource_is_made_once_per_model() -> None:
    for rtype, names in PER_MODEL.items():
        for name in names:
            body = resources(rtype)[name]
            expected = "${local.gateway_models}" if name == "gateway" else "${local.models}"
            assert body["for_each"] == expected, (rtype, name)
            if "name" in body:
                assert body["name"].startswith("${each.value.prefix}-"), (rtype, name)
    subscription = resources("google_pubsub_subscription")["workers"]
    assert subscription["for_each"] == "${local.job_models}"
    assert subscription["filter"] == "${local.job_filters[each.key]}"
    for binding in ("server_pulls_jobs", "agent_acks_dead_letters"):
        member = resources("google_pubsub_subscription_iam_member")[binding]
        assert member["subscription"] == "${google_pubsub_subscription.workers[each.key].id}"


def test_each_model_gets_its_own_name_subscription_and_settings() -> None:
    server_env = config()["locals"]["model_server_env"]
    assert "{MODEL_ALIAS = name}" in server_env
    # Later maps win: the model's own server_env over the deployment's.
    order = [
        server_env.index(part)
        for part in ("local.server_env", "local.jobs_server_env[name]", "var.server_env", "m.server_env")
    ]
    assert order == sorted(order)
    metadata = config()["locals"]["model_metadata"]
    assert "model = m.model" in metadata and "model-revision = m.revision" in metadata
    template = resources("google_compute_region_instance_template")["server"]
    assert template["machine_type"] == "${each.value.machine_type}"
    assert template["scheduling"][0]["provisioning_model"] == '${each.value.spot ? "SPOT" : "STANDARD"}'


def test_the_url_map_routes_each_models_prefix_to_its_backend_rewritten_to_the_root() -> None:
    (url_map,) = [body for name, body in resources("google_compute_url_map").items() if name == "api"]
    default = "${google_compute_backend_service.servers[local.default_model].id}"
    assert url_map["default_service"] == default
    (host_rule,) = url_map["host_rule"]
    (matcher,) = url_map["path_matcher"]
    assert host_rule == {"hosts": ["*"], "path_matcher": matcher["name"]}
    assert matcher["default_service"] == default
    (dynamic,) = matcher["dynamic"]
    rules = dynamic["route_rules"]
    assert rules["for_each"] == "${{for index, name in sort(keys(local.models)) : name => index}}"
    (content,) = rules["content"]
    assert content["priority"] == "${route_rules.value + 1}"  # unique, 1..n
    assert content["service"] == "${google_compute_backend_service.servers[route_rules.key].id}"
    assert content["match_rules"] == [{"prefix_match": "${local.models[route_rules.key].path}"}]
    assert content["route_action"] == [{"url_rewrite": [{"path_prefix_rewrite": "/"}]}]


def test_per_model_scaling_reads_its_own_backlog_and_outputs_list_each_model() -> None:
    metric = resources("google_compute_region_autoscaler")["servers"]["autoscaling_policy"][0]["dynamic"]
    (content,) = [block["metric"]["content"][0] for block in metric if "metric" in block]
    assert re.search(r"workers\[each\.key\]\.name", content["filter"])
    outputs = config()["output"]
    assert outputs["models"]["value"] == "${local.model_outputs}"
    per_model = config()["locals"]["model_outputs"]
    for field in ("url", "instance_group", "rolling_replace_command", "ssh_command"):
        assert f"{field} =" in per_model
    assert "servers[name].name" in per_model
