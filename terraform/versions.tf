# Terraform 1.11 for write-only arguments (the API key never enters the state). The google
# provider range is the release whose schema `make test` checks every block against (7.46.x:
# tests/terraform/test_provider_schema.py); widen it together with that check.
terraform {
  required_version = ">= 1.11"

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
