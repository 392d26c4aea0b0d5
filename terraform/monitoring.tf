# Operations (var.monitoring_enabled): a dashboard, alert policies, an uptime check through the
# load balancer and a log-based metric for the boot stages. The server's metrics arrive through
# the Ops Agent's Prometheus receiver (Managed Service for Prometheus), so the queries are PromQL on
# the names the server exports; tests/terraform checks each name against the server's registry.
locals {
  monitoring  = var.monitoring_enabled ? 1 : 0
  boot_metric = "${replace(local.name, "-", "_")}_startup_stage_seconds"
  # The channel's own instances (none when monitoring is off or no e-mail is set).
  notification_names = google_monitoring_notification_channel.email[*].id
  # Every model's workers' subscription, as a PromQL regular expression.
  worker_subscriptions = join("|", [for s in google_pubsub_subscription.workers : s.name])
  # Servers that should be ready at the least: the gateways, or every model's GPU minimum.
  min_ready = local.gateway ? var.gateway_min_replicas * length(local.models) : sum([for m in values(local.models) : m.min_replicas])

  # Each alert: a PromQL condition, how long it must hold, and what to do about it.
  alerts = merge(
    {
      error_ratio = {
        title    = "Generation error ratio above ${var.alert_error_ratio * 100}%"
        query    = "sum(rate(videogen_generations_total{outcome!=\"succeeded\"}[15m])) / sum(rate(videogen_generations_total[15m])) > ${var.alert_error_ratio}"
        duration = "900s"
        doc      = "More than ${var.alert_error_ratio * 100}% of generations failed over 15 minutes. The dashboard's 'Errors by code' says which; the server logs carry the request id."
      }
      latency_sla = {
        title    = "p95 generation time above ${var.alert_latency_sla_seconds} s"
        query    = "histogram_quantile(0.95, sum by (le) (rate(videogen_generation_duration_seconds_bucket[15m]))) > ${var.alert_latency_sla_seconds}"
        duration = "900s"
        doc      = "Generations are slower than the SLA: larger requests, a degraded GPU, or contention. Compare 'Seconds per stage'."
      }
      too_few_ready = {
        title    = "Fewer ready servers than the minimum"
        query    = "(sum(videogen_ready) or vector(0)) < ${local.min_ready}"
        duration = "600s"
        doc      = "Fewer servers report /health ready than the group's minimum for 10 minutes: failed boots (sudo journalctl -u google-startup-scripts), setup failures or GPU faults."
      }
      restarts = {
        title    = "Server restarting repeatedly"
        query    = "sum by (instance) (changes(process_start_time_seconds[1h])) > ${var.alert_restarts_per_hour}"
        duration = "0s"
        doc      = "A server process restarted more than ${var.alert_restarts_per_hour} times in an hour (systemd Restart=on-failure). Read sudo journalctl -u videogen on the VM."
      }
    },
    var.jobs_enabled ? {
      backlog = {
        title    = "Job backlog above ${var.alert_backlog_threshold}"
        query    = "sum(pubsub_googleapis_com:subscription_num_undelivered_messages{subscription_id=~\"${local.worker_subscriptions}\"}) > ${var.alert_backlog_threshold}"
        duration = "600s"
        doc      = "Jobs are waiting longer than the GPUs can take them (all models together; the dashboard's backlog chart is per subscription): raise that model's max_replicas (and the L4 quota) or look for stuck workers."
      }
      dead_letters = {
        title    = "Jobs in the dead-letter queue"
        query    = "sum(pubsub_googleapis_com:subscription_num_undelivered_messages{subscription_id=\"${google_pubsub_subscription.dead_letter[0].name}\"}) > 0"
        duration = "0s"
        doc      = "A job failed every attempt. GET /jobs/{id} shows the reason; pull the dead-letter subscription to see which, and acknowledge when handled."
      }
    } : {},
  )
}

resource "google_monitoring_notification_channel" "email" {
  count        = var.monitoring_enabled && var.alert_email != "" ? 1 : 0
  display_name = "${local.name} alerts"
  type         = "email"

  labels = {
    email_address = var.alert_email
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_dashboard" "main" {
  count = local.monitoring
  dashboard_json = templatefile("${path.module}/dashboard.json", {
    name         = local.name
    subscription = var.jobs_enabled ? local.worker_subscriptions : "none"
    boot_metric  = local.boot_metric
  })

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "alerts" {
  for_each              = var.monitoring_enabled ? local.alerts : {}
  display_name          = "${local.name}: ${each.value.title}"
  combiner              = "OR"
  notification_channels = local.notification_names

  conditions {
    display_name = each.value.title
    condition_prometheus_query_language {
      query               = each.value.query
      duration            = each.value.duration
      evaluation_interval = "60s"
    }
  }

  documentation {
    content   = each.value.doc
    mime_type = "text/markdown"
  }

  depends_on = [google_project_service.apis]
}

# /health through the load balancer (the edge lets /health in without a key).
resource "google_monitoring_uptime_check_config" "health" {
  count        = local.monitoring
  display_name = "${local.name} /health"
  timeout      = "10s"
  period       = "60s"

  http_check {
    path         = "/health"
    port         = local.https ? 443 : 80
    use_ssl      = local.https
    validate_ssl = local.https
  }

  monitored_resource {
    type = "uptime_url"
    labels = {
      project_id = var.project_id
      host       = local.https ? var.domain : google_compute_global_address.lb.address
    }
  }
}

resource "google_monitoring_alert_policy" "uptime" {
  count                 = local.monitoring
  display_name          = "${local.name}: /health failing through the load balancer"
  combiner              = "OR"
  notification_channels = local.notification_names

  conditions {
    display_name = "uptime check failing"
    condition_threshold {
      filter          = "metric.type=\"monitoring.googleapis.com/uptime_check/check_passed\" AND resource.type=\"uptime_url\" AND metric.label.check_id=\"${google_monitoring_uptime_check_config.health[0].uptime_check_id}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 1
      duration        = "300s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_NEXT_OLDER"
        cross_series_reducer = "REDUCE_COUNT_FALSE"
        group_by_fields      = ["resource.label.host"]
      }
    }
  }
}

# Boot stage durations from the startup script's lines ("startup stage=NAME result=R seconds=S").
resource "google_logging_metric" "startup_stages" {
  count  = local.monitoring
  name   = local.boot_metric
  filter = "resource.type=\"gce_instance\" AND \"startup stage=\" AND \"seconds=\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "s"
    labels {
      key        = "stage"
      value_type = "STRING"
    }
    labels {
      key        = "result"
      value_type = "STRING"
    }
  }

  value_extractor = "REGEXP_EXTRACT(${var.startup_log_field}, \"seconds=([0-9.]+)\")"
  label_extractors = {
    stage  = "REGEXP_EXTRACT(${var.startup_log_field}, \"stage=([a-z_]+)\")"
    result = "REGEXP_EXTRACT(${var.startup_log_field}, \"result=([a-z_]+)\")"
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 20
      growth_factor      = 1.6
      scale              = 0.1
    }
  }

  depends_on = [google_project_service.apis]
}
