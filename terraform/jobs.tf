# Asynchronous jobs (var.jobs_enabled): one Pub/Sub topic, one workers' subscription per model
# (filtered on the job's `model` attribute when there are several), a dead-letter topic, a
# Firestore (native) database for the job records, and the IAM for them. Every GPU VM runs a
# worker of its model; every server answers GET /jobs/{id} for any job (one shared store).
locals {
  jobs            = var.jobs_enabled ? 1 : 0
  jobs_collection = "jobs"
  jobs_server_env = {
    for name in keys(local.models) : name => var.jobs_enabled ? {
      JOBS_ENABLED             = "true"
      JOBS_PROJECT             = var.project_id
      FIRESTORE_DATABASE       = google_firestore_database.jobs[0].name
      PUBSUB_TOPIC             = google_pubsub_topic.jobs[0].name
      PUBSUB_SUBSCRIPTION      = google_pubsub_subscription.workers[name].name
      PUBSUB_DEAD_LETTER_TOPIC = google_pubsub_topic.dead_letter[0].name
      JOB_MAX_ATTEMPTS         = "3"
      PREDICT_VIA_QUEUE        = tostring(var.predict_via_queue)
    } : {}
  }
  # Each model's workers' subscription, when jobs are on.
  job_models   = var.jobs_enabled ? local.models : {}
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

data "google_project" "this" {
  project_id = var.project_id

  # Read after the APIs are on (at apply on a fresh project), not at the first plan.
  depends_on = [google_project_service.apis]
}

resource "google_project_service" "jobs_apis" {
  for_each           = var.jobs_enabled ? toset(["pubsub.googleapis.com", "firestore.googleapis.com"]) : toset([])
  service            = each.value
  disable_on_destroy = false
}

resource "google_pubsub_topic" "jobs" {
  # checkov:skip=CKV_GCP_83: messages carry only job ids (no prompts or user data); Google-managed encryption, no KMS dependency
  count  = local.jobs
  name   = "${local.name}-jobs"
  labels = local.labels

  depends_on = [google_project_service.jobs_apis]
}

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83: messages carry only job ids (no prompts or user data); Google-managed encryption, no KMS dependency
  count  = local.jobs
  name   = "${local.name}-jobs-dead-letter"
  labels = local.labels

  depends_on = [google_project_service.jobs_apis]
}

resource "google_pubsub_subscription" "workers" {
  for_each                   = local.job_models
  name                       = "${each.value.prefix}-jobs-worker"
  topic                      = google_pubsub_topic.jobs[0].id
  filter                     = local.job_filters[each.key] # messages no filter matches are acknowledged by Pub/Sub
  ack_deadline_seconds       = 60                          # the worker extends it every JOB_HEARTBEAT_SECONDS while a job runs
  message_retention_duration = "604800s"
  labels                     = local.labels

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  # The workers dead-letter a job themselves after JOB_MAX_ATTEMPTS (3); Pub/Sub's own policy
  # (5 deliveries at the least) is the backstop for messages no worker can even claim.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[0].id
    max_delivery_attempts = 5
  }

  expiration_policy {
    ttl = "" # never expires
  }
}

# Somewhere to read what was dead-lettered (an alert watches its backlog).
resource "google_pubsub_subscription" "dead_letter" {
  count                      = local.jobs
  name                       = "${local.name}-jobs-dead-letter"
  topic                      = google_pubsub_topic.dead_letter[0].id
  message_retention_duration = "604800s"
  labels                     = local.labels

  expiration_policy {
    ttl = ""
  }
}

resource "google_firestore_database" "jobs" {
  count                   = local.jobs
  name                    = "${local.name}-jobs"
  location_id             = var.firestore_location != "" ? var.firestore_location : var.region
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = "DELETE_PROTECTION_DISABLED"
  deletion_policy         = "DELETE"

  depends_on = [google_project_service.jobs_apis]
}

# queue_position counts queued jobs created earlier.
resource "google_firestore_index" "queued_by_creation" {
  count      = local.jobs
  database   = google_firestore_database.jobs[0].name
  collection = local.jobs_collection

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }

  fields {
    field_path = "created_at"
    order      = "ASCENDING"
  }
}

# Job documents expire at expire_at (JOB_TTL_DAYS after creation).
resource "google_firestore_field" "job_ttl" {
  count      = local.jobs
  database   = google_firestore_database.jobs[0].name
  collection = local.jobs_collection
  field      = "expire_at"

  ttl_config {}
}

# The VMs publish jobs (and dead letters) and pull the workers' subscription.
resource "google_pubsub_topic_iam_member" "server_publishes_jobs" {
  count  = local.jobs
  topic  = google_pubsub_topic.jobs[0].id
  role   = "roles/pubsub.publisher"
  member = local.server_member
}

resource "google_pubsub_topic_iam_member" "server_publishes_dead_letters" {
  count  = local.jobs
  topic  = google_pubsub_topic.dead_letter[0].id
  role   = "roles/pubsub.publisher"
  member = local.server_member
}

resource "google_pubsub_subscription_iam_member" "server_pulls_jobs" {
  for_each     = local.job_models
  subscription = google_pubsub_subscription.workers[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = local.server_member
}

# Firestore has no per-database role binding without IAM conditions; this one is limited to
# the jobs database by a condition on the resource name.
resource "google_project_iam_member" "server_firestore" {
  count   = local.jobs
  project = var.project_id
  role    = "roles/datastore.user"
  member  = local.server_member

  condition {
    title = "jobs database only"
    # The database itself or what is under it: a bare startsWith would also match another
    # database whose name begins the same (videogen-jobs-staging).
    expression = "resource.name == \"projects/${var.project_id}/databases/${google_firestore_database.jobs[0].name}\" || resource.name.startsWith(\"projects/${var.project_id}/databases/${google_firestore_database.jobs[0].name}/\")"
  }
}

# Pub/Sub's own dead-lettering needs its service agent on both ends.
resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  count  = local.jobs
  topic  = google_pubsub_topic.dead_letter[0].id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "agent_acks_dead_letters" {
  for_each     = local.job_models
  subscription = google_pubsub_subscription.workers[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}
