package deploy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/internal/testenv"
)

// TestSetupAppAudience: with APP_AUDIENCE set to the API server's own audience (its service
// account issuer), an app logs in as Vault Agent and VSO do in their default set-ups, neither of
// which asks for an audience: Vault Agent's kubernetes auto-auth sends the pod's automounted token
// (run here, the real agent, with token_path pointing at a copy of it); VSO sends a token from a
// TokenRequest with a VaultAuth's `audiences`, none by default. Each reads an app's output. A token
// for `vault` is then refused by the apps' role, and the job's role still binds AUDIENCE.
func TestSetupAppAudience(t *testing.T) {
	v := testenv.StartVault(t)
	k8s := testenv.StartKubeAPI(t)
	runSetup(t, v, "KUBERNETES_HOST="+k8s.URL, "KUBERNETES_CA_CERT="+writeFile(t, "ca.crt", k8s.CACertPEM),
		"APP_AUDIENCE="+k8s.Issuer)
	seed(t, v)
	ctx := context.Background()
	app := testenv.ServiceAccount{Namespace: "default", Name: "stora-client"}
	apiAudience := testenv.TokenOptions{} // no audience asked for: the API server's, k8s.Issuer

	readOutput := func(t *testing.T, token string) {
		t.Helper()
		c, err := v.Client.Clone()
		if err != nil {
			t.Fatal(err)
		}
		c.SetToken(token)
		s, err := c.KVv2("secret").Get(ctx, "apps/acme")
		if err != nil {
			t.Fatalf("read apps/acme: %v", err)
		}
		if s.Data["access_token"] != "at" {
			t.Errorf("apps/acme: keys %v", keys(s.Data))
		}
		if _, err := c.KVv2("secret").Get(ctx, "stora/acme"); !denied(err) {
			t.Errorf("read stora/acme: %v, want 403", err)
		}
	}
	login := func(role string, sa testenv.ServiceAccount, opts testenv.TokenOptions) (*api.Secret, error) {
		return v.Client.Logical().Write("auth/kubernetes/login", map[string]any{"role": role, "jwt": k8s.Issue(t, sa, opts)})
	}

	t.Run("Vault Agent, automounted token", func(t *testing.T) {
		dir := t.TempDir()
		sink := filepath.Join(dir, "vault-token")
		cfg := writeFile(t, "agent.hcl", fmt.Sprintf(`exit_after_auth = true
auto_auth {
  method "kubernetes" {
    mount_path = "auth/kubernetes"
    config = {
      role       = "token-rotator-apps"
      token_path = %q
    }
  }
  sink "file" {
    config = { path = %q }
  }
}
`, writeFile(t, "token", k8s.Issue(t, app, apiAudience)), sink))
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, testenv.RequireVault(t), "agent", "-config="+cfg)
		cmd.Env = []string{"VAULT_ADDR=" + v.Addr, "HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("vault agent: %v\n%s", err, out)
		}
		token, err := os.ReadFile(sink)
		if err != nil {
			t.Fatal(err)
		}
		readOutput(t, strings.TrimSpace(string(token)))
	})

	t.Run("VSO, VaultAuth without audiences", func(t *testing.T) {
		s, err := login("token-rotator-apps", app, testenv.TokenOptions{TTL: 10 * time.Minute}) // VSO's default tokenExpirationSeconds
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		readOutput(t, s.Auth.ClientToken)
	})

	t.Run("the role binds APP_AUDIENCE alone", func(t *testing.T) {
		if _, err := login("token-rotator-apps", app, testenv.TokenOptions{Audiences: []string{"vault"}}); err == nil || !strings.Contains(err.Error(), "invalid audience") {
			t.Errorf("an app's token for vault: %v, want invalid audience", err)
		}
		job := testenv.ServiceAccount{Namespace: "token-rotator", Name: "token-rotator"}
		if _, err := login("token-rotator", job, apiAudience); err == nil || !strings.Contains(err.Error(), "invalid audience") {
			t.Errorf("the job's token for the API server: %v, want invalid audience (the job's role binds AUDIENCE, vault)", err)
		}
		if _, err := login("token-rotator", job, testenv.TokenOptions{Audiences: []string{"vault"}}); err != nil {
			t.Errorf("the job's token for vault: %v", err)
		}
	})
}
