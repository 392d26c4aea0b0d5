locals {
  url             = local.https ? "https://${var.domain}" : "http://${google_compute_global_address.lb.address}"
  api_key_command = "gcloud secrets versions access latest --secret=${google_secret_manager_secret.api_keys.secret_id} --project=${var.project_id}"
}

output "load_balancer_ip" {
  description = "The load balancer's static IP (point the domain's A record here when using HTTPS)."
  value       = google_compute_global_address.lb.address
}

output "url" {
  description = "Base URL of the API. Without a domain this is PLAIN HTTP: keys and prompts cross the internet unencrypted."
  value       = local.url
}

output "transport_warning" {
  description = "Says loudly when the API is served over plain HTTP."
  value       = local.https ? "HTTPS with a Google-managed certificate (it becomes ACTIVE some minutes after DNS points at the IP)." : "WARNING: no domain set, the API is PLAIN HTTP. Set var.domain for HTTPS."
}

output "api_key" {
  description = "The API key, only when api_key_in_state = true (otherwise null: use api_key_command)."
  value       = var.api_key_in_state ? random_password.api_key[0].result : null
  sensitive   = true
}

output "api_key_secret" {
  description = "Secret Manager secret holding the API keys (every ENABLED version is accepted)."
  value       = google_secret_manager_secret.api_keys.id
}

output "api_key_command" {
  description = "Prints the current API key."
  value       = local.api_key_command
}

output "weights_bucket" {
  description = "Weight cache bucket (python -m serve.cli.weights push --bucket ...); also holds the app bundles."
  value       = google_storage_bucket.weights.name
}

output "outputs_bucket" {
  description = "Bucket the videos are written to."
  value       = google_storage_bucket.outputs.name
}

output "instance_group" {
  description = "Name of the regional managed instance group."
  value       = google_compute_region_instance_group_manager.servers.name
}

output "region" {
  description = "Region of the instance group."
  value       = var.region
}

output "rolling_replace_command" {
  description = "Replaces every VM with one from the current template (after a code or model change and terraform apply)."
  value       = "gcloud compute instance-groups managed rolling-action replace ${google_compute_region_instance_group_manager.servers.name} --region=${var.region} --project=${var.project_id}"
}

output "ssh_command" {
  description = "Lists the VMs, then SSH to one through IAP (no external IPs)."
  value       = "gcloud compute instance-groups managed list-instances ${google_compute_region_instance_group_manager.servers.name} --region=${var.region} --project=${var.project_id} && gcloud compute ssh INSTANCE --zone=ZONE --tunnel-through-iap --project=${var.project_id}"
}

output "curl_example" {
  description = "A request through the load balancer (the key from api_key_command)."
  value       = "curl -sS -X POST ${local.url}/predict -H \"X-API-Key: $(${local.api_key_command})\" -H 'Content-Type: application/json' -d '{\"prompt\": \"a red fox running through snow\", \"height\": 480, \"width\": 704, \"num_frames\": 97}'"
}
