#!/bin/sh
# The Vault side of deploy/: the KV v2 mount, the two policies, the Kubernetes auth method and its
# roles for token-rotator and for the apps; optionally AppRole, for token-rotator outside Kubernetes.
# Run it (or copy its commands) once, as a Vault admin: VAULT_ADDR and VAULT_TOKEN set, `vault` on
# PATH. It is safe to run again. deploy/vault_test.go runs it against a real `vault server -dev`.
#
#   KUBERNETES_HOST=https://k8s-api.example.internal:6443 \
#   KUBERNETES_CA_CERT=./k8s-ca.crt \
#   sh deploy/vault/setup.sh
#
# Environment:
#   KUBERNETES_HOST      the Kubernetes API server, as Vault reaches it (required for kubernetes
#                        auth; leave it unset to skip that part)
#   KUBERNETES_CA_CERT   a file with the CA certificate of that API server (PEM)
#   TOKEN_REVIEWER_JWT_FILE  optional: a file with a long-lived token of a service account bound to
#                        system:auth-delegator, which Vault uses to call TokenReview. Without it,
#                        Vault calls TokenReview with the JWT of whoever logs in: then bind
#                        token-rotator (and the apps' service accounts) to system:auth-delegator
#                        (deploy/auth-delegator.yaml).
#   NAMESPACE            token-rotator's namespace (default token-rotator; kustomization.yaml's)
#   SERVICE_ACCOUNT      token-rotator's service account (default token-rotator; the Helm chart's
#                        NOTES print the one it made)
#   AUDIENCE             the audience of the job's projected token (default vault; the chart's
#                        vault.serviceAccountToken.audience)
#   APP_SERVICE_ACCOUNTS, APP_NAMESPACES  the apps allowed to read access tokens (comma-separated,
#                        no spaces; default: service accounts named stora-client, in namespace
#                        default)
#   APP_AUDIENCE         the audience the apps' tokens must carry (default vault: a projected token
#                        for `vault`, as deploy/vault-agent/ and deploy/vso/ mount or request).
#                        Vault Agent reading the pod's automounted token (no token_path) and a
#                        VaultAuth without `audiences` present the API server's own audience
#                        instead (its --api-audiences, by default its service account issuer, e.g.
#                        https://kubernetes.default.svc.cluster.local; the "aud" in the payload of
#                        `kubectl create token <service account>`): set APP_AUDIENCE to it to admit
#                        them, knowing that such a token is also good against the Kubernetes API.
#   APPROLE=true         also set up AppRole for token-rotator (a VM, CI: anywhere without
#                        Kubernetes); see the end of this file
# Vault running inside the same cluster can skip the CA and reviewer JWT: leave out
# disable_local_ca_jwt and kubernetes_ca_cert below, and Vault uses its own pod's.
set -eu

dir=$(cd "$(dirname "$0")" && pwd)
NAMESPACE=${NAMESPACE:-token-rotator}
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-token-rotator}
AUDIENCE=${AUDIENCE:-vault}
APP_SERVICE_ACCOUNTS=${APP_SERVICE_ACCOUNTS:-stora-client}
APP_NAMESPACES=${APP_NAMESPACES:-default}
APP_AUDIENCE=${APP_AUDIENCE:-vault}

# 1. The KV v2 mount holding stora/ (credentials) and apps/ (access tokens).
if ! vault read sys/mounts/secret >/dev/null 2>&1; then
  vault secrets enable -path=secret -version=2 kv
fi

# 2. The policies: token-rotator (the job) and token-rotator-apps (read the access tokens only).
vault policy write token-rotator "$dir/token-rotator.hcl"
vault policy write token-rotator-apps "$dir/apps.hcl"

# 3. Kubernetes auth: Vault checks each login's service account JWT with the cluster's TokenReview
#    API, then binds it to a role by service account name, namespace and audience: the job's pods
#    present a projected token for AUDIENCE (`vault`, cronjob.yaml), the apps one for APP_AUDIENCE.
if [ -n "${KUBERNETES_HOST:-}" ]; then
  if ! vault read sys/auth/kubernetes >/dev/null 2>&1; then
    vault auth enable kubernetes
  fi
  set -- kubernetes_host="$KUBERNETES_HOST" kubernetes_ca_cert=@"$KUBERNETES_CA_CERT" disable_local_ca_jwt=true
  if [ -n "${TOKEN_REVIEWER_JWT_FILE:-}" ]; then
    set -- "$@" token_reviewer_jwt=@"$TOKEN_REVIEWER_JWT_FILE"
  fi
  vault write auth/kubernetes/config "$@"

  # token-rotator's role. A token lives 1 hour; the job renews it or logs in again before each
  # client when less than 3 minutes are left, and again whenever Vault refuses it mid-rotation.
  vault write auth/kubernetes/role/token-rotator \
    bound_service_account_names="$SERVICE_ACCOUNT" \
    bound_service_account_namespaces="$NAMESPACE" \
    audience="$AUDIENCE" \
    token_policies=token-rotator \
    token_ttl=1h \
    token_max_ttl=4h

  # The apps' role: read access tokens under apps/, nothing else.
  vault write auth/kubernetes/role/token-rotator-apps \
    bound_service_account_names="$APP_SERVICE_ACCOUNTS" \
    bound_service_account_namespaces="$APP_NAMESPACES" \
    audience="$APP_AUDIENCE" \
    token_policies=token-rotator-apps \
    token_ttl=1h \
    token_max_ttl=4h
fi

# 4. AppRole, for token-rotator outside Kubernetes. config.yaml:
#      vault: {auth: {method: approle, role_id: <role_id>, secret_id_file: /path/to/secret_id}}
#    role_id:   vault read -field=role_id auth/approle/role/token-rotator/role-id
#    secret_id: vault write -f -field=secret_id auth/approle/role/token-rotator/secret-id
#               (into a file only the job can read). It is reused at every login, so the role
#               sets no secret_id_num_uses; rotate it with secret_id_ttl, or by hand.
if [ "${APPROLE:-}" = true ]; then
  if ! vault read sys/auth/approle >/dev/null 2>&1; then
    vault auth enable approle
  fi
  vault write auth/approle/role/token-rotator \
    token_policies=token-rotator \
    token_ttl=1h \
    token_max_ttl=4h \
    secret_id_ttl=0 \
    secret_id_num_uses=0
fi
