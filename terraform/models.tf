# The models behind the one load balancer, resolved from var.models or, when that map is empty,
# from the single-model variables (model, model_revision, machine_type, spot, min/max_replicas).
# Each model gets its own instance template, group, autoscaler, health checks, backend service and
# job subscription (compute.tf, loadbalancer.tf, jobs.tf) and is reached at /models/<name>/...
#
# NOTE: this file reads variables only. tests/terraform evaluates it with Terraform's own
# evaluator (`terraform console`, no provider needed) on the example tfvars.
locals {
  # L4s per G2 machine type: what a model's gpu_count must agree with.
  gpus_of_machine_type = {
    "g2-standard-4"  = 1
    "g2-standard-8"  = 1
    "g2-standard-12" = 1
    "g2-standard-16" = 1
    "g2-standard-32" = 1
    "g2-standard-24" = 2
    "g2-standard-48" = 4
    "g2-standard-96" = 8
  }

  single_model = length(var.models) == 0

  # name -> everything a model's resources need. `prefix` starts every resource name: the bare
  # deployment name for the single-model form, so its resources keep the names they had.
  models = local.single_model ? {
    (var.model) = {
      model        = var.model
      revision     = var.model_revision
      machine_type = var.machine_type
      gpu_count    = 1
      min_replicas = var.min_replicas
      max_replicas = var.max_replicas
      spot         = var.spot
      server_env   = {}
      prefix       = var.name
      path         = "/models/${var.model}/"
    }
    } : {
    for name, m in var.models : name => {
      model        = m.model
      revision     = m.revision
      machine_type = m.machine_type
      gpu_count    = m.gpu_count
      min_replicas = m.min_replicas
      max_replicas = m.max_replicas
      spot         = m.spot
      server_env   = m.server_env
      prefix       = "${var.name}-${name}"
      path         = "/models/${name}/"
    }
  }

  # What /predict, /jobs, ... without a /models/<name>/ prefix reach.
  default_model = var.default_model != "" ? var.default_model : sort(keys(local.models))[0]

  # Jobs carry their model's name as the Pub/Sub attribute `model` (the server's MODEL_ALIAS);
  # each model's workers read a subscription filtered on it. The single-model form keeps its
  # unfiltered subscription (a filter is immutable: adding one would recreate it, queue and all).
  job_filters = {
    for name, m in local.models : name => local.single_model ? null : "attributes.model = \"${name}\""
  }
}
