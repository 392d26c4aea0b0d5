# --- Project and placement -------------------------------------------------------------------

variable "project_id" {
  type        = string
  description = "Google Cloud project id to deploy into."
}

variable "region" {
  type        = string
  description = "Region of the VMs, subnet and buckets; it must have NVIDIA L4 GPUs in the zones below."
  default     = "us-central1"
}

variable "zones" {
  type        = list(string)
  description = "Zones of the region that have L4s (gcloud compute accelerator-types list --filter='name=nvidia-l4')."
  default     = ["us-central1-a", "us-central1-b", "us-central1-c"]

  validation {
    condition     = length(var.zones) >= 1 && alltrue([for z in var.zones : can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", z))])
    error_message = "zones: at least one zone name such as us-central1-a."
  }

  validation {
    condition     = alltrue([for z in var.zones : startswith(z, "${var.region}-")])
    error_message = "zones: every zone must be in var.region (us-central1-a for us-central1)."
  }
}

variable "name" {
  type        = string
  description = "Prefix of every resource name."
  default     = "videogen"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.name))
    error_message = "name: 3-20 characters, lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "labels" {
  type        = map(string)
  description = "Extra labels on the resources that take labels."
  default     = {}
}

variable "subnet_cidr" {
  type        = string
  description = "Primary range of the VMs' subnet."
  default     = "10.40.0.0/20"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr: an IPv4 CIDR range."
  }
}

# --- The VMs -------------------------------------------------------------------------------------

variable "machine_type" {
  type        = string
  description = "G2 machine type (one NVIDIA L4 each for g2-standard-4 to -32)."
  default     = "g2-standard-8"

  validation {
    condition     = contains(["g2-standard-4", "g2-standard-8", "g2-standard-12", "g2-standard-16", "g2-standard-32"], var.machine_type)
    error_message = "machine_type: a single-L4 G2 type (g2-standard-4, -8, -12, -16 or -32)."
  }
}

variable "gpu_type" {
  type        = string
  description = "Accelerator type attached to each VM."
  default     = "nvidia-l4"

  validation {
    condition     = contains(["nvidia-l4"], var.gpu_type)
    error_message = "gpu_type: nvidia-l4 (G2 machine types come with L4s)."
  }
}

variable "image_project" {
  type        = string
  description = "Project of the boot image (Deep Learning VM images)."
  default     = "deeplearning-platform-release"
}

variable "image_family" {
  type        = string
  description = "Deep Learning VM image family with the NVIDIA driver (its branch ends the name) and Python 3.11+ (Ubuntu 24.04 has 3.12)."
  default     = "common-cu129-ubuntu-2404-nvidia-580"

  validation {
    # torch 2.13.0 from PyPI (requirements.txt) is a CUDA 13.0 build, which needs the R580 driver
    # or newer; an R570 image boots a GPU torch cannot use. tests/startup/test_gpu_stack.py reads
    # the CUDA version from the wheel's metadata and keeps this number true.
    condition     = tonumber(try(regex("-nvidia-([0-9]+)$", var.image_family)[0], "0")) >= 580
    error_message = "image_family: a family whose NVIDIA driver branch (the -nvidia-NNN suffix) is 580 or newer; the pinned torch is a CUDA 13.0 build."
  }
}

variable "boot_disk_size_gb" {
  type        = number
  description = "Boot disk size: image, virtual environment (about 6 GB with CUDA torch) and weights."
  default     = 150

  validation {
    condition     = var.boot_disk_size_gb >= 80 && var.boot_disk_size_gb <= 2000
    error_message = "boot_disk_size_gb: 80 to 2000."
  }
}

variable "boot_disk_type" {
  type        = string
  description = "Boot disk type (weights are read from it at every start)."
  default     = "pd-ssd"

  validation {
    condition     = contains(["pd-balanced", "pd-ssd", "hyperdisk-balanced"], var.boot_disk_type)
    error_message = "boot_disk_type: pd-balanced, pd-ssd or hyperdisk-balanced."
  }
}

variable "spot" {
  type        = bool
  description = "Spot VMs (much cheaper, may be preempted with 30 s notice; the shutdown script drains)."
  default     = false
}

variable "secure_boot" {
  type        = bool
  description = "Shielded VM Secure Boot; needs an image whose NVIDIA driver is signed for it."
  default     = false
}

variable "serving_port" {
  type        = number
  description = "Port the server listens on (the load balancer's backend port)."
  default     = 8080

  validation {
    condition     = var.serving_port >= 1024 && var.serving_port <= 65535
    error_message = "serving_port: 1024 to 65535."
  }
}

# --- The model and the server ------------------------------------------------------------------

variable "model" {
  type        = string
  description = "Backend the server runs: ltx-video (text-to-video) or latentsync (lip-sync); *-tiny are built in."
  default     = "ltx-video"

  validation {
    condition     = contains(["ltx-video", "ltx-video-tiny", "latentsync", "latentsync-tiny"], var.model)
    error_message = "model: ltx-video, ltx-video-tiny, latentsync or latentsync-tiny."
  }
}

variable "input_buckets" {
  type        = list(string)
  description = "Buckets whose objects lip-sync requests may name as gs:// inputs (the server gets read access)."
  default     = []
}

variable "model_revision" {
  type        = string
  description = "Revision in the weight cache (python -m serve.cli.weights push --revision)."
  default     = "0.9.1"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*$", var.model_revision))
    error_message = "model_revision: letters, digits, '.', '_' and '-'."
  }
}

variable "models" {
  type = map(object({
    model        = string
    revision     = string
    machine_type = optional(string, "g2-standard-8")
    gpu_count    = optional(number, 1)
    min_replicas = optional(number, 1)
    max_replicas = optional(number, 4)
    spot         = optional(bool, false)
    server_env   = optional(map(string), {})
  }))
  description = "Several models behind the one load balancer: name -> { model, revision, machine_type, gpu_count, min_replicas, max_replicas, spot, server_env }. Each is reached at /models/<name>/... and has its own VMs, autoscaler and job subscription. Empty: one model from the single-model variables (model, model_revision, machine_type, spot, min_replicas, max_replicas)."
  default     = {}

  validation {
    # Names go into resource names (<name>-<model>-gateway-autoscaler stays within 63 characters).
    condition     = alltrue([for name in keys(var.models) : can(regex("^[a-z][a-z0-9-]{0,18}[a-z0-9]$", name))])
    error_message = "models: names of 2-20 lower-case letters, digits and hyphens, starting with a letter."
  }

  validation {
    condition     = alltrue([for m in values(var.models) : contains(["ltx-video", "ltx-video-tiny", "latentsync", "latentsync-tiny"], m.model)])
    error_message = "models: each model is ltx-video, ltx-video-tiny, latentsync or latentsync-tiny."
  }

  validation {
    condition     = alltrue([for m in values(var.models) : can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*$", m.revision))])
    error_message = "models: each revision is letters, digits, '.', '_' and '-' (what was pushed with python -m serve.cli.weights push)."
  }

  validation {
    # G2 types come with a fixed number of L4s: 1 (g2-standard-4 to -32, but -24), 2 (-24), 4 (-48), 8 (-96).
    condition = alltrue([for m in values(var.models) : lookup({
      "g2-standard-4"  = 1, "g2-standard-8" = 1, "g2-standard-12" = 1, "g2-standard-16" = 1, "g2-standard-32" = 1,
      "g2-standard-24" = 2, "g2-standard-48" = 4, "g2-standard-96" = 8
    }, m.machine_type, 0) == m.gpu_count])
    error_message = "models: machine_type must be a G2 type whose L4 count is gpu_count (1: g2-standard-4/8/12/16/32, 2: -24, 4: -48, 8: -96)."
  }

  validation {
    # With the load balancer's signal a group cannot scale up from zero (gateway_workers sets 0 itself).
    condition     = alltrue([for m in values(var.models) : m.min_replicas >= 1 && m.max_replicas >= m.min_replicas && m.max_replicas <= 100])
    error_message = "models: 1 <= min_replicas <= max_replicas <= 100."
  }

  validation {
    condition     = alltrue([for m in values(var.models) : alltrue([for k in keys(m.server_env) : can(regex("^[A-Z][A-Z0-9_]*$", k)) && !contains(["PORT", "MODEL", "MODEL_ALIAS"], k)])])
    error_message = "models: server_env takes upper-case setting names, and not PORT, MODEL or MODEL_ALIAS (the deployment sets them)."
  }
}

variable "default_model" {
  type        = string
  description = "The model that /predict, /jobs, ... without a /models/<name>/ prefix reach; empty: the first name in models (or the single model)."
  default     = ""

  validation {
    condition     = var.default_model == "" || contains(length(var.models) > 0 ? keys(var.models) : [var.model], var.default_model)
    error_message = "default_model: empty or one of the names in models (var.model in the single-model form)."
  }
}

variable "app_bundle_path" {
  type        = string
  description = "The app bundle built by `make bundle`, relative to this directory."
  default     = "../dist/app.tar.gz"
}

variable "pypi_fallback" {
  type        = bool
  description = "Let a VM install its Python packages from PyPI when the wheelhouse for its requirements is missing (make wheelhouse-push); off: such a boot fails at install_app, saying what to push."
  default     = false
}

variable "server_env" {
  type        = map(string)
  description = "More server settings (names from docs/settings.md), e.g. { QUEUE_SIZE = \"4\" }."
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.server_env) : can(regex("^[A-Z][A-Z0-9_]*$", k))])
    error_message = "server_env: upper-case setting names."
  }

  validation {
    # The load balancer's and the autohealer's health checks probe the serving port that
    # startup.sh gives the server; PORT here would move the server off it.
    condition     = !contains(keys(var.server_env), "PORT") && !contains(keys(var.server_env), "MODEL_ALIAS")
    error_message = "server_env: PORT (the health-checked serving port) and MODEL_ALIAS (the model's name in models) are set by the deployment; do not override them."
  }
}

variable "generation_timeout_seconds" {
  type        = number
  description = "Longest generation the server runs (GENERATION_TIMEOUT_SECONDS)."
  default     = 840

  validation {
    condition     = var.generation_timeout_seconds >= 60 && var.generation_timeout_seconds <= 3600
    error_message = "generation_timeout_seconds: 60 to 3600."
  }
}

variable "drain_timeout_seconds" {
  type        = number
  description = "How long a stopping VM lets running work finish (DRAIN_TIMEOUT_SECONDS; also the backend's connection draining)."
  default     = 60

  validation {
    condition     = var.drain_timeout_seconds >= 0 && var.drain_timeout_seconds <= 3600
    error_message = "drain_timeout_seconds: 0 to 3600."
  }
}

variable "backend_timeout_seconds" {
  type        = number
  description = "Load balancer backend timeout: above the longest generation plus queueing and encoding."
  default     = 900

  validation {
    condition     = var.backend_timeout_seconds > var.generation_timeout_seconds && var.backend_timeout_seconds <= 86400
    error_message = "backend_timeout_seconds: more than generation_timeout_seconds (or /predict calls are cut off), at most 86400."
  }
}

# --- Scaling and updates ------------------------------------------------------------------------

variable "min_replicas" {
  type        = number
  description = "Fewest VMs. At least 1: with the load balancer's signal the group cannot scale up from zero."
  default     = 1

  validation {
    condition     = var.min_replicas >= 1
    error_message = "min_replicas: at least 1."
  }
}

variable "max_replicas" {
  type        = number
  description = "Most VMs (check the NVIDIA_L4_GPUS quota of the region)."
  default     = 4

  validation {
    condition     = var.max_replicas >= var.min_replicas && var.max_replicas <= 100
    error_message = "max_replicas: at least min_replicas, at most 100."
  }
}

variable "requests_per_second_per_vm" {
  type        = number
  description = "What one GPU sustains (the backend's max_rate_per_instance): 1 / seconds per video."
  default     = 0.02

  validation {
    condition     = var.requests_per_second_per_vm > 0
    error_message = "requests_per_second_per_vm: positive."
  }
}

variable "autoscaling_target" {
  type        = number
  description = "Fraction of requests_per_second_per_vm at which the autoscaler adds VMs."
  default     = 0.7

  validation {
    condition     = var.autoscaling_target > 0 && var.autoscaling_target <= 1
    error_message = "autoscaling_target: more than 0, at most 1."
  }
}

variable "first_boot_seconds" {
  type        = number
  description = "Time a new VM needs to become healthy (driver, packages, weights, warm-up): autohealing's initial delay and the autoscaler's cool-down."
  default     = 1200

  validation {
    condition     = var.first_boot_seconds >= 300 && var.first_boot_seconds <= 3600
    error_message = "first_boot_seconds: 300 to 3600."
  }
}

variable "update_max_surge" {
  type        = number
  description = "Extra VMs during a rolling replace (needs that much spare L4 quota); 0 replaces in place, else at least the number of zones."
  default     = 0

  validation {
    # Compute Engine refuses a fixed surge between 0 and the zone count for a regional group.
    condition     = var.update_max_surge == 0 || var.update_max_surge >= length(var.zones)
    error_message = "update_max_surge: 0, or at least the number of zones (a regional group's rule)."
  }
}

variable "update_max_unavailable" {
  type        = number
  description = "VMs that may be down during a rolling replace: 0 or at least the number of zones; raised to the number of zones when update_max_surge is 0."
  default     = 0

  validation {
    condition     = var.update_max_unavailable == 0 || var.update_max_unavailable >= length(var.zones)
    error_message = "update_max_unavailable: 0, or at least the number of zones (a regional group's rule)."
  }
}

# --- Load balancer and Cloud Armor -------------------------------------------------------------

variable "domain" {
  type        = string
  description = "Domain for HTTPS with a Google-managed certificate (point its A record at the IP). Empty: plain HTTP only."
  default     = ""

  validation {
    condition     = var.domain == "" || can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.domain))
    error_message = "domain: empty, or a DNS name such as api.example.com."
  }
}

variable "allowed_source_ranges" {
  type        = list(string)
  description = "If not empty, only these client CIDR ranges may call the API."
  default     = []

  validation {
    condition     = alltrue([for r in var.allowed_source_ranges : can(cidrhost(r, 0))])
    error_message = "allowed_source_ranges: CIDR ranges."
  }

  validation {
    # One inIpRange() per range in one advanced expression, which allows at most 5 subexpressions.
    condition     = length(var.allowed_source_ranges) <= 5
    error_message = "allowed_source_ranges: at most 5 ranges (Cloud Armor's limit for one expression)."
  }
}

variable "waf_sensitivity" {
  type        = number
  description = "Sensitivity of the preconfigured WAF rules (1 is the fewest false positives on free-text prompts)."
  default     = 1

  validation {
    condition     = var.waf_sensitivity >= 1 && var.waf_sensitivity <= 4
    error_message = "waf_sensitivity: 1 to 4."
  }
}

variable "waf_preview" {
  type        = bool
  description = "Log WAF matches without blocking (to tune against real prompts first)."
  default     = false
}

variable "rate_limit_per_key_per_minute" {
  type        = number
  description = "Requests per minute per X-API-Key before a ban."
  default     = 120

  validation {
    condition     = var.rate_limit_per_key_per_minute >= 1
    error_message = "rate_limit_per_key_per_minute: at least 1."
  }
}

variable "rate_limit_per_ip_per_minute" {
  type        = number
  description = "Requests per minute per client IP before a ban."
  default     = 300

  validation {
    condition     = var.rate_limit_per_ip_per_minute >= 1
    error_message = "rate_limit_per_ip_per_minute: at least 1."
  }
}

variable "rate_limit_ban_seconds" {
  type        = number
  description = "How long a key or IP over its rate stays banned."
  default     = 300

  validation {
    condition     = var.rate_limit_ban_seconds >= 60 && var.rate_limit_ban_seconds <= 86400
    error_message = "rate_limit_ban_seconds: 60 to 86400."
  }
}

# --- Secrets and storage --------------------------------------------------------------------------

variable "api_key_version" {
  type        = number
  description = "Bump to add a new API key version (rotation; the write-only key is only re-sent when this changes)."
  default     = 1
}

variable "api_key_in_state" {
  type        = bool
  description = "Keep the API key in the Terraform state too, for `terraform output -raw api_key` (off: read it from Secret Manager)."
  default     = false
}

variable "bucket_location" {
  type        = string
  description = "Location of the buckets; empty: the region."
  default     = ""
}

variable "output_retention_days" {
  type        = number
  description = "Days a generated video stays in the output bucket."
  default     = 30

  validation {
    condition     = var.output_retention_days >= 1 && var.output_retention_days <= 3650
    error_message = "output_retention_days: 1 to 3650."
  }
}

variable "force_destroy_buckets" {
  type        = bool
  description = "Let `terraform destroy` delete buckets that still hold objects."
  default     = false
}

# --- Asynchronous jobs ---------------------------------------------------------------------------

variable "jobs_enabled" {
  type        = bool
  description = "Create the Pub/Sub queue and Firestore database and serve the job API (/jobs) on every VM."
  default     = true
}

variable "predict_via_queue" {
  type        = bool
  description = "With jobs: /predict goes through the queue too (any VM may run it; same response)."
  default     = false
}

variable "firestore_location" {
  type        = string
  description = "Location of the jobs' Firestore database; empty: the region."
  default     = ""
}

# --- Deployment mode -----------------------------------------------------------------------------

variable "deployment_mode" {
  type        = string
  description = "all_in_one: every GPU VM serves HTTP and runs jobs. gateway_workers: a small CPU group serves the API and queues all work; GPU VMs only run jobs and scale 0..max_replicas on the queue."
  default     = "all_in_one"

  validation {
    condition     = contains(["all_in_one", "gateway_workers"], var.deployment_mode)
    error_message = "deployment_mode: all_in_one or gateway_workers."
  }

  validation {
    condition     = var.deployment_mode == "all_in_one" || var.jobs_enabled
    error_message = "deployment_mode gateway_workers needs jobs_enabled (the gateway sends all work through the queue)."
  }
}

variable "gateway_machine_type" {
  type        = string
  description = "Machine type of the API gateway VMs (gateway_workers)."
  default     = "e2-standard-2"
}

variable "gateway_image" {
  type        = string
  description = "Boot image of the gateway VMs: any image with Python 3.11+ and gcloud (gateway_workers)."
  default     = "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64"
}

variable "gateway_min_replicas" {
  type        = number
  description = "Fewest gateway VMs (gateway_workers); at least 1, they hold the API up while GPUs are at zero."
  default     = 1

  validation {
    condition     = var.gateway_min_replicas >= 1
    error_message = "gateway_min_replicas: at least 1."
  }
}

variable "gateway_max_replicas" {
  type        = number
  description = "Most gateway VMs (gateway_workers), scaled on CPU."
  default     = 3

  validation {
    condition     = var.gateway_max_replicas >= var.gateway_min_replicas
    error_message = "gateway_max_replicas: at least gateway_min_replicas."
  }
}

# --- Operations ----------------------------------------------------------------------------------

variable "ops_agent_enabled" {
  type        = bool
  description = "Install the Ops Agent on the VMs to scrape the server's Prometheus metrics and ship the journal."
  default     = true
}

variable "monitoring_enabled" {
  type        = bool
  description = "Create the dashboard, alert policies, uptime check and log-based metrics."
  default     = true
}

variable "alert_email" {
  type        = string
  description = "Email address alerts go to; empty: alert policies without a notification channel."
  default     = ""

  validation {
    condition     = var.alert_email == "" || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alert_email))
    error_message = "alert_email: empty or an email address."
  }
}

variable "alert_error_ratio" {
  type        = number
  description = "Alert when failed generations exceed this fraction of all for 15 minutes."
  default     = 0.05

  validation {
    condition     = var.alert_error_ratio > 0 && var.alert_error_ratio < 1
    error_message = "alert_error_ratio: between 0 and 1."
  }
}

variable "alert_latency_sla_seconds" {
  type        = number
  description = "Alert when the p95 generation time exceeds this (seconds) for 15 minutes."
  default     = 300

  validation {
    condition     = var.alert_latency_sla_seconds >= 10 && var.alert_latency_sla_seconds <= 7200
    error_message = "alert_latency_sla_seconds: 10 to 7200."
  }
}

variable "alert_backlog_threshold" {
  type        = number
  description = "Alert when more jobs than this wait in the queue for 10 minutes."
  default     = 20

  validation {
    condition     = var.alert_backlog_threshold >= 1
    error_message = "alert_backlog_threshold: at least 1."
  }
}

variable "alert_restarts_per_hour" {
  type        = number
  description = "Alert when a server process restarts more often than this in an hour (crash loop)."
  default     = 3

  validation {
    condition     = var.alert_restarts_per_hour >= 1
    error_message = "alert_restarts_per_hour: at least 1."
  }
}

variable "startup_log_field" {
  type        = string
  description = "Log entry field holding the startup script's lines (the guest agent writes jsonPayload.message; older agents textPayload)."
  default     = "jsonPayload.message"

  validation {
    condition     = contains(["jsonPayload.message", "textPayload"], var.startup_log_field)
    error_message = "startup_log_field: jsonPayload.message or textPayload."
  }
}
