# The VMs' own service account, with only what the server and the startup script use.
resource "google_service_account" "server" {
  account_id   = "${local.name}-server"
  display_name = "videogen inference server VMs"
  depends_on   = [google_project_service.apis]
}

locals {
  server_member = "serviceAccount:${google_service_account.server.email}"
}

# Weights and the app bundle: read only.
resource "google_storage_bucket_iam_member" "weights_reader" {
  bucket = google_storage_bucket.weights.name
  role   = "roles/storage.objectViewer"
  member = local.server_member
}

# Videos: create and read; never overwrite or delete (uploads use if_generation_match=0).
resource "google_storage_bucket_iam_member" "outputs_creator" {
  bucket = google_storage_bucket.outputs.name
  role   = "roles/storage.objectCreator"
  member = local.server_member
}

resource "google_storage_bucket_iam_member" "outputs_reader" {
  bucket = google_storage_bucket.outputs.name
  role   = "roles/storage.objectViewer"
  member = local.server_member
}

# Uploads: create (never overwrite) and read.
resource "google_storage_bucket_iam_member" "uploads_creator" {
  bucket = google_storage_bucket.uploads.name
  role   = "roles/storage.objectCreator"
  member = local.server_member
}

resource "google_storage_bucket_iam_member" "uploads_reader" {
  bucket = google_storage_bucket.uploads.name
  role   = "roles/storage.objectViewer"
  member = local.server_member
}

# Lip-sync inputs (`video_in` / `audio_in` as gs://): read only, on the buckets named.
resource "google_storage_bucket_iam_member" "inputs_reader" {
  for_each = toset(var.input_buckets)
  bucket   = each.value
  role     = "roles/storage.objectViewer"
  member   = local.server_member
}

# The API keys: on the one secret, not on the project.
resource "google_secret_manager_secret_iam_member" "api_keys_accessor" {
  secret_id = google_secret_manager_secret.api_keys.id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.server_member
}

# Listing the secret's versions (rotation: every ENABLED version is a valid key).
resource "google_secret_manager_secret_iam_member" "api_keys_viewer" {
  secret_id = google_secret_manager_secret.api_keys.id
  role      = "roles/secretmanager.viewer"
  member    = local.server_member
}

resource "google_project_iam_member" "log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = local.server_member
}

resource "google_project_iam_member" "metric_writer" {
  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = local.server_member
}

# Signed URLs for videos: the VM signs with its own account through signBlob.
resource "google_service_account_iam_member" "self_token_creator" {
  service_account_id = google_service_account.server.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.server_member
}
