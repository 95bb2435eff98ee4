# Sourced by the scripts that build or measure the webhook: webhook_tunables prints the GLIBC_TUNABLES value the
# webhook's image carries, read from webhook/Dockerfile's ENV line (which says why), and fails when there is none.
webhook_tunables() {
  local value
  value=$(sed -n 's/^ENV GLIBC_TUNABLES=//p' webhook/Dockerfile)
  # One unquoted value of glibc's own syntax (name=value pairs joined by ':'), as both Docker and load-image take it.
  if [[ ! "$value" =~ ^[A-Za-z0-9._=:]+$ ]]; then
    echo "webhook/Dockerfile needs exactly one line 'ENV GLIBC_TUNABLES=name=value[:name=value...]' (found: ${value:-none})" >&2
    return 1
  fi
  echo "$value"
}

# For the benchmarks: every process they measure (the echo server's included) runs with the image's settings,
# unless the caller set GLIBC_TUNABLES (empty for glibc's defaults) to measure others.
export_webhook_tunables() {
  if [[ -z "${GLIBC_TUNABLES+set}" ]]; then
    GLIBC_TUNABLES=$(webhook_tunables) || return 1
  fi
  export GLIBC_TUNABLES
  echo "GLIBC_TUNABLES=$GLIBC_TUNABLES"
}
