#!/bin/sh
# rankd-cluster-init: forms a fresh rankd cluster and deploys its first model, once.
# Safe to run again: it skips each step that is already done. Used by the compose file's
# rankd-init service and the Kubernetes rankd-init Job (docs/deploy.md).
#
# Environment:
#   INIT_MEMBERS  required: the initial voters, space separated, each ID=API_ADDR,PEER_ADDR
#                 exactly as the nodes advertise them (cluster.advertise_api/_peer)
#   INIT_ADDR     the node to talk to (default: the first member's API address)
#   INIT_BUNDLE   a bundle directory to upload and promote while no version was ever
#                 promoted (unset: form the cluster only)
#   INIT_BACKUP   1: create a backup at the end (needs backup.target on that node)
#   INIT_WAIT_S   how long to wait for every member to answer, and for a leader (default 300)
set -eu

log() { echo "rankd-cluster-init: $*" >&2; }

if [ -z "${INIT_MEMBERS:-}" ]; then
  log "INIT_MEMBERS is required (ID=API_ADDR,PEER_ADDR ...)"
  exit 2
fi
export USER="${USER:-rankd-cluster-init}"

api_of() { a="${1#*=}"; echo "${a%%,*}"; }
with_scheme() { case "$1" in *://*) echo "$1" ;; *) echo "http://$1" ;; esac; }

first="${INIT_MEMBERS%% *}"
addr="$(with_scheme "${INIT_ADDR:-$(api_of "$first")}")"
deadline=$(( $(date +%s) + ${INIT_WAIT_S:-300} ))

wait_for() { # DESCRIPTION COMMAND...
  what="$1"; shift
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "gave up waiting for $what"
      "$@" || true
      exit 1
    fi
    sleep 2
  done
}

for m in $INIT_MEMBERS; do
  api="$(with_scheme "$(api_of "$m")")"
  wait_for "$api to answer" rankctl health --addr "$api"
  log "$api answers"
done

# A formed cluster answers GetClusterStatus (a linearizable read through its leader); a
# node still waiting for `cluster init` does not.
if rankctl cluster status --addr "$addr" >/dev/null 2>&1; then
  log "the cluster is already formed"
else
  set --
  for m in $INIT_MEMBERS; do set -- "$@" --member "$m"; done
  log "forming the cluster through $addr"
  if ! rankctl cluster init --addr "$addr" "$@"; then
    log "init refused; checking whether the cluster was formed meanwhile"
  fi
fi
wait_for "a leader" rankctl cluster status --addr "$addr"

if [ -n "${INIT_BUNDLE:-}" ]; then
  if rankctl history --addr "$addr" | grep -q promote; then
    log "a version was already promoted; not deploying $INIT_BUNDLE"
  else
    manifest="$INIT_BUNDLE/manifest.json"
    name="$(sed -n 's/^  "name": "\(.*\)",$/\1/p' "$manifest" | head -n 1)"
    version="$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$manifest" | head -n 1)"
    if [ -z "$name" ] || [ -z "$version" ]; then
      log "cannot read name and version from $manifest"
      exit 1
    fi
    log "uploading $name $version from $INIT_BUNDLE"
    rankctl upload "$INIT_BUNDLE" --addr "$addr"
    log "promoting $name $version"
    rankctl promote "$version" --name "$name" --addr "$addr"
  fi
fi

if [ "${INIT_BACKUP:-0}" = 1 ]; then
  log "creating a first backup"
  rankctl backup create --addr "$addr"
fi

rankctl cluster status --addr "$addr"
