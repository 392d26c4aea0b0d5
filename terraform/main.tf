# Names, labels and the configuration every other file shares.
locals {
  name   = var.name
  labels = merge({ app = "videogen", managed-by = "terraform" }, var.labels)

  network_tag    = "${local.name}-server"
  serving_port   = var.serving_port
  weights_bucket = "${var.project_id}-${local.name}-weights"
  outputs_bucket = "${var.project_id}-${local.name}-outputs"
  uploads_bucket = "${var.project_id}-${local.name}-uploads"

  # Google's load balancer and health-check ranges, and IAP's TCP forwarding range.
  google_lb_ranges = ["130.211.0.0/22", "35.191.0.0/16"]
  iap_ranges       = ["35.235.240.0/20"]

  https   = var.domain != ""
  gateway = var.deployment_mode == "gateway_workers"
}

# The APIs the deployment uses; left enabled on destroy (other things in the project may need them).
resource "google_project_service" "apis" {
  for_each = toset([
    "compute.googleapis.com",
    "iap.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
    "iamcredentials.googleapis.com",
  ])
  service            = each.value
  disable_on_destroy = false
}
