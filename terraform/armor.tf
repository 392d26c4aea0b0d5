# Cloud Armor at the edge: preconfigured WAF rules, no X-API-Key no entry (but /health), rate-based
# bans per key and per IP, an optional allow-list, JSON bodies parsed for the WAF.
locals {
  waf_rules = {
    1000 = "sqli-v33-stable"
    1001 = "xss-v33-stable"
    1002 = "lfi-v33-stable"
    1003 = "rfi-v33-stable"
    1004 = "rce-v33-stable"
    1005 = "methodenforcement-v33-stable"
    1006 = "scannerdetection-v33-stable"
    1007 = "protocolattack-v33-stable"
    1008 = "sessionfixation-v33-stable"
  }
}

resource "google_compute_security_policy" "edge" {
  name = "${local.name}-edge"
  type = "CLOUD_ARMOR"

  depends_on = [google_project_service.apis]

  advanced_options_config {
    json_parsing = "STANDARD"
    log_level    = "VERBOSE"
  }

  dynamic "rule" {
    for_each = length(var.allowed_source_ranges) > 0 ? [1] : []
    content {
      priority    = 100
      action      = "deny(403)"
      description = "Only the allow-listed source ranges"
      match {
        expr {
          expression = join(" && ", [for r in var.allowed_source_ranges : "!inIpRange(origin.ip, '${r}')"])
        }
      }
    }
  }

  dynamic "rule" {
    for_each = local.waf_rules
    content {
      priority    = rule.key
      action      = "deny(403)"
      description = "Preconfigured WAF: ${rule.value}"
      preview     = var.waf_preview
      match {
        expr {
          expression = "evaluatePreconfiguredWaf('${rule.value}', {'sensitivity': ${var.waf_sensitivity}})"
        }
      }
    }
  }

  rule {
    priority    = 1009
    action      = "deny(403)"
    description = "Preconfigured WAF: cve-canary (Log4j and other CVE probes)"
    preview     = var.waf_preview
    match {
      expr {
        expression = "evaluatePreconfiguredExpr('cve-canary')"
      }
    }
  }

  rule {
    priority    = 2000
    action      = "deny(403)"
    description = "No X-API-Key header: refused at the edge (except /health)"
    match {
      expr {
        expression = "!has(request.headers['x-api-key']) && request.path != '/health'"
      }
    }
  }

  # NOTE: a rate-based rule's conform action (allow) ends evaluation, so two rate rules over the
  # same requests cannot both act: each rule takes its own requests. Requests with a key are
  # limited per key; the only keyless ones left (/health: uptime checks, probes) per client IP, so
  # a keyless flood bans its own source, not every keyless caller (HTTP_HEADER would fall back to
  # one shared ALL key for them).
  rule {
    priority    = 3000
    action      = "rate_based_ban"
    description = "Rate-based ban per API key (requests with X-API-Key)"
    match {
      expr {
        expression = "has(request.headers['x-api-key'])"
      }
    }
    rate_limit_options {
      conform_action      = "allow"
      exceed_action       = "deny(429)"
      enforce_on_key      = "HTTP_HEADER"
      enforce_on_key_name = "X-API-Key"
      ban_duration_sec    = var.rate_limit_ban_seconds
      rate_limit_threshold {
        count        = var.rate_limit_per_key_per_minute
        interval_sec = 60
      }
    }
  }

  rule {
    priority    = 3100
    action      = "rate_based_ban"
    description = "Rate-based ban per client IP (requests without X-API-Key)"
    match {
      expr {
        expression = "!has(request.headers['x-api-key'])"
      }
    }
    rate_limit_options {
      conform_action   = "allow"
      exceed_action    = "deny(429)"
      enforce_on_key   = "IP"
      ban_duration_sec = var.rate_limit_ban_seconds
      rate_limit_threshold {
        count        = var.rate_limit_per_ip_per_minute
        interval_sec = 60
      }
    }
  }

  rule {
    priority    = 2147483647
    action      = "allow"
    description = "Default: allow"
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
  }
}
