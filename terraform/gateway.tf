# deployment_mode = "gateway_workers": per model, a small always-on CPU group behind the load
# balancer serves the API (ROLE=api: no model loaded, /predict and /jobs go through the queue with
# the model's attribute); the model's GPU group only runs jobs and scales 0..N on its own
# subscription's backlog. A request that arrives while no GPU VM exists is queued and served when
# one has booted.
locals {
  gateway_models = local.gateway ? local.models : {}
  gateway_metadata = {
    for name, m in local.gateway_models : name => merge(local.model_metadata[name], {
      role                  = "api"
      device                = "cpu"
      install-nvidia-driver = "False"
      server-env = join("\n", [for k, v in merge(local.model_server_env[name], {
        ROLE              = "api"
        PREDICT_VIA_QUEUE = "true"
        JOBS_WORKER       = "false"
      }) : "${k}=${v}"])
    })
  }
}

resource "google_compute_region_instance_template" "gateway" {
  for_each     = local.gateway_models
  name_prefix  = "${each.value.prefix}-gw-"
  region       = var.region
  machine_type = var.gateway_machine_type
  tags         = [local.network_tag]
  labels       = merge(local.labels, { model = each.key })
  metadata     = local.gateway_metadata[each.key]

  disk {
    source_image = var.gateway_image
    disk_size_gb = 50 # the same requirements as the GPU VMs, torch included
    disk_type    = "pd-balanced"
    boot         = true
    auto_delete  = true
  }

  network_interface {
    subnetwork = google_compute_subnetwork.main.id
  }

  service_account {
    email  = google_service_account.server.email
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_region_instance_group_manager" "gateway" {
  for_each           = local.gateway_models
  name               = "${each.value.prefix}-gateway"
  region             = var.region
  base_instance_name = "${each.value.prefix}-gw"

  version {
    instance_template = google_compute_region_instance_template.gateway[each.key].self_link
  }

  named_port {
    name = "http"
    port = local.serving_port
  }

  auto_healing_policies {
    health_check      = google_compute_health_check.autohealing[each.key].id
    initial_delay_sec = var.first_boot_seconds
  }

  # CPU VMs need no scarce quota: surge first, so an update never leaves the API without a VM.
  update_policy {
    type                  = "PROACTIVE"
    minimal_action        = "REPLACE"
    max_surge_fixed       = length(var.zones) # 0 or at least the zone count; var.zones is checked to be in var.region
    max_unavailable_fixed = 0
  }

  wait_for_instances = false
}

resource "google_compute_region_autoscaler" "gateway" {
  for_each = local.gateway_models
  name     = "${each.value.prefix}-gateway-autoscaler"
  region   = var.region
  target   = google_compute_region_instance_group_manager.gateway[each.key].id

  autoscaling_policy {
    min_replicas    = var.gateway_min_replicas
    max_replicas    = var.gateway_max_replicas
    cooldown_period = 300

    cpu_utilization {
      target = 0.6
    }
  }
}
