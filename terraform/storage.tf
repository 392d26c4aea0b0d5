# Buckets: the weight cache (also holding the app bundles) and the videos.
# Access to both is audited with Cloud Audit Logs (data access), not legacy usage logs.
resource "google_storage_bucket" "weights" {
  # checkov:skip=CKV_GCP_62: audited with Cloud Audit Logs data access logs; legacy usage logs need a third, unlogged bucket
  name                        = local.weights_bucket
  location                    = var.bucket_location != "" ? var.bucket_location : var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets
  labels                      = local.labels

  versioning {
    enabled = true
  }

  # Old app bundles and replaced weights: noncurrent versions go after 30 days.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "outputs" {
  # checkov:skip=CKV_GCP_62: audited with Cloud Audit Logs data access logs; legacy usage logs need a third, unlogged bucket
  name                        = local.outputs_bucket
  location                    = var.bucket_location != "" ? var.bucket_location : var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets
  labels                      = local.labels

  # Videos are never overwritten (uploads use if_generation_match=0); versioning only keeps
  # deleted ones for a day.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = var.output_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# Uploads (POST /uploads): input files every VM and worker can read, as `upload://` references.
# The server refuses one past UPLOAD_TTL_SECONDS (a day); this rule deletes it the day after.
resource "google_storage_bucket" "uploads" {
  # checkov:skip=CKV_GCP_62: audited with Cloud Audit Logs data access logs; legacy usage logs need a third, unlogged bucket
  name                        = local.uploads_bucket
  location                    = var.bucket_location != "" ? var.bucket_location : var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets
  labels                      = local.labels

  # Uploads are never overwritten (if_generation_match=0); deleted ones are kept a day.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age            = 2
      matches_prefix = ["uploads/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# The app bundle (`make bundle`: serve/, models/, startup/, requirements.txt), named by its
# sha256 so that a code change is a new object, new metadata and so a new instance template.
locals {
  app_bundle_sha256 = filesha256(var.app_bundle_path)
}

resource "google_storage_bucket_object" "app_bundle" {
  name         = "app/${local.app_bundle_sha256}.tar.gz"
  bucket       = google_storage_bucket.weights.name
  source       = var.app_bundle_path
  content_type = "application/gzip"
}
