#!/usr/bin/env bash
# Print the Kubernetes Secret pcf-api reads (secrets.existingSecret in the chart) as YAML, built by
# `kubectl create secret generic … --dry-run=client -o yaml` — nothing is sent to a cluster unless
# --apply is given, and then only through a pipe to `kubectl apply -f -`.
#
# Values come from files (never from the command line, so they stay out of shell history and
# `ps`), and this script writes no temporary file:
#   --from-dir DIR          one file per key: DIR/database-url, DIR/hs256-secret, …
#   --from-env-file FILE    lines `key=value` (database-url=postgresql+asyncpg://…)
#   --from-file KEY=PATH    one key (repeatable)
# Keys: database-url, database-password, hs256-secret, spicedb-preshared-key, metrics-password,
# events-redis-url, rate-limit-storage-url, tracing-headers. --require KEY,… (default database-url) lists the keys
# that must be present and non-empty.
#
#   scripts/create-secrets.sh --namespace pcf-api --from-dir /secure/pcf-api \
#       --require database-url,metrics-password | kubectl apply -f -
set -euo pipefail

known_keys=(database-url database-password hs256-secret spicedb-preshared-key metrics-password
    events-redis-url rate-limit-storage-url tracing-headers log-hash-key)
name=pcf-api-secrets
namespace=""
require="database-url"
apply=false
sources=()
declare -A present=()

usage() { sed -n '2,18s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }
die() { echo "create-secrets: $*" >&2; exit 1; }
is_known() { local key; for key in "${known_keys[@]}"; do [[ "$key" == "$1" ]] && return 0; done; return 1; }

add_file() {  # KEY PATH
    is_known "$1" || die "unknown key '$1' (known: ${known_keys[*]})"
    [[ -r "$2" ]] || die "cannot read $2 (key $1)"
    [[ -s "$2" ]] || die "$2 is empty (key $1)"
    sources+=("--from-file=$1=$2")
    present[$1]=1
}

while (($#)); do
    case "$1" in
        --name) name="${2:?}"; shift 2 ;;
        --namespace|-n) namespace="${2:?}"; shift 2 ;;
        --require) require="${2?}"; shift 2 ;;
        --apply) apply=true; shift ;;
        --from-dir)
            dir="${2:?}"; shift 2
            [[ -d "$dir" ]] || die "$dir is not a directory"
            for key in "${known_keys[@]}"; do
                if [[ -e "$dir/$key" ]]; then add_file "$key" "$dir/$key"; fi
            done
            ;;
        --from-env-file)
            file="${2:?}"; shift 2
            [[ -r "$file" ]] || die "cannot read $file"
            # Only the key names are read here; the values go from the file to kubectl directly.
            while IFS= read -r line || [[ -n "$line" ]]; do
                [[ -z "$line" || "$line" == \#* ]] && continue
                key="${line%%=*}"
                is_known "$key" || die "$file: unknown key '$key' (known: ${known_keys[*]})"
                [[ "$line" == *=?* ]] || die "$file: key $key has no value"
                present[$key]=1
            done <"$file"
            sources+=("--from-env-file=$file")
            ;;
        --from-file)
            pair="${2:?}"; shift 2
            [[ "$pair" == *=* ]] || die "--from-file wants KEY=PATH"
            add_file "${pair%%=*}" "${pair#*=}"
            ;;
        -h|--help) usage 0 ;;
        *) echo "create-secrets: unknown argument $1" >&2; usage 2 ;;
    esac
done

((${#sources[@]})) || die "no source given: --from-dir, --from-env-file or --from-file"
IFS=, read -r -a required <<<"$require"
for key in "${required[@]}"; do
    [[ -n "$key" ]] || continue
    [[ -n "${present[$key]:-}" ]] || die "required key $key is missing"
done

kubectl=(kubectl create secret generic "$name" "${sources[@]}" --dry-run=client -o yaml)
if [[ -n "$namespace" ]]; then kubectl+=(--namespace "$namespace"); fi
if "$apply"; then
    "${kubectl[@]}" | kubectl apply -f -
else
    "${kubectl[@]}"
fi
