# Terraform 1.11 for write-only arguments (the API key never enters the state). The google
# provider range is the release whose schema `make test` checks every block against (7.46.x:
# tests/terraform/test_provider_schema.py); widen it together with that check.
terraform {
  required_version = ">= 1.11"

  # Shared state in a GCS bucket, given at init (partial configuration): `make tf-state
  # PROJECT=<id>` creates the bucket and writes backend.hcl; `make deploy` runs
  # `terraform init -backend-config=backend.hcl`. Local state only with TF_STATE=local.
  backend "gcs" {}

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 7.46.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.7, < 4.0" # ephemeral random_password
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
