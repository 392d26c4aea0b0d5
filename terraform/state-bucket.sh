#!/usr/bin/env bash
# Creates (or brings into line) the bucket that holds this deployment's Terraform state, so a team
# shares one state with locking: versioned, uniform bucket-level access, public access prevented,
# and a lifecycle that deletes a state file's old versions once KEEP newer ones exist. Then writes
# backend.hcl beside this script for `terraform init -backend-config=backend.hcl`.
#
# Usage: terraform/state-bucket.sh PROJECT [BUCKET] [LOCATION]
#   BUCKET defaults to PROJECT-videogen-tfstate, LOCATION to US (multi-region).
#   TF_STATE_PREFIX (default videogen) is the folder of the state in the bucket; KEEP (default 10)
#   the versions of each state file kept, the live one included.
set -euo pipefail

project="${1:?usage: state-bucket.sh PROJECT [BUCKET] [LOCATION]}"
bucket="${2:-${project}-videogen-tfstate}"
location="${3:-US}"
prefix="${TF_STATE_PREFIX:-videogen}"
keep="${KEEP:-10}"
here="$(cd "$(dirname "$0")" && pwd)"

if ! [[ "$keep" =~ ^[1-9][0-9]*$ ]]; then
  echo "KEEP must be a positive whole number, not '$keep'" >&2
  exit 2
fi

lifecycle="$(mktemp)"
trap 'rm -f "$lifecycle"' EXIT
# A noncurrent version goes once `keep` versions newer than it exist (the live one counts).
printf '{"rule": [{"action": {"type": "Delete"}, "condition": {"isLive": false, "numNewerVersions": %d}}]}\n' \
  "$keep" >"$lifecycle"

if gcloud storage buckets describe "gs://$bucket" --project="$project" --format="value(name)" >/dev/null 2>&1; then
  echo "gs://$bucket exists; setting its versioning, access and lifecycle"
else
  gcloud storage buckets create "gs://$bucket" --project="$project" --location="$location" \
    --uniform-bucket-level-access --public-access-prevention --lifecycle-file="$lifecycle"
fi
# Versioning cannot be set at creation; the rest again so an existing bucket is brought into line.
gcloud storage buckets update "gs://$bucket" --project="$project" --versioning \
  --uniform-bucket-level-access --public-access-prevention --lifecycle-file="$lifecycle"

printf 'bucket = "%s"\nprefix = "%s"\n' "$bucket" "$prefix" >"$here/backend.hcl"
echo "wrote $here/backend.hcl (bucket gs://$bucket, prefix $prefix)"
echo "next: terraform -chdir=terraform init -backend-config=backend.hcl   (make deploy does it)"
