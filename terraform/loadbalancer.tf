# Global external Application Load Balancer (EXTERNAL_MANAGED) in front of the models' groups:
# HTTPS with a Google-managed certificate when `domain` is set (and HTTP redirected to it), else
# plain HTTP. /models/<name>/... reaches that model (the path rewritten to /...); everything else
# the default model.
resource "google_compute_global_address" "lb" {
  name       = "${local.name}-lb-ip"
  depends_on = [google_project_service.apis]
}

resource "google_compute_health_check" "lb" {
  for_each            = local.models
  name                = "${each.value.prefix}-lb"
  check_interval_sec  = 5
  timeout_sec         = 5
  healthy_threshold   = 2
  unhealthy_threshold = 2

  http_health_check {
    port         = local.serving_port
    request_path = "/health"
  }

  log_config {
    enable = true
  }

  depends_on = [google_project_service.apis]
}

resource "google_compute_backend_service" "servers" {
  for_each                        = local.models
  name                            = "${each.value.prefix}-backend"
  load_balancing_scheme           = "EXTERNAL_MANAGED"
  protocol                        = "HTTP"
  port_name                       = "http"
  timeout_sec                     = var.backend_timeout_seconds
  connection_draining_timeout_sec = var.drain_timeout_seconds
  health_checks                   = [google_compute_health_check.lb[each.key].id]
  security_policy                 = google_compute_security_policy.edge.id

  # all_in_one: the model's GPU VMs, balanced by request rate; gateway_workers: its CPU API group.
  backend {
    group                 = local.gateway ? google_compute_region_instance_group_manager.gateway[each.key].instance_group : google_compute_region_instance_group_manager.servers[each.key].instance_group
    balancing_mode        = local.gateway ? "UTILIZATION" : "RATE"
    max_rate_per_instance = local.gateway ? null : var.requests_per_second_per_vm
    max_utilization       = local.gateway ? 0.8 : null
    capacity_scaler       = 1
  }

  log_config {
    enable      = true
    sample_rate = 1
  }
}

resource "google_compute_url_map" "api" {
  name            = "${local.name}-api"
  default_service = google_compute_backend_service.servers[local.default_model].id

  host_rule {
    hosts        = ["*"]
    path_matcher = "models"
  }

  path_matcher {
    name            = "models"
    default_service = google_compute_backend_service.servers[local.default_model].id

    # /models/<name>/predict -> that model's backend as /predict (the server knows no prefix;
    # job links it returns, /jobs/{id}, work through any model: the job store is shared).
    dynamic "route_rules" {
      for_each = { for index, name in sort(keys(local.models)) : name => index }
      content {
        priority = route_rules.value + 1
        service  = google_compute_backend_service.servers[route_rules.key].id

        match_rules {
          prefix_match = local.models[route_rules.key].path
        }

        route_action {
          url_rewrite {
            path_prefix_rewrite = "/"
          }
        }
      }
    }
  }
}

# --- HTTPS (when a domain is set) -----------------------------------------------------------

resource "google_compute_managed_ssl_certificate" "api" {
  count = local.https ? 1 : 0
  # NOTE: the name follows the domain: a new domain replaces the certificate (domains are
  # ForceNew), and create_before_destroy needs the new one to have a name of its own.
  name = "${local.name}-cert-${substr(sha256(var.domain), 0, 8)}"

  managed {
    domains = [var.domain]
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [google_project_service.apis]
}

resource "google_compute_ssl_policy" "tls12" {
  name            = "${local.name}-tls12"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"

  depends_on = [google_project_service.apis]
}

resource "google_compute_target_https_proxy" "api" {
  count            = local.https ? 1 : 0
  name             = "${local.name}-https"
  url_map          = google_compute_url_map.api.id
  ssl_certificates = [google_compute_managed_ssl_certificate.api[0].id]
  ssl_policy       = google_compute_ssl_policy.tls12.id
}

resource "google_compute_global_forwarding_rule" "https" {
  count                 = local.https ? 1 : 0
  name                  = "${local.name}-https"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_protocol           = "TCP"
  port_range            = "443"
  ip_address            = google_compute_global_address.lb.id
  target                = google_compute_target_https_proxy.api[0].id
}

# --- HTTP: a redirect to HTTPS with a domain, the API itself without one ---------------------

resource "google_compute_url_map" "redirect" {
  count = local.https ? 1 : 0
  name  = "${local.name}-redirect"

  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "MOVED_PERMANENTLY_DEFAULT"
    strip_query            = false
  }

  depends_on = [google_project_service.apis]
}

resource "google_compute_target_http_proxy" "api" {
  name    = "${local.name}-http"
  url_map = local.https ? google_compute_url_map.redirect[0].id : google_compute_url_map.api.id
}

resource "google_compute_global_forwarding_rule" "http" {
  name                  = "${local.name}-http"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_protocol           = "TCP"
  port_range            = "80"
  ip_address            = google_compute_global_address.lb.id
  target                = google_compute_target_http_proxy.api.id
}
