# Terraform 1.11 for write-only arguments (the API key never enters the state); the google
# provider range is the one whose documentation the attributes here were checked against (7.x).
terraform {
  required_version = ">= 1.11"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 7.0, < 8.0"
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
