# Vault Agent beside an app that calls the Stora API: it logs in to Vault as the app's service
# account and keeps the app's access token in a file, /var/run/stora/access_token, which holds the
# token alone (no newline). The app sends `Authorization: Bearer <the file's content>`.
#
# Vault's address comes from VAULT_ADDR (deployment.yaml sets it). docs/apps.md "Vault Agent" says
# what the file's lag behind Vault is and what it costs; deploy/agent_test.go runs this file, with
# only its paths and the interval changed, against a real Vault.

# Log in with the pod's projected service account token (audience `vault`), with the apps' role
# from deploy/vault/setup.sh: read apps/*, nothing else. The agent reads the file again at each
# login, so the kubelet's renewals are picked up.
auto_auth {
  method "kubernetes" {
    mount_path = "auth/kubernetes"
    config = {
      role       = "token-rotator-apps"
      token_path = "/var/run/secrets/vault/token"
    }
  }
}

template_config {
  # How often the agent reads a secret that has no lease (KV) again: every 85-95% of this. The
  # file lags Vault by at most this much, and each template costs one Vault read that often. The
  # default is 5m; 30s keeps a revoked token in the file for at most about 30 s after a rotation.
  static_secret_render_interval = "30s"
}

template {
  source      = "/etc/vault-agent/access-token.ctmpl"
  destination = "/var/run/stora/access_token"
  # Owner and group (the pod's fsGroup) read it; nobody else.
  perms = "0440"
  # A secret without access_token is an error, not a file saying "<no value>".
  error_on_missing_key = true
}
