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
#   TOKEN_REVIEWER_JWT_FILE  a file with a long-lived token of a service account bound to
#                        system:auth-delegator, which Vault uses to call TokenReview: set it (or run
#                        Vault in the cluster, below). Without it, Vault calls TokenReview with the
#                        JWT of whoever logs in, which the API server accepts only when that JWT
#                        is for the API server's own audience: a token for `vault` is refused. That
#                        works only with AUDIENCE set to the API server's audience (and the
#                        projected token's, and APP_AUDIENCE likewise) and token-rotator bound to
#                        system:auth-delegator (deploy/auth-delegator.yaml), and each app's service
#                        account bound likewise; such a token is also good against the Kubernetes
#                        API. The reviewer's token expires like any: renew the file and run this
#                        again before it does.
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
#
# Every input is checked before the first write: the files, the names, the URL, Vault's address,
# the token and what it may do. On a bad one the script exits 2, naming the variable and the fix,
# and Vault is left as it was. VAULT_TOKEN needs root, or the capabilities the `need` lines below
# list (deploy/setup_test.go runs it with a token holding just those).
set -eu

dir=$(cd "$(dirname "$0")" && pwd)
NAMESPACE=${NAMESPACE:-token-rotator}
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-token-rotator}
AUDIENCE=${AUDIENCE:-vault}
APP_SERVICE_ACCOUNTS=${APP_SERVICE_ACCOUNTS:-stora-client}
APP_NAMESPACES=${APP_NAMESPACES:-default}
APP_AUDIENCE=${APP_AUDIENCE:-vault}

# 0. Check every input before the first write: a run that stops halfway leaves Vault half set up.
#    Each problem is reported; then, if there was any, the script stops before talking to Vault
#    (or, for Vault's own checks, before writing to it).
problems=0
problem() {
  printf 'setup.sh: %s\n' "$*" >&2
  problems=$((problems + 1))
}
stop_on_problems() {
  if [ "$problems" -gt 0 ]; then
    echo "setup.sh: nothing was written to Vault; fix the above and run it again" >&2
    exit 2
  fi
}

# check_names VAR VALUE KIND: VALUE is a comma-separated list of Kubernetes names of KIND
# "namespace" (a DNS label) or "service account" (a DNS subdomain); Vault also takes * and globs.
check_names() {
  case $2 in
  '' | ,* | *, | *,,*)
    problem "$1=\"$2\" has an empty name: separate names with single commas, e.g. $1=a,b"
    return ;;
  *[[:space:]]*)
    problem "$1=\"$2\" contains a space: separate names with commas only, e.g. $1=a,b"
    return ;;
  *[[:upper:]]*)
    problem "$1=\"$2\": Kubernetes names are lowercase"
    return ;;
  esac
  if [ "$3" = namespace ]; then max=63 re='^[a-z0-9*]([-a-z0-9*]*[a-z0-9*])?$' chars="'-'"
  else max=253 re='^[a-z0-9*]([-a-z0-9.*]*[a-z0-9*])?$' chars="'-', '.'"
  fi
  set -f
  old_ifs=$IFS IFS=,
  for name in $2; do
    if [ ${#name} -gt $max ] || ! printf '%s\n' "$name" | grep -Eq "$re"; then
      problem "$1: \"$name\" is not a $3 name (lowercase letters, digits, $chars; at most $max characters; * matches any)"
    fi
  done
  IFS=$old_ifs
  set +f
}

# check_audience VAR VALUE: Vault's role binds one audience.
check_audience() {
  case $2 in
  *,*) problem "$1=\"$2\": Vault's role binds one audience; give one, e.g. $1=vault" ;;
  *[[:space:]]*) problem "$1=\"$2\" contains a space: give the audience alone, e.g. $1=vault" ;;
  esac
}

# check_file VAR: VAR names a readable file.
check_file() {
  eval "f=\${$1}"
  if [ ! -f "$f" ] || [ ! -r "$f" ]; then
    problem "$1=$f: no such file, or not readable"
    return 1
  fi
}

if [ -n "${KUBERNETES_HOST:-}" ]; then
  case $KUBERNETES_HOST in
  *[[:space:]]*) problem "KUBERNETES_HOST=\"$KUBERNETES_HOST\" contains a space: give the API server's URL alone" ;;
  https://?* | http://?*) ;;
  *) problem "KUBERNETES_HOST=$KUBERNETES_HOST is not a URL: give the API server as Vault reaches it, e.g. KUBERNETES_HOST=https://k8s-api.example.internal:6443" ;;
  esac
  if [ -z "${KUBERNETES_CA_CERT:-}" ]; then
    problem "KUBERNETES_HOST is set but KUBERNETES_CA_CERT is not: set it to a file with the API server's CA certificate (PEM), e.g. from your kubeconfig: kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d > k8s-ca.crt"
  elif check_file KUBERNETES_CA_CERT &&
    ! { grep -q -- '-----BEGIN CERTIFICATE-----' "$KUBERNETES_CA_CERT" && grep -q -- '-----END CERTIFICATE-----' "$KUBERNETES_CA_CERT"; }; then
    problem "KUBERNETES_CA_CERT=$KUBERNETES_CA_CERT is not a PEM certificate (no -----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----): if it holds a kubeconfig's certificate-authority-data, base64-decode it (base64 -d)"
  elif [ -r "$KUBERNETES_CA_CERT" ] &&
    ! sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$KUBERNETES_CA_CERT" | grep -v -- '-----' | tr -d '[:space:]' | base64 -d >/dev/null 2>&1; then
    problem "KUBERNETES_CA_CERT=$KUBERNETES_CA_CERT has the PEM markers but no certificate between them (not base64): take the CA certificate again from the kubeconfig or the cluster"
  fi
  if [ -n "${TOKEN_REVIEWER_JWT_FILE:-}" ] && check_file TOKEN_REVIEWER_JWT_FILE &&
    ! tr -d '[:space:]' <"$TOKEN_REVIEWER_JWT_FILE" | grep -Eq '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$'; then
    problem "TOKEN_REVIEWER_JWT_FILE=$TOKEN_REVIEWER_JWT_FILE does not hold a JWT (three base64url parts joined by dots): put the token of a service account bound to system:auth-delegator in it, or unset it"
  fi
  check_names NAMESPACE "$NAMESPACE" namespace
  check_names SERVICE_ACCOUNT "$SERVICE_ACCOUNT" "service account"
  check_audience AUDIENCE "$AUDIENCE"
  check_names APP_NAMESPACES "$APP_NAMESPACES" namespace
  check_names APP_SERVICE_ACCOUNTS "$APP_SERVICE_ACCOUNTS" "service account"
  check_audience APP_AUDIENCE "$APP_AUDIENCE"
else
  for var in KUBERNETES_CA_CERT TOKEN_REVIEWER_JWT_FILE; do
    if eval "[ -n \"\${$var:-}\" ]"; then
      problem "$var is set but KUBERNETES_HOST is not: set KUBERNETES_HOST to the API server's URL to set up Kubernetes auth, or unset $var"
    fi
  done
fi
case ${APPROLE:-} in
'' | true | false) ;;
*) problem "APPROLE=$APPROLE: set APPROLE=true to also set up AppRole, or leave it unset" ;;
esac
if ! command -v vault >/dev/null 2>&1; then
  problem "the vault CLI is not on PATH: install Vault's CLI, or add its directory to PATH"
fi
if [ -z "${VAULT_ADDR:-}" ]; then
  problem "VAULT_ADDR is not set: export VAULT_ADDR=https://vault.example.internal:8200 (the vault CLI would otherwise use https://127.0.0.1:8200)"
fi
stop_on_problems

# Vault answers, is unsealed, and takes the token (whose value is never printed).
rc=0
out=$(vault status 2>&1) || rc=$?
case $rc in
0) ;;
2) problem "Vault at VAULT_ADDR=$VAULT_ADDR is sealed: unseal it, then run this again" ;;
*) problem "cannot reach Vault at VAULT_ADDR=$VAULT_ADDR: check the address (and VAULT_CACERT if its certificate is from a private CA): $out" ;;
esac
stop_on_problems
rc=0
out=$(vault token lookup 2>&1 >/dev/null) || rc=$?
if [ "$rc" -ne 0 ]; then
  if [ -z "${VAULT_TOKEN:-}" ]; then
    problem "VAULT_TOKEN is not set (and there is no token from vault login): export VAULT_TOKEN=<a Vault admin token>"
  else
    problem "Vault at $VAULT_ADDR refuses VAULT_TOKEN (expired, revoked, or another Vault's): $out"
  fi
fi
stop_on_problems

# need PATH CAPABILITY...: the token may do each CAPABILITY on PATH (root may do anything).
need() {
  path=$1
  shift
  rc=0
  have=$(vault token capabilities "$path" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ]; then
    problem "cannot check what VAULT_TOKEN may do on $path (sys/capabilities-self, which the default policy grants): $have"
    return
  fi
  [ "$have" = root ] && return
  missing=
  for cap; do
    case ", $have, " in
    *", $cap, "*) ;;
    *) missing="$missing${missing:+, }$cap" ;;
    esac
  done
  if [ -n "$missing" ]; then
    problem "VAULT_TOKEN may not $missing on $path (it may: $have): use a root token, or one whose policy grants that"
  fi
}
need sys/mounts/secret read
secret_mounted=false
if vault read sys/mounts/secret >/dev/null 2>&1; then
  secret_mounted=true
else
  need sys/mounts/secret update
fi
need sys/policies/acl/token-rotator update
need sys/policies/acl/token-rotator-apps update
if [ -n "${KUBERNETES_HOST:-}" ]; then
  need sys/auth/kubernetes read update sudo
  need auth/kubernetes/config update
  need auth/kubernetes/role/token-rotator create update
  need auth/kubernetes/role/token-rotator-apps create update
fi
if [ "${APPROLE:-}" = true ]; then
  need sys/auth/approle read update sudo
  need auth/approle/role/token-rotator create update
fi
stop_on_problems

# 1. The KV v2 mount holding stora/ (credentials) and apps/ (access tokens).
if [ "$secret_mounted" = false ]; then
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
