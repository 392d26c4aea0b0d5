# The GPU VMs, per model (models.tf): a regional instance template and a regional managed
# instance group with autohealing and an autoscaler. startup/startup.sh (in metadata) turns each VM
# into a server of its model.
locals {
  # The server's settings beyond what startup.sh derives from the attributes below, shared by
  # every model; model_server_env adds each model's own (its server_env wins over var.server_env).
  server_env = {
    GENERATION_TIMEOUT_SECONDS = tostring(var.generation_timeout_seconds)
    DRAIN_TIMEOUT_SECONDS      = tostring(var.drain_timeout_seconds)
    # NOTE: the server takes gs:// inputs only from these buckets, the ones iam.tf lets it read.
    INPUT_BUCKETS = join(",", var.input_buckets)
    # POST /uploads keeps files here, where every VM and worker reads them.
    UPLOAD_BUCKET = google_storage_bucket.uploads.name
  }
  model_server_env = {
    for name, m in local.models : name => merge(
      local.server_env,
      # The model's name behind the load balancer; its jobs carry it as a Pub/Sub attribute.
      { MODEL_ALIAS = name },
      local.jobs_server_env[name],
      var.server_env,
      m.server_env,
    )
  }

  # Every VM's metadata; model_metadata adds what differs per model.
  metadata = {
    startup-script         = file("${path.module}/../startup/startup.sh")
    shutdown-script        = file("${path.module}/../startup/shutdown.sh")
    enable-oslogin         = "TRUE"
    block-project-ssh-keys = "TRUE"
    install-nvidia-driver  = "True"

    # Read by startup.sh (docs/deploy.md lists them).
    role              = "all"
    ops-agent         = tostring(var.ops_agent_enabled)
    weights-bucket    = google_storage_bucket.weights.name
    app-bundle        = "gs://${google_storage_bucket.weights.name}/${google_storage_bucket_object.app_bundle.name}"
    app-bundle-sha256 = local.app_bundle_sha256
    # make wheelhouse-push puts the environment's wheels here: VMs install without PyPI.
    wheelhouse     = "gs://${google_storage_bucket.weights.name}/wheelhouse"
    pypi-fallback  = tostring(var.pypi_fallback)
    device         = "cuda"
    port           = tostring(local.serving_port)
    output-bucket  = google_storage_bucket.outputs.name
    api-key-secret = google_secret_manager_secret.api_keys.id
  }
  model_metadata = {
    for name, m in local.models : name => merge(local.metadata, {
      model          = m.model
      model-revision = m.revision
      server-env     = join("\n", [for k, v in local.model_server_env[name] : "${k}=${v}"])
    })
  }
}

resource "google_compute_region_instance_template" "server" {
  for_each     = local.models
  name_prefix  = "${each.value.prefix}-"
  region       = var.region
  machine_type = each.value.machine_type
  tags         = [local.network_tag]
  labels       = merge(local.labels, { model = each.key })
  metadata     = local.model_metadata[each.key]

  guest_accelerator {
    type  = var.gpu_type
    count = each.value.gpu_count
  }

  disk {
    source_image = "projects/${var.image_project}/global/images/family/${var.image_family}"
    disk_size_gb = var.boot_disk_size_gb
    disk_type    = var.boot_disk_type
    boot         = true
    auto_delete  = true
  }

  # No access_config: no external IP. Egress goes through Cloud NAT.
  network_interface {
    subnetwork = google_compute_subnetwork.main.id
  }

  service_account {
    email  = google_service_account.server.email
    scopes = ["cloud-platform"] # IAM on the account does the limiting
  }

  scheduling {
    on_host_maintenance         = "TERMINATE" # GPUs cannot live-migrate
    automatic_restart           = !each.value.spot
    preemptible                 = each.value.spot
    provisioning_model          = each.value.spot ? "SPOT" : "STANDARD"
    instance_termination_action = each.value.spot ? "DELETE" : null
  }

  # Secure Boot stays off by default: the NVIDIA kernel module that the Deep Learning VM image
  # installs at first boot is not signed for it. vTPM and integrity monitoring are on.
  shielded_instance_config {
    enable_secure_boot          = var.secure_boot
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  lifecycle {
    create_before_destroy = true
  }
}

# Autohealing is slower to judge than the load balancer: a VM is replaced only after about
# five minutes of failed checks, and never during its first boot (initial delay).
resource "google_compute_health_check" "autohealing" {
  for_each            = local.models
  name                = "${each.value.prefix}-autohealing"
  check_interval_sec  = 30
  timeout_sec         = 10
  healthy_threshold   = 1
  unhealthy_threshold = 10

  http_health_check {
    port         = local.serving_port
    request_path = "/health"
  }

  log_config {
    enable = true
  }

  depends_on = [google_project_service.apis]
}

resource "google_compute_region_instance_group_manager" "servers" {
  for_each           = local.models
  name               = "${each.value.prefix}-mig"
  region             = var.region
  base_instance_name = each.value.prefix

  distribution_policy_zones        = var.zones
  distribution_policy_target_shape = "EVEN"

  version {
    instance_template = google_compute_region_instance_template.server[each.key].self_link
  }

  named_port {
    name = "http"
    port = local.serving_port
  }

  auto_healing_policies {
    health_check      = google_compute_health_check.autohealing[each.key].id
    initial_delay_sec = var.first_boot_seconds
  }

  # No surge by default: replacing a VM never needs GPU quota beyond the group's size. Compute
  # Engine then needs max_unavailable >= the number of zones for a regional group (fixed values
  # are 0 or at least the zone count; the variables' validations hold that).
  update_policy {
    type           = "PROACTIVE"
    minimal_action = "REPLACE"
    # NOTE: PROACTIVE (the API's default): autoscaling does not work on a regional group whose
    # proactive redistribution is off (NONE is "for non-autoscaled groups").
    instance_redistribution_type = "PROACTIVE"
    max_surge_fixed              = var.update_max_surge
    max_unavailable_fixed        = var.update_max_surge == 0 ? max(length(var.zones), var.update_max_unavailable) : var.update_max_unavailable
    replacement_method           = "SUBSTITUTE"
  }

  wait_for_instances = false
}

resource "google_compute_region_autoscaler" "servers" {
  for_each = local.models
  name     = "${each.value.prefix}-autoscaler"
  region   = var.region
  target   = google_compute_region_instance_group_manager.servers[each.key].id

  autoscaling_policy {
    # gateway_workers: GPUs scale to zero, one VM per job waiting or running.
    min_replicas    = local.gateway ? 0 : each.value.min_replicas
    max_replicas    = each.value.max_replicas
    cooldown_period = var.first_boot_seconds

    # all_in_one: the load balancer's measure of use, requests per second against the backend's
    # max_rate_per_instance (what one GPU sustains).
    dynamic "load_balancing_utilization" {
      for_each = local.gateway ? [] : [1]
      content {
        target = var.autoscaling_target
      }
    }

    # gateway_workers: the backlog of this model's subscription (unacknowledged messages include
    # the jobs being run, so a busy VM is kept); each model scales to zero on its own.
    dynamic "metric" {
      for_each = local.gateway ? [1] : []
      content {
        name                       = "pubsub.googleapis.com/subscription/num_undelivered_messages"
        filter                     = "resource.type = pubsub_subscription AND resource.label.subscription_id = \"${google_pubsub_subscription.workers[each.key].name}\""
        single_instance_assignment = 1
      }
    }

    scale_in_control {
      time_window_sec = 1200
      max_scaled_in_replicas {
        fixed = 1
      }
    }
  }
}
