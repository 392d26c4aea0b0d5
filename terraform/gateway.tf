# deployment_mode = "gateway_workers": a small always-on CPU group behind the load balancer serves
# the API (ROLE=api: no model, /predict and /jobs go through the queue); the GPU group only runs
# jobs and scales 0..N on the subscription backlog. A request that arrives while no GPU VM exists
# is queued and served when one has booted.
locals {
  gateway_metadata = merge(local.metadata, {
    role                  = "api"
    device                = "cpu"
    install-nvidia-driver = "False"
    server-env = join("\n", [for k, v in merge(local.server_env, {
      ROLE              = "api"
      PREDICT_VIA_QUEUE = "true"
      JOBS_WORKER       = "false"
    }) : "${k}=${v}"])
  })
}

resource "google_compute_region_instance_template" "gateway" {
  count        = local.gateway ? 1 : 0
  name_prefix  = "${local.name}-gw-"
  region       = var.region
  machine_type = var.gateway_machine_type
  tags         = [local.network_tag]
  labels       = local.labels
  metadata     = local.gateway_metadata

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
  count              = local.gateway ? 1 : 0
  name               = "${local.name}-gateway"
  region             = var.region
  base_instance_name = "${local.name}-gw"

  version {
    instance_template = google_compute_region_instance_template.gateway[0].self_link
  }

  named_port {
    name = "http"
    port = local.serving_port
  }

  auto_healing_policies {
    health_check      = google_compute_health_check.autohealing.id
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
  count  = local.gateway ? 1 : 0
  name   = "${local.name}-gateway-autoscaler"
  region = var.region
  target = google_compute_region_instance_group_manager.gateway[0].id

  autoscaling_policy {
    min_replicas    = var.gateway_min_replicas
    max_replicas    = var.gateway_max_replicas
    cooldown_period = 300

    cpu_utilization {
      target = 0.6
    }
  }
}
