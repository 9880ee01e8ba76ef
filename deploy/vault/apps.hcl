# Vault policy for the apps that call the Stora API (deploy/vault/setup.sh:
# `vault policy write token-rotator-apps`): read the access tokens token-rotator writes under
# apps/, and nothing else. Never the credential secrets under stora/, which hold client secrets and
# refresh tokens; no writes; no metadata.
#
# This one grants every output to every app bound to it. For one app per client, write a policy
# per app naming its own output, e.g. path "secret/data/apps/acme" { capabilities = ["read"] }.
path "secret/data/apps/*" {
  capabilities = ["read"]
}
