#!/usr/bin/env bash
# Restores a backup into the database, with the safety steps around `vibe-ensemble backup restore`:
#
#   deployment/scripts/database-restore.sh BACKUP_ID [--store LOCATION] [--to DATABASE_URL]
#       [--scale-down NAMESPACE] [--force] [--yes]
#
#   1. verify    `vibe-ensemble backup verify BACKUP_ID`: a backup that does not verify is not restored
#   2. confirm   type the backup id (or pass --yes; without a terminal --yes is required)
#   3. stop      with --scale-down NAMESPACE: scale deployment/vibe-ensemble to 0 there and wait,
#                so no server writes during the restore (it is scaled back up afterwards, even on failure)
#   4. restore   `vibe-ensemble backup restore`: it takes a safety backup of the current state first,
#                restores, migrates forward, verifies, and rolls back to the safety backup on failure;
#                it refuses while a server uses the target unless --force
#   5. check     `vibe-ensemble doctor`: configuration, database, migrations
#
# The database and the backup location come from the usual settings (VIBE_DATABASE_URL, …) unless
# --to and --store say otherwise. VIBE_ENSEMBLE names the command (default: vibe-ensemble on PATH).
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 && $1 != -* ]] || usage
backup_id=$1
shift
store=() to=() force=() namespace="" yes=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --store) [[ $# -ge 2 ]] || usage; store=(--store "$2"); shift 2 ;;
    --to) [[ $# -ge 2 ]] || usage; to=(--to "$2"); shift 2 ;;
    --scale-down) [[ $# -ge 2 ]] || usage; namespace=$2; shift 2 ;;
    --force) force=(--force); shift ;;
    --yes) yes=1; shift ;;
    *) echo "error: unknown option '$1'" >&2; usage ;;
  esac
done
cli=${VIBE_ENSEMBLE:-vibe-ensemble}
command -v "$cli" >/dev/null 2>&1 || { echo "error: '$cli' not found (set VIBE_ENSEMBLE)" >&2; exit 2; }
if [[ -n $namespace ]]; then
  command -v kubectl >/dev/null 2>&1 || { echo "error: --scale-down needs kubectl" >&2; exit 2; }
fi

echo "== 1/5 verify backup $backup_id"
"$cli" backup verify "$backup_id" "${store[@]}"

echo "== 2/5 confirm"
if ((yes == 0)); then
  if [[ ! -t 0 ]]; then
    echo "error: no terminal to confirm on: pass --yes to restore without asking" >&2
    exit 2
  fi
  read -r -p "This replaces the database with backup $backup_id. Type the backup id to go on: " answer
  [[ $answer == "$backup_id" ]] || { echo "not confirmed; nothing changed" >&2; exit 1; }
else
  echo "confirmed by --yes"
fi

echo "== 3/5 stop the servers"
if [[ -n $namespace ]]; then
  replicas=$(kubectl -n "$namespace" get deployment vibe-ensemble -o jsonpath='{.spec.replicas}')
  scale_back() {
    echo "== scaling deployment/vibe-ensemble in $namespace back to $replicas"
    kubectl -n "$namespace" scale deployment/vibe-ensemble --replicas="$replicas"
    kubectl -n "$namespace" rollout status deployment/vibe-ensemble --timeout=600s
  }
  trap scale_back EXIT
  kubectl -n "$namespace" scale deployment/vibe-ensemble --replicas=0
  kubectl -n "$namespace" wait --for=delete pod -l app.kubernetes.io/component=server --timeout=300s
else
  echo "skipped: no --scale-down (stop the servers yourself, or the restore refuses unless --force)"
fi

echo "== 4/5 restore"
"$cli" backup restore "$backup_id" "${store[@]}" "${to[@]}" "${force[@]}"

echo "== 5/5 check"
doctor_db=()
[[ ${#to[@]} -gt 0 ]] && doctor_db=(--database-url "${to[1]}")
# the backup location checked is the one restored from (--store), not the settings' default
if [[ ${#store[@]} -gt 0 ]]; then
  VIBE_BACKUP_LOCATION="${store[1]}" "$cli" doctor "${doctor_db[@]}"
else
  "$cli" doctor "${doctor_db[@]}"
fi
echo "restored $backup_id"
