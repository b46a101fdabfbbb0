#!/bin/bash
# Start the pinned IB Gateway container (gnzsnz/ib-gateway: IB Gateway + IBC) on Container-Optimized OS.
#
# Run at every boot by ib-gateway.service (see the VM's cloud-init). Settings come from the instance
# metadata that `python -m deploy apply` sets; the IB user name and password come from Secret
# Manager with the VM service account's token. Neither credential nor the token is ever put on a
# command line, in a process environment or in a log: they travel through pipes and files in /run
# (memory only) that only root and the container user can read.
#
# METADATA_URL, SECRETMANAGER_URL, RUN_DIR, DOCKER, IPTABLES and GATEWAY_UID exist for tests.
set -euo pipefail

metadata_url=${METADATA_URL:-http://metadata.google.internal/computeMetadata/v1}
secretmanager_url=${SECRETMANAGER_URL:-https://secretmanager.googleapis.com/v1}
run_dir=${RUN_DIR:-/run/ib-gateway}
docker=${DOCKER:-docker}
iptables=${IPTABLES:-iptables}
gateway_uid=${GATEWAY_UID:-1000}   # the user the gnzsnz/ib-gateway image runs as

log() { echo "ib-gateway: $*" >&2; }

metadata() {
  curl -fsS --retry 5 --retry-connrefused -H 'Metadata-Flavor: Google' "$metadata_url/$1"
}

# The JSON string value of "key" in the JSON read from standard input.
json_field() {
  sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\([^\"]*\)\".*/\1/p" | head -n 1
}

# Print the latest version of secret $1; the token reaches curl through its config on standard input.
read_secret() {
  printf 'header = "Authorization: Bearer %s"\n' "$token" |
    curl -fsS --retry 5 --config - "$secretmanager_url/projects/$project/secrets/$1/versions/latest:access" |
    tr -d '\n' | json_field data | base64 -d
}

project=$(metadata project/project-id)
image=$(metadata instance/attributes/ib-gateway-image)
api_port=$(metadata instance/attributes/ib-gateway-api-port)
api_source_range=$(metadata instance/attributes/ib-gateway-api-source-range)
username_secret=$(metadata instance/attributes/ib-username-secret)
password_secret=$(metadata instance/attributes/ib-password-secret)
token=$(metadata instance/service-accounts/default/token | json_field access_token)
if [ -z "$token" ]; then
  log "no access token from the metadata server"
  exit 1
fi

umask 077
mkdir -p "$run_dir"
chmod 0711 "$run_dir"
password_file="$run_dir/tws_password"
env_file="$run_dir/gateway.env"

read_secret "$password_secret" >"$password_file"
chown "$gateway_uid" "$password_file"
chmod 0400 "$password_file"
{
  printf 'TWS_USERID='
  read_secret "$username_secret"
  printf '\n'
  echo "TWS_PASSWORD_FILE=/run/secrets/tws_password"
  echo "TRADING_MODE=$(metadata instance/attributes/ib-trading-mode)"
  echo "READ_ONLY_API=$(metadata instance/attributes/ib-read-only-api)"
  echo "AUTO_RESTART_TIME=$(metadata instance/attributes/ib-auto-restart-time)"
  echo "TWOFA_TIMEOUT_ACTION=$(metadata instance/attributes/ib-twofa-timeout-action)"
  echo "RELOGIN_AFTER_TWOFA_TIMEOUT=$(metadata instance/attributes/ib-relogin-after-twofa-timeout)"
  echo "EXISTING_SESSION_DETECTED_ACTION=$(metadata instance/attributes/ib-existing-session-action)"
  echo "TIME_ZONE=$(metadata instance/attributes/ib-time-zone)"
  echo "TZ=$(metadata instance/attributes/ib-time-zone)"
} >"$env_file"
unset token
if ! [ -s "$password_file" ] || grep -qx 'TWS_USERID=' "$env_file"; then
  log "a credential secret is empty: add a version to $username_secret and $password_secret"
  exit 1
fi

# Container-Optimized OS drops inbound traffic by default. Admit the API port from the function's
# connector range only (the VPC firewall does the same), so no other VM in the network reaches the
# unauthenticated API even where a network rule admits it; drop the any-source rule an older version
# of this script added (it added at most one).
case "$api_source_range" in
  */*) ;;
  *) log "metadata ib-gateway-api-source-range is not a CIDR range: '$api_source_range'"; exit 1 ;;
esac
"$iptables" -w -D INPUT -p tcp --dport "$api_port" -j ACCEPT 2>/dev/null || true
"$iptables" -w -C INPUT -p tcp -s "$api_source_range" --dport "$api_port" -j ACCEPT 2>/dev/null ||
  "$iptables" -w -A INPUT -p tcp -s "$api_source_range" --dport "$api_port" -j ACCEPT

"$docker" rm -f ib-gateway >/dev/null 2>&1 || true
log "starting $image, API on port $api_port"
exec "$docker" run --rm --name ib-gateway --network host \
  --env-file "$env_file" \
  --volume "$password_file:/run/secrets/tws_password:ro" \
  "$image"
