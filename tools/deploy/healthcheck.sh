#!/bin/bash
# Docker HEALTHCHECK for gossip-node: healthy only when GET /health answers 200.
# Uses bash's /dev/tcp so that the runtime image needs no curl or wget. The port comes from
# GOSSIP_HTTP_LISTEN (HOST:PORT, as the node reads it); a wildcard host is asked on loopback.
set -euo pipefail

listen="${GOSSIP_HTTP_LISTEN:-0.0.0.0:7180}"
port="${listen##*:}"
host="${listen%:*}"
host="${host#[}"
host="${host%]}"
case "$host" in
  "" | 0.0.0.0) host=127.0.0.1 ;;
  ::) host=::1 ;;
esac

if ! exec 3<>"/dev/tcp/${host}/${port}"; then
  echo "unhealthy: nothing accepts on ${host}:${port}" >&2
  exit 1
fi
printf 'GET /health HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3
status_line=""
IFS= read -r -t 3 status_line <&3 || true
exec 3<&-

if [[ "$status_line" =~ ^HTTP/1\.[01]\ 200 ]]; then
  exit 0
fi
echo "unhealthy: /health on ${host}:${port} answered '${status_line%$'\r'}'" >&2
exit 1
