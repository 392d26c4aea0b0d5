# The API key. By default it is generated ephemerally and written with the write-only argument,
# so it never sits in the Terraform state: read it with `gcloud secrets versions access latest
# --secret=<secret>` (output `api_key_command`). Rotation: bump `api_key_version`: a new version is
# added and the old one stays ENABLED (Terraform forgets it, ABANDON), so clients keep working on
# either key; disable the old version by hand once they moved (docs/deploy.md's runbook).
ephemeral "random_password" "api_key" {
  count   = var.api_key_in_state ? 0 : 1
  length  = 48
  special = false
}

# Opt-in: the key in the state, for `terraform output -raw api_key`.
resource "random_password" "api_key" {
  count   = var.api_key_in_state ? 1 : 0
  length  = 48
  special = false
}

resource "google_secret_manager_secret" "api_keys" {
  secret_id = "${local.name}-api-keys"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "api_key" {
  secret                 = google_secret_manager_secret.api_keys.id
  secret_data            = var.api_key_in_state ? random_password.api_key[0].result : null
  secret_data_wo         = var.api_key_in_state ? null : ephemeral.random_password.api_key[0].result
  secret_data_wo_version = var.api_key_in_state ? null : var.api_key_version
  # NOTE: a new key replaces this resource (write-only data is ForceNew); the default DELETE would
  # destroy the key clients use before they have the new one.
  deletion_policy = "ABANDON"
}
