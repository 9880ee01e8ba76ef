#!/usr/bin/env bash
# The script a user would write instead of token-rotator: for each connection, read its refresh
# token with the vault CLI, refresh with curl, write the new pair back with the vault CLI. No
# claim, no retry, no check of what came back. The benchmark times it on a sample of connections.
#
#   baseline.sh MOUNT CREDENTIALS_PATH CONNECTIONS_PREFIX TOKEN_URL CONNECTION...
set -euo pipefail
mount=$1 creds=$2 prefix=$3 url=$4
shift 4
client_id=$(vault kv get -mount="$mount" -field=client_id "$creds")
client_secret=$(vault kv get -mount="$mount" -field=client_secret "$creds")
for c in "$@"; do
  rt=$(vault kv get -mount="$mount" -field=refresh_token "$prefix/$c")
  resp=$(curl -sS -X POST -H 'Content-Type: application/json' -H 'Accept: application/json' \
    -d "{\"grant_type\":\"refresh_token\",\"client_id\":\"$client_id\",\"client_secret\":\"$client_secret\",\"refresh_token\":\"$rt\"}" "$url")
  at=$(printf '%s' "$resp" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
  nrt=$(printf '%s' "$resp" | sed -n 's/.*"refresh_token":"\([^"]*\)".*/\1/p')
  vault kv put -mount="$mount" "$prefix/$c" refresh_token="$nrt" access_token="$at" >/dev/null
done
