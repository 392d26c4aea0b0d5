#!/usr/bin/env bash
# Compute Engine startup-script: turn a GPU VM into a healthy inference server.
#
# Stages: read the instance metadata (config), check the GPU, install the app bundle into a virtual
# environment, pull the model weights from the GCS weight cache, write the server's settings and
# systemd unit, start it, wait for /health. Each stage logs one line,
#   startup stage=NAME result=RESULT seconds=S [details]
# and a re-run skips what is done and still valid (same bundle hash, verified weights). Any
# failure logs `result=failed error="..."`, exits 1 and starts nothing. docs/deploy.md's boot
# section lists the metadata attributes.
set -euo pipefail
export LC_ALL=C

readonly METADATA_BASE_URL="${METADATA_BASE_URL:-http://metadata.google.internal/computeMetadata/v1}"
readonly STATE_DIR="${STARTUP_STATE_DIR:-/var/lib/videogen}"
readonly RUN_MODE="${STARTUP_RUN_MODE:-systemd}" # `direct` runs the server without systemd (tests)
readonly UNIT_DIR="${STARTUP_UNIT_DIR:-/etc/systemd/system}"
readonly BASE_PYTHON="${STARTUP_PYTHON:-python3}"
readonly HEALTH_TIMEOUT="${STARTUP_HEALTH_TIMEOUT:-1200}"
# Models built in code (ltx-video-tiny, latentsync-tiny): nothing to pull.
readonly BUILT_IN_SUFFIX=-tiny
readonly UNIT=videogen.service
readonly SERVICE_USER=videogen

STAGE=config
RESULT=ok
DETAIL=""
SERVER_PID=""

log() { printf 'startup %s\n' "$*"; }
fail() {
  log "stage=${STAGE} result=failed error=\"${*//\"/\'}\"" >&2
  exit 1
}
seconds_since() { awk -v a="$1" -v b="${EPOCHREALTIME}" 'BEGIN { printf "%.1f", b - a }'; }
# True when process $1 exists and is not a zombie (a stopped server may linger as one).
alive() {
  local state
  state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d ' ' -f 1)"
  [[ -n "${state}" && "${state}" != Z ]]
}
last_line() { tail -n 1 <<<"$1" | sed 's/^error: //'; }

# Runs stage function $1 and logs its line with its duration.
stage() {
  local started="${EPOCHREALTIME}"
  STAGE="$1" RESULT=ok DETAIL=""
  "$1"
  log "stage=$1 result=${RESULT} seconds=$(seconds_since "${started}")${DETAIL:+ ${DETAIL}}"
}

# Prints metadata value $1 (a path under the base URL), or $2 when the instance has none.
metadata() {
  local body code
  body="$(mktemp)"
  code="$(curl -sS -o "${body}" -w '%{http_code}' --max-time 5 --retry 5 --retry-connrefused \
    -H 'Metadata-Flavor: Google' "${METADATA_BASE_URL}/$1" 2>/dev/null)" || code="${code:-000}"
  case "${code}" in
    200) cat "${body}" ;;
    404) printf '%s' "${2-}" ;;
    *) rm -f "${body}"; fail "metadata server answered ${code} for $1" ;;
  esac
  rm -f "${body}"
}

require() { [[ -n "$2" ]] || fail "metadata attribute $1 is missing or empty"; }
require_name() {
  [[ "$2" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ && "$2" != *..* ]] \
    || fail "metadata attribute $1=$2: letters, digits, '.', '_' and '-' only"
}

config() {
  ROLE="$(metadata instance/attributes/role all)"
  MODEL="$(metadata instance/attributes/model)"
  REVISION="$(metadata instance/attributes/model-revision)"
  WEIGHTS_BUCKET="$(metadata instance/attributes/weights-bucket)"
  BUNDLE_URL="$(metadata instance/attributes/app-bundle)"
  BUNDLE_SHA256="$(metadata instance/attributes/app-bundle-sha256)"
  DEVICE="$(metadata instance/attributes/device auto)"
  PORT="$(metadata instance/attributes/port 8080)"
  OUTPUT_BUCKET="$(metadata instance/attributes/output-bucket)"
  KEY_SECRET="$(metadata instance/attributes/api-key-secret)"
  SERVER_ENV="$(metadata instance/attributes/server-env)"
  OPS_AGENT="$(metadata instance/attributes/ops-agent true)"
  WHEELHOUSE="$(metadata instance/attributes/wheelhouse)"
  PYPI_FALLBACK="$(metadata instance/attributes/pypi-fallback false)"
  PROJECT="$(metadata project/project-id)"
  require model "${MODEL}"
  require_name model "${MODEL}"
  [[ "${ROLE}" == all || "${ROLE}" == api ]] || fail "metadata attribute role=${ROLE}: all or api"
  if [[ "${MODEL}" != *"${BUILT_IN_SUFFIX}" && "${ROLE}" == all ]]; then
    require model-revision "${REVISION}"
    require_name model-revision "${REVISION}"
    require weights-bucket "${WEIGHTS_BUCKET}"
  fi
  require app-bundle "${BUNDLE_URL}"
  [[ "${BUNDLE_URL}" == gs://* ]] || fail "metadata attribute app-bundle=${BUNDLE_URL} is not a gs:// URL"
  [[ -z "${WHEELHOUSE}" || "${WHEELHOUSE}" == gs://* ]] \
    || fail "metadata attribute wheelhouse=${WHEELHOUSE} is not a gs:// URL"
  [[ "${PYPI_FALLBACK}" == true || "${PYPI_FALLBACK}" == false ]] \
    || fail "metadata attribute pypi-fallback=${PYPI_FALLBACK}: true or false"
  [[ "${BUNDLE_SHA256}" =~ ^[0-9a-f]{64}$ ]] \
    || fail "metadata attribute app-bundle-sha256 is not a sha256 in hex: '${BUNDLE_SHA256}'"
  DETAIL="role=${ROLE} model=${MODEL} revision=${REVISION:-none} bundle=${BUNDLE_SHA256:0:12} mode=${RUN_MODE}"
}

gpu() {
  if [[ "${DEVICE}" == cpu || "${ROLE}" == api ]]; then
    RESULT=skipped DETAIL="device=${DEVICE} role=${ROLE}"
    return
  fi
  command -v nvidia-smi >/dev/null \
    || fail "nvidia-smi not found: the NVIDIA driver is missing. Use a Deep Learning VM image with metadata install-nvidia-driver=True, or set device=cpu"
  local gpus
  gpus="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)" \
    || fail "nvidia-smi failed, the driver is not working: ${gpus//$'\n'/ }"
  DRIVER="$(printf '%s' "${gpus}" | head -n 1 | awk -F', ' '{print $NF}')"
  DETAIL="gpu=\"${gpus//$'\n'/; }\""
}

# The installed torch really computes on the GPU: a build made for a newer CUDA than the driver
# supports imports fine but finds no GPU, and the server would never turn healthy.
cuda() {
  if [[ "${DEVICE}" == cpu || "${ROLE}" == api ]]; then
    RESULT=skipped DETAIL="device=${DEVICE} role=${ROLE}"
    return
  fi
  local output
  output="$("${PY}" - 2>&1 <<'PY'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} (built for CUDA {torch.version.cuda or 'none'}) finds no usable GPU")
a = torch.ones(256, 256, device="cuda")
assert float((a @ a)[0, 0]) == 256.0, "a 256x256 matmul on the GPU gave a wrong result"
print(f"torch={torch.__version__} cuda={torch.version.cuda} device=\"{torch.cuda.get_device_name(0)}\"")
PY
)" || fail "$(last_line "${output}") with NVIDIA driver ${DRIVER:-unknown}: install a torch build for a CUDA the driver supports (nvidia-smi shows the highest), or use an image whose driver supports this build"
  DETAIL="${output}"
}

fetch_bundle() {
  local archive="${STATE_DIR}/downloads/app-${BUNDLE_SHA256}" output actual
  mkdir -p "${STATE_DIR}/downloads"
  output="$(gcloud storage cp "${BUNDLE_URL}" "${archive}" 2>&1)" \
    || fail "cannot download app-bundle ${BUNDLE_URL}: $(last_line "${output}")"
  actual="$(sha256sum "${archive}" | cut -d ' ' -f 1)"
  if [[ "${actual}" != "${BUNDLE_SHA256}" ]]; then
    rm -f "${archive}"
    fail "app bundle ${BUNDLE_URL} has sha256 ${actual} but metadata app-bundle-sha256 is ${BUNDLE_SHA256}"
  fi
  BUNDLE_BYTES="$(stat -c %s "${archive}")"
  rm -rf "${APP_DIR}.partial"
  mkdir -p "${APP_DIR}.partial"
  if [[ "${BUNDLE_URL}" == *.zip ]]; then
    "${BASE_PYTHON}" -m zipfile -e "${archive}" "${APP_DIR}.partial"
  else
    tar -xzf "${archive}" -C "${APP_DIR}.partial" --no-same-owner
  fi
  [[ -f "${APP_DIR}.partial/requirements.txt" ]] || fail "app bundle ${BUNDLE_URL} has no requirements.txt"
  rm -f "${archive}"
  touch "${APP_DIR}.partial/.installed"
  rm -rf "${APP_DIR}"
  mv "${APP_DIR}.partial" "${APP_DIR}"
}

# sha256 of the requirement files in a fixed order, 16 hex: the key of the environment and the
# wheelhouse's name (serve/cli/wheelhouse.py computes the same).
requirements_hash() {
  local name files=()
  for name in requirements.txt requirements-nodeps.txt; do
    [[ -f "${APP_DIR}/${name}" ]] && files+=("${APP_DIR}/${name}")
  done
  cat "${files[@]}" | sha256sum | cut -c 1-16
}

make_venv() {
  "${BASE_PYTHON}" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || fail "$("${BASE_PYTHON}" -V 2>&1) is too old: the server needs Python 3.11 or newer"
  rm -rf "${VENV}"
  if ! "${BASE_PYTHON}" -m venv "${VENV}" >/dev/null 2>&1; then
    # Debian and Ubuntu ship venv support separately.
    rm -rf "${VENV}"
    { apt-get update -qq && apt-get install -y -qq python3-venv; } >/dev/null 2>&1 \
      || fail "cannot create a virtual environment and apt-get install python3-venv failed"
    "${BASE_PYTHON}" -m venv "${VENV}" || fail "cannot create a virtual environment with ${BASE_PYTHON}"
  fi
  local wheels="" url="${WHEELHOUSE%/}/${REQ_HASH}.tar" why=""
  if [[ -z "${WHEELHOUSE}" ]]; then
    why="no wheelhouse attribute"
  elif fetch_wheelhouse "${url}"; then
    wheels="${STATE_DIR}/wheelhouse/${REQ_HASH}"
  fi
  if [[ -n "${wheels}" ]]; then
    SOURCE=wheelhouse
    pip_install --no-index --find-links "${wheels}"
    rm -rf "${wheels}"
  elif [[ "${PYPI_FALLBACK}" == true ]]; then
    SOURCE=pypi
    log "stage=${STAGE} installing from the package index (${why}; pypi-fallback=true)"
    pip_install
  else
    fail "${why}: push the wheelhouse for these requirements (make wheelhouse-push BUCKET=<weights bucket>) or set metadata pypi-fallback=true to install from PyPI"
  fi
  touch "${VENV}/.complete"
}

# The requirements' wheels for this environment, downloaded and unpacked; `why` says what failed.
fetch_wheelhouse() {
  local archive="${STATE_DIR}/downloads/wheelhouse-${REQ_HASH}.tar" output
  mkdir -p "${STATE_DIR}/downloads"
  if ! output="$(gcloud storage cp "$1" "${archive}" 2>&1)"; then
    why="no wheelhouse at $1 ($(last_line "${output}"))"
    return 1
  fi
  rm -rf "${STATE_DIR}/wheelhouse/${REQ_HASH}"
  mkdir -p "${STATE_DIR}/wheelhouse/${REQ_HASH}"
  if ! tar -xf "${archive}" -C "${STATE_DIR}/wheelhouse/${REQ_HASH}" --no-same-owner; then
    rm -f "${archive}"
    why="wheelhouse $1 is not a readable tar"
    return 1
  fi
  rm -f "${archive}"
}

# pip install of the requirements (and, without dependencies, requirements-nodeps.txt); $@: where from.
pip_install() {
  "${VENV}/bin/pip" install --quiet --disable-pip-version-check "$@" -r "${APP_DIR}/requirements.txt" \
    >"${STATE_DIR}/logs/pip.log" 2>&1 || fail "pip install failed: $(tail -n 1 "${STATE_DIR}/logs/pip.log")"
  if [[ -f "${APP_DIR}/requirements-nodeps.txt" ]]; then
    "${VENV}/bin/pip" install --quiet --disable-pip-version-check "$@" --no-deps -r "${APP_DIR}/requirements-nodeps.txt" \
      >>"${STATE_DIR}/logs/pip.log" 2>&1 || fail "pip install failed: $(tail -n 1 "${STATE_DIR}/logs/pip.log")"
  fi
}

install_app() {
  local venv=reused
  APP_DIR="${STATE_DIR}/app/${BUNDLE_SHA256}"
  BUNDLE_BYTES=0
  RESULT=cached
  if [[ ! -f "${APP_DIR}/.installed" ]]; then
    fetch_bundle
    RESULT=installed
  fi
  # The environment is keyed by the requirements (as serve/cli/wheelhouse.py names the
  # wheelhouse), so a code-only change reuses it.
  REQ_HASH="$(requirements_hash)"
  VENV="${STATE_DIR}/venvs/${REQ_HASH}"
  SOURCE=none
  if [[ ! -f "${VENV}/.complete" ]]; then
    make_venv
    RESULT=installed venv=created
  fi
  PY="${VENV}/bin/python"
  ln -sfn "${APP_DIR}" "${STATE_DIR}/current"
  cd "${APP_DIR}"
  DETAIL="bundle_bytes=${BUNDLE_BYTES} venv=${venv} source=${SOURCE} venv_bytes=$(du -sb "${VENV}" | cut -f 1)"
}

pull_weights() {
  WEIGHTS_DIR=""
  if [[ "${MODEL}" == *"${BUILT_IN_SUFFIX}" || "${ROLE}" == api ]]; then
    RESULT=skipped DETAIL="reason=$([[ "${ROLE}" == api ]] && echo api_role || echo built_in_model)"
    return
  fi
  WEIGHTS_DIR="${STATE_DIR}/weights/${MODEL}/${REVISION}"
  if "${PY}" -m serve.cli.weights verify --dir "${WEIGHTS_DIR}" >/dev/null 2>&1; then
    RESULT=cached
  else
    local output
    output="$("${PY}" -m serve.cli.weights pull --bucket "${WEIGHTS_BUCKET}" --model "${MODEL}" \
      --revision "${REVISION}" --dir "${WEIGHTS_DIR}" 2>&1)" || fail "$(last_line "${output}")"
    # Other revisions of this model are not needed any more; disks are finite.
    find "${STATE_DIR}/weights/${MODEL}" -mindepth 1 -maxdepth 1 ! -name "${REVISION}" -exec rm -rf {} +
  fi
  DETAIL="bytes=$(du -sb "${WEIGHTS_DIR}" | cut -f 1) source=gs://${WEIGHTS_BUCKET}/${MODEL}/${REVISION}/"
}

configure() {
  local user="" output
  if [[ "${RUN_MODE}" == systemd ]]; then
    id -u "${SERVICE_USER}" >/dev/null 2>&1 || useradd --system --user-group --create-home \
      --home-dir "${STATE_DIR}/home" --shell /usr/sbin/nologin "${SERVICE_USER}"
    user="${SERVICE_USER}"
  fi
  output="$("${PY}" -m serve.cli.boot configure --state-dir "${STATE_DIR}" --app-dir "${APP_DIR}" --python "${PY}" \
    --model "${MODEL}" --model-revision "${REVISION}" ${WEIGHTS_DIR:+--weights-dir "${WEIGHTS_DIR}"} \
    --port "${PORT}" --device "${DEVICE}" --output-bucket "${OUTPUT_BUCKET}" --api-key-secret "${KEY_SECRET}" \
    --project "${PROJECT}" --role "${ROLE}" --server-env "${SERVER_ENV}" --user "${user}" 2>&1)" || fail "$(last_line "${output}")"
  RESULT="$(last_line "${output}")"
  # The settings may move the port (server-env); the health check follows them.
  PORT="$(sed -n 's/^PORT="\(.*\)"$/\1/p' "${STATE_DIR}/server.env")"
  mkdir -p "${STATE_DIR}/outputs" "${STATE_DIR}/compile-cache"
  [[ -z "${user}" ]] || chown "${user}:${user}" "${STATE_DIR}/outputs" "${STATE_DIR}/compile-cache"
}

# The Ops Agent scrapes the metrics port into Cloud Monitoring and ships the journal.
ops_agent() {
  if [[ "${RUN_MODE}" != systemd || "${OPS_AGENT}" != true ]]; then
    RESULT=skipped DETAIL="mode=${RUN_MODE} ops-agent=${OPS_AGENT}"
    return
  fi
  local config=/etc/google-cloud-ops-agent/config.yaml wanted
  if ! systemctl list-unit-files google-cloud-ops-agent.service >/dev/null 2>&1; then
    {
      curl -sSfo /tmp/add-ops-agent-repo.sh https://dl.google.com/cloudagents/add-google-cloud-ops-agent-repo.sh \
        && bash /tmp/add-ops-agent-repo.sh --also-install >/dev/null 2>&1
    } || fail "could not install the Ops Agent (set metadata ops-agent=false to boot without it)"
    RESULT=installed
  fi
  wanted="$("${PY}" -m serve.cli.boot ops-agent-config --env-file "${STATE_DIR}/server.env")"
  if [[ ! -f "${config}" ]] || [[ "$(cat "${config}")" != "${wanted}" ]]; then
    printf '%s\n' "${wanted}" >"${config}"
    systemctl restart google-cloud-ops-agent
    DETAIL="config=changed"
  fi
}

start() {
  if [[ "${RUN_MODE}" == systemd ]]; then
    install -m 0644 "${STATE_DIR}/${UNIT}" "${UNIT_DIR}/${UNIT}"
    systemctl daemon-reload
    if [[ "${CONFIG_CHANGED}" == unchanged ]] && systemctl is-active --quiet "${UNIT}"; then
      RESULT=running
    else
      systemctl restart "${UNIT}"
      RESULT=started
    fi
    return
  fi
  local pid_file="${STATE_DIR}/server.pid" old=""
  [[ -f "${pid_file}" ]] && old="$(cat "${pid_file}")"
  if [[ -n "${old}" ]] && alive "${old}"; then
    if [[ "${CONFIG_CHANGED}" == unchanged ]]; then
      RESULT=running SERVER_PID="${old}"
      return
    fi
    kill -TERM "${old}"
    while alive "${old}"; do sleep 0.2; done
  fi
  nohup "${PY}" -m serve.cli.boot run --env-file "${STATE_DIR}/server.env" \
    </dev/null >>"${STATE_DIR}/logs/server.log" 2>&1 9>&- &
  SERVER_PID="$!"
  echo "${SERVER_PID}" >"${pid_file}"
  RESULT=started DETAIL="pid=${SERVER_PID}"
}

healthy() {
  local output
  output="$("${PY}" -m serve.cli.boot wait --url "http://127.0.0.1:${PORT}/health" --timeout "${HEALTH_TIMEOUT}" \
    ${SERVER_PID:+--pid "${SERVER_PID}"} 2>&1)" || {
    [[ "${RUN_MODE}" == systemd ]] || tail -n 20 "${STATE_DIR}/logs/server.log" >&2
    fail "$(last_line "${output}"); see: sudo journalctl -u ${UNIT}"
  }
  DETAIL="port=${PORT}"
}

main() {
  local started="${EPOCHREALTIME}"
  mkdir -p "${STATE_DIR}/logs"
  exec 9>"${STATE_DIR}/.startup.lock"
  flock -w 3600 9 || fail "another startup run holds ${STATE_DIR}/.startup.lock"
  stage config
  stage gpu
  stage install_app
  stage cuda
  stage pull_weights
  stage configure
  CONFIG_CHANGED="${RESULT}"
  stage ops_agent
  stage start
  stage healthy
  log "stage=total result=healthy seconds=$(seconds_since "${started}") model=${MODEL} revision=${REVISION:-none}"
}

main "$@"
