# Vault policy for token-rotator, the job (deploy/vault/setup.sh: `vault policy write token-rotator`).
# Layout (deploy/configmap.yaml), KV v2 mount `secret`:
#   stora/...  credentials: client_id, client_secret, refresh_token, code; the job reads them and
#              updates them (the new refresh token, the claim); you create them.
#   apps/...   access tokens for apps; the job creates and updates them.
# Nothing here can delete, destroy or list outside the connection prefixes, or read another path
# than those and the mount's settings.
# Another mount than `secret`: replace `secret/` in every path.

# Credential secrets, and every connection below a client's `connections` prefix: read; patch
# (the claim, then the new refresh token: a check-and-set patch, which Vault refuses once the
# secret is deleted, so a connection deleted mid-rotation stays deleted). No `create` or `update`:
# the job never creates a credential secret, nor replaces one whole.
path "secret/data/stora/*" {
  capabilities = ["read", "patch"]
}

# Their custom metadata, where the job records each client's state (rotator_status, ...): patch.
# list: the connection prefixes (stora/fleet/connections) are listed at the start of each pass.
# read: `token-rotator validate` reads each credential secret's max_versions and
# delete_version_after, which can make Vault delete the refresh token. Metadata holds settings,
# version times and the rotator_* state, never a secret value; without read, validate falls back
# to what reading the secret shows.
path "secret/metadata/stora/*" {
  capabilities = ["read", "patch", "list"]
}

# The mount's KV settings (max_versions, delete_version_after, cas_required): read once per run,
# to warn when they can delete a refresh token. They reveal no secret; without this the check of
# the mount is skipped (logged at debug), nothing fails.
path "secret/config" {
  capabilities = ["read"]
}

# Outputs, the access tokens apps read: read (is the stored token still good?), create (the first
# one), update (check-and-set).
path "secret/data/apps/*" {
  capabilities = ["create", "read", "update"]
}

# Not needed: sys/internal/ui/mounts/secret, where the job reads the mount's KV version at
# start-up (as the vault CLI does). Vault answers it for any token with a capability under the
# mount, so the paths above are enough (deploy/vault_test.go proves it with a token holding only this
# policy).

# What the default policy already grants, repeated so that the policy also works for a role with
# token_no_default_policy: the pre-flight's capabilities check, and the token's own lookup and
# renewal before each client.
path "sys/capabilities-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
