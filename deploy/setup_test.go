package deploy

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/internal/testenv"
)

// TestSetupChecksBeforeWriting runs vault/setup.sh with one bad input at a time, everything else
// good, against a Vault where any write would show: secret/ unmounted, no auth method but token,
// no policy but default and root. Each run exits 2 with a message naming the variable and the fix,
// says nothing was written, and Vault's auth methods, mounts and policies are as they were.
func TestSetupChecksBeforeWriting(t *testing.T) {
	v := testenv.StartVault(t)
	k8s := testenv.StartKube(t, testenv.KubeOptions{})
	if err := v.Client.Sys().Unmount("secret"); err != nil {
		t.Fatal(err)
	}
	ca := writeFile(t, "ca.crt", k8s.CACertPEM)
	good := append(setupEnv(t, v), "KUBERNETES_HOST="+k8s.URL, "KUBERNETES_CA_CERT="+ca, "APPROLE=true")
	jwt := saToken(t, k8s, "vault", "vault-auth", "")

	// A token that may do every write but enable an auth method (no sudo on sys/auth/kubernetes):
	// the script as it was wrote the mount and the policies with it, then stopped.
	lines := strings.Split(leastSetupPolicy, "\n")
	for i, l := range lines {
		if strings.Contains(l, `"sys/auth/kubernetes"`) {
			lines[i] = strings.Replace(l, `, "sudo"`, "", 1)
		}
	}
	noSudo := tokenFor(t, v, strings.Join(lines, "\n"))
	revoked := tokenFor(t, v, leastSetupPolicy)
	if err := v.Client.Auth().Token().RevokeTree(revoked); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name  string
		env   []string // over good
		unset []string
		want  []string // in the message: the variable, and the fix
	}{
		{"KUBERNETES_HOST without KUBERNETES_CA_CERT", nil, []string{"KUBERNETES_CA_CERT"},
			[]string{"KUBERNETES_HOST is set but KUBERNETES_CA_CERT is not", "certificate-authority-data}' | base64 -d > k8s-ca.crt"}},
		{"KUBERNETES_CA_CERT names no file", []string{"KUBERNETES_CA_CERT=" + filepath.Join(t.TempDir(), "ca.crt")}, nil,
			[]string{"KUBERNETES_CA_CERT=", "no such file"}},
		{"KUBERNETES_CA_CERT holds the kubeconfig's base64, not PEM", []string{"KUBERNETES_CA_CERT=" + writeFile(t, "ca.b64", base64.StdEncoding.EncodeToString([]byte(k8s.CACertPEM)))}, nil,
			[]string{"KUBERNETES_CA_CERT=", "is not a PEM certificate", "base64 -d"}},
		{"KUBERNETES_CA_CERT with PEM markers around no certificate", []string{"KUBERNETES_CA_CERT=" + writeFile(t, "bad.crt", "-----BEGIN CERTIFICATE-----\nnot base64 at all!!\n-----END CERTIFICATE-----\n")}, nil,
			[]string{"KUBERNETES_CA_CERT=", "no certificate between them"}},
		{"KUBERNETES_CA_CERT without KUBERNETES_HOST", nil, []string{"KUBERNETES_HOST"},
			[]string{"KUBERNETES_CA_CERT is set but KUBERNETES_HOST is not", "set KUBERNETES_HOST to the API server's URL"}},
		{"KUBERNETES_HOST without a scheme", []string{"KUBERNETES_HOST=" + strings.TrimPrefix(k8s.URL, "https://")}, nil,
			[]string{"KUBERNETES_HOST=127.0.0.1:", "is not a URL", "KUBERNETES_HOST=https://"}},
		{"TOKEN_REVIEWER_JWT_FILE names no file", []string{"TOKEN_REVIEWER_JWT_FILE=" + filepath.Join(t.TempDir(), "reviewer.jwt")}, nil,
			[]string{"TOKEN_REVIEWER_JWT_FILE=", "no such file"}},
		{"TOKEN_REVIEWER_JWT_FILE holds no JWT", []string{"TOKEN_REVIEWER_JWT_FILE=" + writeFile(t, "reviewer.yaml", "apiVersion: v1\nkind: Secret\n")}, nil,
			[]string{"TOKEN_REVIEWER_JWT_FILE=", "does not hold a JWT", "system:auth-delegator"}},
		{"TOKEN_REVIEWER_JWT_FILE without KUBERNETES_HOST", []string{"TOKEN_REVIEWER_JWT_FILE=" + writeFile(t, "reviewer.jwt", jwt)}, []string{"KUBERNETES_HOST", "KUBERNETES_CA_CERT"},
			[]string{"TOKEN_REVIEWER_JWT_FILE is set but KUBERNETES_HOST is not"}},
		{"APP_SERVICE_ACCOUNTS with a space", []string{"APP_SERVICE_ACCOUNTS=stora-client, billing"}, nil,
			[]string{`APP_SERVICE_ACCOUNTS="stora-client, billing" contains a space`, "APP_SERVICE_ACCOUNTS=a,b"}},
		{"APP_SERVICE_ACCOUNTS in capitals", []string{"APP_SERVICE_ACCOUNTS=Stora-Client"}, nil,
			[]string{`APP_SERVICE_ACCOUNTS="Stora-Client"`, "lowercase"}},
		{"APP_NAMESPACES with a trailing comma", []string{"APP_NAMESPACES=default,"}, nil,
			[]string{`APP_NAMESPACES="default," has an empty name`}},
		{"APP_NAMESPACES with a dot", []string{"APP_NAMESPACES=team.a"}, nil,
			[]string{`APP_NAMESPACES: "team.a" is not a namespace name`}},
		{"APP_AUDIENCE with two audiences", []string{"APP_AUDIENCE=vault," + testenv.DefaultAudience}, nil,
			[]string{"APP_AUDIENCE=", "binds one audience", "APP_AUDIENCE=vault"}},
		{"SERVICE_ACCOUNT with an underscore", []string{"SERVICE_ACCOUNT=token_rotator"}, nil,
			[]string{`SERVICE_ACCOUNT: "token_rotator" is not a service account name`}},
		{"APPROLE neither true nor false", []string{"APPROLE=yes"}, nil,
			[]string{"APPROLE=yes", "APPROLE=true"}},
		{"no vault CLI", []string{"PATH=" + pathWithout(t, "vault")}, nil,
			[]string{"the vault CLI is not on PATH"}},
		{"VAULT_ADDR unset", nil, []string{"VAULT_ADDR"},
			[]string{"VAULT_ADDR is not set", "export VAULT_ADDR=", "https://127.0.0.1:8200"}},
		{"Vault unreachable", []string{fmt.Sprintf("VAULT_ADDR=http://127.0.0.1:%d", testenv.FreePort(t))}, nil,
			[]string{"cannot reach Vault at VAULT_ADDR=http://127.0.0.1:", "connection refused"}},
		{"VAULT_TOKEN unset", nil, []string{"VAULT_TOKEN"},
			[]string{"VAULT_TOKEN is not set", "export VAULT_TOKEN="}},
		{"VAULT_TOKEN revoked", []string{"VAULT_TOKEN=" + revoked}, nil,
			[]string{"refuses VAULT_TOKEN", "permission denied"}},
		{"VAULT_TOKEN may not enable an auth method", []string{"VAULT_TOKEN=" + noSudo}, nil,
			[]string{"VAULT_TOKEN may not sudo on sys/auth/kubernetes"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := slices.DeleteFunc(append(slices.Clone(good), c.env...), func(e string) bool {
				name, _, _ := strings.Cut(e, "=")
				return slices.Contains(c.unset, name)
			})
			before := vaultState(t, v)
			out, err := trySetup(env)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Errorf("exit: %v, want 2\n%s", err, out)
			}
			for _, w := range append(c.want, "nothing was written to Vault") {
				if !strings.Contains(out, w) {
					t.Errorf("output does not say %q:\n%s", w, out)
				}
			}
			if after := vaultState(t, v); after != before {
				t.Errorf("Vault changed:\nbefore: %s\nafter:  %s", before, after)
			}
			for _, secret := range []string{revoked, noSudo, jwt} {
				if strings.Contains(out, secret) {
					t.Error("the output holds a token")
				}
			}
			t.Logf("%s", out)
		})
	}
}

// TestSetupSealedVault: a sealed Vault is named as such, and nothing is attempted.
func TestSetupSealedVault(t *testing.T) {
	v := testenv.StartVault(t)
	env := setupEnv(t, v)
	if err := v.Client.Sys().Seal(); err != nil {
		t.Fatal(err)
	}
	out, err := trySetup(env)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(out, "is sealed: unseal it") {
		t.Errorf("exit %v, output:\n%s\nwant 2 and a message that Vault is sealed", err, out)
	}
}

// leastSetupPolicy grants what vault/setup.sh's capability checks (its `need` lines) ask for, with
// Kubernetes auth and AppRole, and nothing else.
const leastSetupPolicy = `
path "sys/mounts/secret"                       { capabilities = ["read", "update"] }
path "sys/policies/acl/token-rotator"          { capabilities = ["update"] }
path "sys/policies/acl/token-rotator-apps"     { capabilities = ["update"] }
path "sys/auth/kubernetes"                     { capabilities = ["read", "update", "sudo"] }
path "auth/kubernetes/config"                  { capabilities = ["update"] }
path "auth/kubernetes/role/token-rotator"      { capabilities = ["create", "update"] }
path "auth/kubernetes/role/token-rotator-apps" { capabilities = ["create", "update"] }
path "sys/auth/approle"                        { capabilities = ["read", "update", "sudo"] }
path "auth/approle/role/token-rotator"         { capabilities = ["create", "update"] }
`

// TestSetupWithLeastToken: a token holding only what setup.sh's checks ask for (and the default
// policy, for sys/capabilities-self) sets up Vault from nothing, and again over what it made: the
// checks ask for no more than the writes need. TestSetupChecksBeforeWriting shows one grant less
// is refused.
func TestSetupWithLeastToken(t *testing.T) {
	v := testenv.StartVault(t)
	k8s := testenv.StartKube(t, testenv.KubeOptions{})
	if err := v.Client.Sys().Unmount("secret"); err != nil {
		t.Fatal(err)
	}
	token := tokenFor(t, v, leastSetupPolicy)
	env := append(setupEnv(t, v), "VAULT_TOKEN="+token,
		"KUBERNETES_HOST="+k8s.URL, "KUBERNETES_CA_CERT="+writeFile(t, "ca.crt", k8s.CACertPEM), "APPROLE=true")
	for _, run := range []string{"from nothing", "again"} {
		if out, err := trySetup(env); err != nil {
			t.Fatalf("%s: %v\n%s", run, err, out)
		}
	}
	if got, want := vaultState(t, v), "auth: approle/=approle kubernetes/=kubernetes token/=token; mounts: cubbyhole/=cubbyhole identity/=identity secret/=kv:2 sys/=system; policies: default root setup token-rotator token-rotator-apps"; got != want {
		t.Errorf("Vault holds\n%s\nwant\n%s", got, want)
	}
}

// TestSetupAppAudience: with APP_AUDIENCE set to the API server's own audience (its service
// account issuer), an app logs in as Vault Agent and VSO do in their default set-ups, neither of
// which asks for an audience: Vault Agent's kubernetes auto-auth sends the pod's automounted token
// (run here, the real agent, with token_path pointing at a copy of it); VSO sends a token from a
// TokenRequest with a VaultAuth's `audiences`, none by default. Each reads an app's output. A token
// for `vault` is then refused by the apps' role, and the job's role still binds AUDIENCE.
func TestSetupAppAudience(t *testing.T) {
	v := testenv.StartVault(t)
	k8s, kubeEnv := startKube(t)
	runSetup(t, v, append(kubeEnv, "APP_AUDIENCE="+k8s.Issuer)...)
	seed(t, v)
	ctx := context.Background()
	k8s.ServiceAccount(t, "default", "stora-client")
	k8s.ServiceAccount(t, "token-rotator", "token-rotator")
	// No audience asked for: the API server's own, k8s.Issuer. VSO's default tokenExpirationSeconds
	// is 10 minutes, the least TokenRequest grants.
	appToken := func(audience string) string {
		return k8s.TokenRequest(t, "default", "stora-client", audience, 10*time.Minute)
	}
	jobToken := func(audience string) string {
		return k8s.TokenRequest(t, "token-rotator", "token-rotator", audience, time.Hour)
	}

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
	login := func(role, jwt string) (*api.Secret, error) {
		return v.Client.Logical().Write("auth/kubernetes/login", map[string]any{"role": role, "jwt": jwt})
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
`, writeFile(t, "token", appToken("")), sink))
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
		s, err := login("token-rotator-apps", appToken(""))
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		readOutput(t, s.Auth.ClientToken)
	})

	t.Run("the role binds APP_AUDIENCE alone", func(t *testing.T) {
		if _, err := login("token-rotator-apps", appToken("vault")); err == nil || !strings.Contains(err.Error(), "invalid audience") {
			t.Errorf("an app's token for vault: %v, want invalid audience", err)
		}
		if _, err := login("token-rotator", jobToken("")); err == nil || !strings.Contains(err.Error(), "invalid audience") {
			t.Errorf("the job's token for the API server: %v, want invalid audience (the job's role binds AUDIENCE, vault)", err)
		}
		if _, err := login("token-rotator", jobToken("vault")); err != nil {
			t.Errorf("the job's token for vault: %v", err)
		}
	})
}

// tokenFor creates, as root, a token holding policy (written as a policy of its own) and default.
func tokenFor(t *testing.T, v *testenv.Vault, policy string) string {
	t.Helper()
	name := fmt.Sprintf("setup-%d", time.Now().UnixNano())
	if err := v.Client.Sys().PutPolicy(name, policy); err != nil {
		t.Fatal(err)
	}
	s, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{name}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	return s.Auth.ClientToken
}

// vaultState lists what setup.sh writes: auth methods, mounts (type and KV version) and policies,
// test policies (setup-*) named setup.
func vaultState(t *testing.T, v *testenv.Vault) string {
	t.Helper()
	auths, err := v.Client.Sys().ListAuth()
	if err != nil {
		t.Fatal(err)
	}
	mounts, err := v.Client.Sys().ListMounts()
	if err != nil {
		t.Fatal(err)
	}
	policies, err := v.Client.Sys().ListPolicies()
	if err != nil {
		t.Fatal(err)
	}
	var a, m, p []string
	for path, o := range auths {
		a = append(a, path+"="+o.Type)
	}
	for path, o := range mounts {
		s := path + "=" + o.Type
		if o.Options["version"] != "" {
			s += ":" + o.Options["version"]
		}
		m = append(m, s)
	}
	for _, name := range policies {
		if strings.HasPrefix(name, "setup-") {
			name = "setup"
		}
		if !slices.Contains(p, name) {
			p = append(p, name)
		}
	}
	slices.Sort(a)
	slices.Sort(m)
	slices.Sort(p)
	return "auth: " + strings.Join(a, " ") + "; mounts: " + strings.Join(m, " ") + "; policies: " + strings.Join(p, " ")
}

// pathWithout is $PATH without the directories that hold an executable named name.
func pathWithout(t *testing.T, name string) string {
	t.Helper()
	var dirs []string
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		if fi, err := os.Stat(filepath.Join(d, name)); err == nil && fi.Mode()&0o111 != 0 {
			continue
		}
		dirs = append(dirs, d)
	}
	return strings.Join(dirs, string(os.PathListSeparator))
}
