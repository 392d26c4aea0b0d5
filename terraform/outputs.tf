locals {
  url             = local.https ? "https://${var.domain}" : "http://${google_compute_global_address.lb.address}"
  api_key_command = "gcloud secrets versions access latest --secret=${google_secret_manager_secret.api_keys.secret_id} --project=${var.project_id}"

  model_outputs = {
    for name, m in local.models : name => {
      model                   = m.model
      url                     = "${local.url}${trimsuffix(m.path, "/")}"
      instance_group          = google_compute_region_instance_group_manager.servers[name].name
      rolling_replace_command = "gcloud compute instance-groups managed rolling-action replace ${google_compute_region_instance_group_manager.servers[name].name} --region=${var.region} --project=${var.project_id}"
      ssh_command             = "gcloud compute instance-groups managed list-instances ${google_compute_region_instance_group_manager.servers[name].name} --region=${var.region} --project=${var.project_id} && gcloud compute ssh INSTANCE --zone=ZONE --tunnel-through-iap --project=${var.project_id}"
    }
  }
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

output "region" {
  description = "Region of the instance groups."
  value       = var.region
}

output "default_model" {
  description = "The model that paths without /models/<name>/ reach."
  value       = local.default_model
}

output "models" {
  description = "Per model: its URL behind the load balancer, its GPU instance group, and the commands to replace its VMs and to SSH to one."
  value       = local.model_outputs
}

output "instance_group" {
  description = "The default model's GPU instance group (every model's: output models)."
  value       = local.model_outputs[local.default_model].instance_group
}

output "rolling_replace_command" {
  description = "Replaces every VM of the default model with one from the current template (every model's: output models)."
  value       = local.model_outputs[local.default_model].rolling_replace_command
}

output "ssh_command" {
  description = "Lists the default model's VMs, then SSH to one through IAP, no external IPs (every model's: output models)."
  value       = local.model_outputs[local.default_model].ssh_command
}

output "curl_example" {
  description = "A text-to-video request through the load balancer to the default model (the key from api_key_command; a lip-sync model takes video_in and audio_in instead, see docs/lipsync.md)."
  value       = "curl -sS -X POST ${local.url}/predict -H \"X-API-Key: $(${local.api_key_command})\" -H 'Content-Type: application/json' -d '{\"prompt\": \"a red fox running through snow\", \"height\": 480, \"width\": 704, \"num_frames\": 97}'"
}
