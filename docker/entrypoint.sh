#!/bin/sh
# quiverd's container entrypoint. In a StatefulSet it derives the node's
# identity from the pod: QUIVER_REPLICAS=N and QUIVER_PEER_SERVICE=<headless
# service> make pod <set>-<ordinal> node <ordinal + 1> of the peers
#   1=<set>-0.<service>:7701,2=<set>-1.<service>:7701,...
# An explicit QUIVER_PEERS / QUIVER_NODE_ID wins. Everything else is read by
# quiverd itself from QUIVER_* variables (docs/config.yaml).
set -eu

if [ -n "${QUIVER_REPLICAS:-}" ] && [ -z "${QUIVER_PEERS:-}" ]; then
  case "$QUIVER_REPLICAS" in
    '' | *[!0-9]* | 0)
      echo "quiver-entrypoint: QUIVER_REPLICAS='$QUIVER_REPLICAS' is not a positive number" >&2
      exit 2 ;;
  esac
  pod=${POD_NAME:-$(hostname)}
  ordinal=${pod##*-}
  set_name=${pod%-*}
  case "$ordinal" in
    '' | *[!0-9]*)
      echo "quiver-entrypoint: pod name '$pod' does not end in -<ordinal>" >&2
      exit 2 ;;
  esac
  if [ "$set_name" = "$pod" ] || [ "$ordinal" -ge "$QUIVER_REPLICAS" ]; then
    echo "quiver-entrypoint: pod '$pod' is not one of $QUIVER_REPLICAS replicas" >&2
    exit 2
  fi
  if [ -z "${QUIVER_PEER_SERVICE:-}" ]; then
    echo "quiver-entrypoint: QUIVER_PEER_SERVICE (the headless service's DNS name) is not set" >&2
    exit 2
  fi
  port=${QUIVER_PEER_PORT:-7701}
  peers=""
  i=0
  while [ "$i" -lt "$QUIVER_REPLICAS" ]; do
    peers="${peers:+$peers,}$((i + 1))=${set_name}-${i}.${QUIVER_PEER_SERVICE}:${port}"
    i=$((i + 1))
  done
  QUIVER_PEERS=$peers
  QUIVER_NODE_ID=${QUIVER_NODE_ID:-$((ordinal + 1))}
  export QUIVER_PEERS QUIVER_NODE_ID
fi

exec "${QUIVERD:-/usr/local/bin/quiverd}" "$@"
