package deploy

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
	"token-rotator/internal/testenv"
	"token-rotator/oauth"
	"token-rotator/rotate"
	"token-rotator/vault"
)

// runSetup runs vault/setup.sh, the commands the README tells an admin to run, with the real vault
// CLI against v, as root, with env added.
func runSetup(t *testing.T, v *testenv.Vault, env ...string) {
	t.Helper()
	out, err := trySetup(append(setupEnv(t, v), env...))
	if err != nil {
		t.Fatalf("vault/setup.sh: %v\n%s", err, out)
	}
	t.Logf("vault/setup.sh:\n%s", out)
}

// setupEnv is the environment runSetup gives vault/setup.sh: the vault CLI on PATH, an empty HOME
// (no token from `vault login`), v's address and root token.
func setupEnv(t *testing.T, v *testenv.Vault) []string {
	t.Helper()
	bin := t.TempDir()
	if err := os.Symlink(testenv.RequireVault(t), filepath.Join(bin, "vault")); err != nil {
		t.Fatal(err)
	}
	return []string{
		"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"VAULT_ADDR=" + v.Addr,
		"VAULT_TOKEN=" + v.Token,
	}
}

// trySetup runs vault/setup.sh with exactly env (a later entry wins over an earlier one of the
// same name) and returns what it printed.
func trySetup(env []string) (string, error) {
	cmd := exec.Command("sh", "vault/setup.sh")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// tokenWith creates a token holding only the named policy (not even default: the policy files
// must be enough by themselves) and returns a client logged in with it.
func tokenWith(t *testing.T, v *testenv.Vault, policy string) *api.Client {
	t.Helper()
	return newToken(t, v, &api.TokenCreateRequest{Policies: []string{policy}, NoDefaultPolicy: true, TTL: "1h"})
}

// newToken creates a token as root and returns a client logged in with it.
func newToken(t *testing.T, v *testenv.Vault, req *api.TokenCreateRequest) *api.Client {
	t.Helper()
	s, err := v.Client.Auth().Token().Create(req)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(s.Auth.ClientToken)
	return c
}

// writeFile writes s to a new file only the owner can read, and returns its path.
func writeFile(t *testing.T, name, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// denied reports whether err is Vault's 403.
func denied(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}

// seed writes the credential secrets and one output of the shipped layout, as root.
func seed(t *testing.T, v *testenv.Vault) {
	t.Helper()
	ctx := context.Background()
	kv := v.Client.KVv2("secret")
	for path, data := range map[string]map[string]any{
		"stora/acme":                         {"client_id": "acme-id", "client_secret": "acme-secret"},
		"stora/partner":                      {"client_id": "p-id", "client_secret": "p-secret", "refresh_token": "p-rt"},
		"stora/fleet":                        {"client_id": "f-id", "client_secret": "f-secret"},
		"stora/fleet/connections/operator-1": {"refresh_token": "op1-rt"},
		"apps/acme":                          {"access_token": "at", "token_type": "Bearer", "expires_at": "2000-01-01T00:00:00Z"},
	} {
		if _, err := kv.Put(ctx, path, data); err != nil {
			t.Fatalf("seed %s: %v", path, err)
		}
	}
}

// TestPolicies applies vault/token-rotator.hcl and vault/apps.hcl (through setup.sh) to a real
// Vault and proves, with real reads and writes by a token holding each, what each allows and what
// it does not.
func TestPolicies(t *testing.T) {
	v := testenv.StartVault(t)
	runSetup(t, v)
	seed(t, v)
	ctx := context.Background()

	t.Run("job", func(t *testing.T) {
		c := tokenWith(t, v, "token-rotator")
		kv := c.KVv2("secret")
		allowed := map[string]func() error{
			"read a credential secret": func() error { _, err := kv.Get(ctx, "stora/partner"); return err },
			"read a connection":        func() error { _, err := kv.Get(ctx, "stora/fleet/connections/operator-1"); return err },
			"patch a credential secret (check-and-set)": func() error {
				s, err := kv.Get(ctx, "stora/partner")
				if err != nil {
					return err
				}
				_, err = kv.Patch(ctx, "stora/partner", map[string]any{"refresh_token": "p-rt-2"}, api.WithCheckAndSet(s.VersionMetadata.Version))
				return err
			},
			"patch a credential secret's metadata": func() error {
				return kv.PatchMetadata(ctx, "stora/partner", api.KVMetadataPatchInput{CustomMetadata: map[string]any{"rotator_status": "ok"}})
			},
			"list connections": func() error {
				s, err := c.Logical().List("secret/metadata/stora/fleet/connections")
				if err == nil && (s == nil || len(s.Data["keys"].([]any)) != 1) {
					return errors.New("listed nothing")
				}
				return err
			},
			"create an output": func() error {
				_, err := kv.Put(ctx, "apps/partner", map[string]any{"access_token": "x"}, api.WithCheckAndSet(0))
				return err
			},
			"update an output": func() error {
				_, err := kv.Put(ctx, "apps/acme", map[string]any{"access_token": "y"}, api.WithCheckAndSet(1))
				return err
			},
			"read an output": func() error { _, err := kv.Get(ctx, "apps/acme"); return err },
			"read a credential secret's KV settings (validate)": func() error {
				_, err := kv.GetMetadata(ctx, "stora/partner")
				return err
			},
			"read the mount's KV settings": func() error {
				_, err := c.Logical().Read("secret/config")
				return err
			},
			"read the mount's type (no grant needed)": func() error {
				s, err := c.Logical().Read("sys/internal/ui/mounts/secret")
				if err == nil && (s == nil || s.Data["type"] != "kv") {
					return errors.New("no mount type")
				}
				return err
			},
			"check its capabilities": func() error { _, err := c.Sys().CapabilitiesSelf("secret/data/stora/acme"); return err },
			"look itself up":         func() error { _, err := c.Auth().Token().LookupSelf(); return err },
			"renew itself":           func() error { _, err := c.Auth().Token().RenewSelf(3600); return err },
		}
		refused := map[string]func() error{
			"create a credential secret": func() error {
				_, err := kv.Put(ctx, "stora/new", map[string]any{"client_id": "x"})
				return err
			},
			"replace a credential secret whole (a put could bring back a deleted one)": func() error {
				_, err := kv.Put(ctx, "stora/acme", map[string]any{"client_id": "x"})
				return err
			},
			"delete a credential secret": func() error { return kv.Delete(ctx, "stora/acme") },
			"destroy a version":          func() error { return kv.Destroy(ctx, "stora/acme", []int{1}) },
			"delete metadata (all)":      func() error { return kv.DeleteMetadata(ctx, "stora/acme") },
			"delete an output":           func() error { return kv.Delete(ctx, "apps/acme") },
			"read a path outside stora/ and apps/": func() error {
				_, err := c.Logical().Read("secret/data/other")
				return err
			},
			"list apps/": func() error { _, err := c.Logical().List("secret/metadata/apps"); return err },
			"change the mount's KV settings": func() error {
				_, err := c.Logical().Write("secret/config", map[string]any{"max_versions": 1})
				return err
			},
			"write a policy": func() error {
				return c.Sys().PutPolicy("escalate", `path "*" { capabilities = ["sudo"] }`)
			},
			"create a token": func() error {
				_, err := c.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"token-rotator-apps"}})
				return err
			},
		}
		checkAll(t, allowed, refused)
	})

	t.Run("apps", func(t *testing.T) {
		c := tokenWith(t, v, "token-rotator-apps")
		kv := c.KVv2("secret")
		allowed := map[string]func() error{
			"read an output": func() error {
				s, err := kv.Get(ctx, "apps/acme")
				if err == nil && s.Data["access_token"] == nil {
					return errors.New("no access_token")
				}
				return err
			},
		}
		refused := map[string]func() error{
			"read a credential secret (client_secret)": func() error { _, err := kv.Get(ctx, "stora/acme"); return err },
			"read a refresh token":                     func() error { _, err := kv.Get(ctx, "stora/partner"); return err },
			"read a connection's refresh token": func() error {
				_, err := kv.Get(ctx, "stora/fleet/connections/operator-1")
				return err
			},
			"read an old version of a credential": func() error { _, err := kv.GetVersion(ctx, "stora/partner", 1); return err },
			"read credential metadata":            func() error { _, err := kv.GetMetadata(ctx, "stora/partner"); return err },
			"list connections":                    func() error { _, err := c.Logical().List("secret/metadata/stora/fleet/connections"); return err },
			"update an output": func() error {
				_, err := kv.Put(ctx, "apps/acme", map[string]any{"access_token": "forged"})
				return err
			},
			"create an output": func() error {
				_, err := kv.Put(ctx, "apps/new", map[string]any{"access_token": "forged"})
				return err
			},
			"patch an output": func() error {
				_, err := kv.Patch(ctx, "apps/acme", map[string]any{"access_token": "forged"})
				return err
			},
			"write a credential secret": func() error {
				_, err := kv.Put(ctx, "stora/acme", map[string]any{"client_secret": "x"})
				return err
			},
			"delete an output": func() error { return kv.Delete(ctx, "apps/acme") },
		}
		checkAll(t, allowed, refused)
	})

	// The project's own pre-flight, with a job token: the capabilities check passes for every
	// path the job writes, and fails, naming the capability, where the policy does not reach.
	t.Run("pre-flight", func(t *testing.T) {
		job := tokenWith(t, v, "token-rotator")
		store := openWithToken(t, v, job.Token())
		for _, w := range []struct {
			path           string
			exists, status bool
		}{
			{"stora/acme", true, true},
			{"stora/partner", true, true},
			{"stora/fleet/connections/operator-1", true, true},
			{"apps/acme", true, false},
			{"apps/fleet/operator-1", false, false},
		} {
			if err := store.Writable(ctx, w.path, w.exists, w.status); err != nil {
				t.Errorf("Writable(%s, exists=%v, status=%v): %v", w.path, w.exists, w.status, err)
			}
		}
		if err := store.Writable(ctx, "other/x", false, false); err == nil || !strings.Contains(err.Error(), "does not allow create") {
			t.Errorf("Writable(other/x) = %v, want a refusal naming create", err)
		}

		// As an app's login gives it: its policy and default (which allows the capabilities
		// check itself).
		appToken := newToken(t, v, &api.TokenCreateRequest{Policies: []string{"token-rotator-apps"}, TTL: "1h"})
		app := openWithToken(t, v, appToken.Token())
		if err := app.Writable(ctx, "apps/acme", true, false); err == nil || !strings.Contains(err.Error(), "does not allow update") {
			t.Errorf("apps token: Writable(apps/acme) = %v, want a refusal naming update", err)
		}
		if _, err := app.Read(ctx, "apps/acme"); err != nil {
			t.Errorf("apps token: Read(apps/acme): %v", err)
		}
		if _, err := app.Read(ctx, "stora/acme"); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("apps token: Read(stora/acme) = %v, want 403", err)
		}
	})
}

// TestShippedConfigRotatesWithJobPolicy runs a real pass of the ConfigMap's config.yaml, against the
// bundled Stora-compatible token endpoint, with nothing but the job policy: every client and
// connection is rotated (claim, grant, write-back, status), and an apps token reads the result.
// It proves the policy is enough, not just that it grants what the file says.
func TestShippedConfigRotatesWithJobPolicy(t *testing.T) {
	m := loadManifests(t)
	cfg := shippedConfig(t, m)
	v := testenv.StartVault(t)
	runSetup(t, v)
	stora := testenv.StartStora(t)
	ctx := context.Background()
	kv := v.Client.KVv2("secret")

	rts := map[string]string{}
	for _, c := range cfg.Clients {
		id, secret := stora.AddClient()
		data := map[string]any{"client_id": id, "client_secret": secret}
		if c.Grant == config.GrantAuthorizationCode && c.Connections == "" {
			data["refresh_token"] = stora.IssueRefreshToken(id, "")
			rts[c.Secret] = data["refresh_token"].(string)
		}
		if _, err := kv.Put(ctx, c.Secret, data); err != nil {
			t.Fatal(err)
		}
		if c.Connections != "" {
			for _, op := range []string{"operator-1", "eu/operator-2"} {
				rt := stora.IssueRefreshToken(id, "")
				rts[c.Connections+"/"+op] = rt
				if _, err := kv.Put(ctx, c.Connections+"/"+op, map[string]any{"refresh_token": rt}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	clients := append([]config.Client(nil), cfg.Clients...)
	for i := range clients {
		clients[i].TokenURL = stora.TokenURL
	}
	store := openWithToken(t, v, tokenWith(t, v, "token-rotator").Token())
	rot := &rotate.Rotator{
		Store: store, Tokens: &oauth.Client{}, Clients: clients, RenewBefore: cfg.RenewBefore,
		Concurrency: cfg.Concurrency, PassDeadline: cfg.PassDeadline,
	}
	results := rot.Pass(ctx)
	if len(results) != 4 {
		t.Errorf("%d results, want 4 (acme, partner, two connections)", len(results))
	}
	for _, r := range results {
		if r.Outcome != rotate.Rotated {
			t.Errorf("%s: %s %v", r.Client, r.Outcome, r.Err)
		}
	}

	app := tokenWith(t, v, "token-rotator-apps").KVv2("secret")
	outputs := []string{"apps/acme", "apps/partner", "apps/fleet/operator-1", "apps/fleet/eu/operator-2"}
	for _, p := range outputs {
		s, err := app.Get(ctx, p)
		if err != nil {
			t.Errorf("apps token: %s: %v", p, err)
			continue
		}
		if at, _ := s.Data["access_token"].(string); at == "" || s.Data["refresh_token"] != nil || s.Data["client_secret"] != nil {
			t.Errorf("%s: keys %v: want an access token and no credentials", p, keys(s.Data))
		}
	}
	for path, old := range rts {
		s, err := kv.Get(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if s.Data["refresh_token"] == old || s.Data["refresh_token"] == nil {
			t.Errorf("%s: refresh token not replaced", path)
		}
		if s.CustomMetadata["rotator_status"] != "ok" {
			t.Errorf("%s: rotator_status %v", path, s.CustomMetadata["rotator_status"])
		}
	}
}

// TestKubernetesAuth logs in the way the pods do: Vault's kubernetes auth method, configured and
// given its roles by vault/setup.sh, checks the service account JWT with the TokenReview API of a
// real kube-apiserver (over TLS, with the CA setup.sh hands to Vault), and the project's vault.Open
// logs in with the JWT from a file, as from the projected token in the pod. The API server's audit
// log shows the reviews.
func TestKubernetesAuth(t *testing.T) {
	k8s := testenv.StartKube(t, testenv.KubeOptions{})
	t.Run("token_reviewer_jwt", func(t *testing.T) { testKubernetesAuth(t, k8s) })
	t.Run("client JWT as reviewer", func(t *testing.T) { testClientJWTReviewer(t, k8s) })
}

// testClientJWTReviewer: without TOKEN_REVIEWER_JWT_FILE Vault calls TokenReview with the JWT
// being logged in with. The API server authenticates a caller only with a token for its own
// audiences (--api-audiences), and the job's projected token is for vault: the API server refuses
// Vault's call (401) even with deploy/auth-delegator.yaml applied, and the login is refused.
func testClientJWTReviewer(t *testing.T, k8s *testenv.Kube) {
	v := testenv.StartVault(t)
	runSetup(t, v, "KUBERNETES_HOST="+k8s.URL, "KUBERNETES_CA_CERT="+writeFile(t, "ca.crt", k8s.CACertPEM))
	k8s.Apply(t, readFile(t, "auth-delegator.yaml"), "")
	jwt := saToken(t, k8s, "token-rotator", "token-rotator", "vault")
	before := len(k8s.Reviews(t))
	_, err := vault.Open(context.Background(), config.Vault{
		Address: v.Addr, KVMount: "secret",
		Auth: config.Auth{Method: config.AuthKubernetes, Role: "token-rotator", Mount: "kubernetes", JWTFile: writeFile(t, "token", jwt)},
	})
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("login with the job's token for vault as its own reviewer: %v, want refused", err)
	}
	t.Logf("%s", strings.Join(strings.Fields(err.Error()), " "))
	reviews := k8s.Reviews(t)[before:]
	if len(reviews) != 1 || reviews[0].Code != http.StatusUnauthorized || reviews[0].Bearer != "" {
		t.Errorf("TokenReviews %+v: want one, refused 401 for its bearer's audience", reviews)
	}

	// What does work without a reviewer JWT: the job's token for the API server's own audience
	// (setup.sh's AUDIENCE and the projected token's set to it), with auth-delegator bound.
	v2 := testenv.StartVault(t)
	runSetup(t, v2, "KUBERNETES_HOST="+k8s.URL, "KUBERNETES_CA_CERT="+writeFile(t, "ca2.crt", k8s.CACertPEM), "AUDIENCE="+k8s.Issuer)
	seed(t, v2)
	store, err := vault.Open(context.Background(), config.Vault{
		Address: v2.Addr, KVMount: "secret",
		Auth: config.Auth{Method: config.AuthKubernetes, Role: "token-rotator", Mount: "kubernetes",
			JWTFile: writeFile(t, "token-api", saToken(t, k8s, "token-rotator", "token-rotator", k8s.Issuer))},
	})
	if err != nil {
		t.Fatalf("login with the job's token for the API server's audience as its own reviewer: %v", err)
	}
	if _, err := store.Read(context.Background(), "stora/acme"); err != nil {
		t.Errorf("read after that login: %v", err)
	}
}

func testKubernetesAuth(t *testing.T, k8s *testenv.Kube) {
	v := testenv.StartVault(t)
	runSetup(t, v, reviewerEnv(t, k8s)...)
	seed(t, v)
	ctx := context.Background()

	jobUser := username("token-rotator", "token-rotator")
	jobToken := func(audience string) string { return saToken(t, k8s, "token-rotator", "token-rotator", audience) }
	open := func(role, jwt string) (*vault.Store, error) {
		return vault.Open(ctx, config.Vault{
			Address: v.Addr, KVMount: "secret",
			Auth: config.Auth{Method: config.AuthKubernetes, Role: role, Mount: "kubernetes", JWTFile: writeFile(t, "token", jwt)},
		})
	}

	t.Run("job", func(t *testing.T) {
		store, err := open("token-rotator", jobToken("vault"))
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		reviews := k8s.Reviews(t)
		if last := reviews[len(reviews)-1]; !last.Authenticated || last.User != jobUser {
			t.Errorf("last TokenReview %+v, want %s authenticated", last, jobUser)
		}
		// The token holds the token-rotator policy: the job's pre-flight passes on what it
		// writes, and stops at what only the policy's absence would allow.
		for _, p := range []string{"stora/acme", "stora/fleet/connections/operator-1"} {
			if err := store.Writable(ctx, p, true, true); err != nil {
				t.Errorf("Writable(%s): %v", p, err)
			}
		}
		if err := store.Writable(ctx, "apps/fleet/operator-9", false, false); err != nil {
			t.Errorf("Writable(apps/fleet/operator-9): %v", err)
		}
		if err := store.Writable(ctx, "stora/new", false, true); err == nil {
			t.Error("Writable(stora/new, create): allowed; the job policy has no create on credentials")
		}
		if _, err := store.Read(ctx, "stora/partner"); err != nil {
			t.Errorf("Read(stora/partner): %v", err)
		}
		if paths, err := store.List(ctx, "stora/fleet/connections"); err != nil || len(paths) != 1 {
			t.Errorf("List(stora/fleet/connections) = %v, %v", paths, err)
		}
	})

	t.Run("app", func(t *testing.T) {
		store, err := open("token-rotator-apps", saToken(t, k8s, "default", "stora-client", "vault"))
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		if _, err := store.Read(ctx, "apps/acme"); err != nil {
			t.Errorf("Read(apps/acme): %v", err)
		}
		if _, err := store.Read(ctx, "stora/acme"); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("Read(stora/acme) = %v, want permission denied", err)
		}
		if err := store.Writable(ctx, "apps/acme", true, false); err == nil {
			t.Error("Writable(apps/acme): allowed for an app")
		}
		// An app's service account cannot take the job's role.
		if _, err := open("token-rotator", saToken(t, k8s, "default", "stora-client", "vault")); err == nil {
			t.Error("an app's service account logged in as token-rotator")
		}
	})

	// Every refusal is a 403 from the login, named as such, without the JWT. Those the claims
	// settle are refused by Vault before it asks the cluster; the others by TokenReview.
	// Revoked: the job's service account deleted (and made again: a new UID), as deleting a pod
	// revokes its projected token.
	revoked := jobToken("vault")
	k8s.DeleteServiceAccount(t, "token-rotator", "token-rotator")
	k8s.ServiceAccount(t, "token-rotator", "token-rotator")
	// Expired: TokenRequest grants no less than 10 minutes, so the token is signed here with the
	// API server's own key and issuer, exp a minute ago.
	expired := k8s.SignToken(t, k8s.ServiceAccountClaims(t, "token-rotator", "token-rotator", "vault", time.Now().Add(-time.Minute)))
	for _, c := range []struct {
		name     string
		jwt      string
		reviewed bool   // refused by TokenReview, not by Vault's own checks of the claims
		want     string // in the error
	}{
		{"a JWT the cluster never issued (another issuer's key)", k8s.ForgeToken(t, k8s.ServiceAccountClaims(t, "token-rotator", "token-rotator", "vault", time.Now().Add(time.Hour))), true, "permission denied"},
		{"a revoked JWT (its service account deleted)", revoked, true, "permission denied"},
		{"an expired JWT", expired, false, "token is expired"},
		{"a JWT for the Kubernetes API, not Vault", jobToken(""), false, "invalid audience"},
		{"a legacy secret-based JWT (no audience)", k8s.LegacyToken(t, "token-rotator", "token-rotator"), false, "invalid audience"},
		{"the right name in another namespace", saToken(t, k8s, "default", "token-rotator", "vault"), false, "namespace not authorized"},
		{"another service account", saToken(t, k8s, "token-rotator", "default", "vault"), false, "service account name not authorized"},
	} {
		t.Run("refused/"+c.name, func(t *testing.T) {
			before := len(k8s.Reviews(t))
			_, err := open("token-rotator", c.jwt)
			if err == nil {
				t.Fatal("logged in")
			}
			msg := err.Error()
			if !strings.Contains(msg, "vault kubernetes login") || !strings.Contains(msg, "403") || !strings.Contains(msg, c.want) {
				t.Errorf("error %q: want it to name the kubernetes login, 403 and %q", msg, c.want)
			}
			if strings.Contains(msg, c.jwt) || strings.Contains(msg, strings.Split(c.jwt, ".")[1]) {
				t.Error("the error holds the JWT")
			}
			reviews := k8s.Reviews(t)[before:]
			for _, r := range reviews {
				if r.Authenticated {
					t.Errorf("TokenReview authenticated %s", r.User)
				}
			}
			if c.reviewed != (len(reviews) > 0) {
				t.Errorf("%d TokenReview requests, want them only for tokens Vault cannot judge by their claims", len(reviews))
			}
			if c.reviewed && (len(reviews) != 1 || reviews[0].Bearer != "system:serviceaccount:vault:vault-auth") {
				t.Errorf("reviews %+v: want one, made with token_reviewer_jwt", reviews)
			}
			t.Logf("%s", strings.Join(strings.Fields(msg), " "))
		})
	}
	// The expired token is refused by Vault on its exp alone; the API server refuses it too.
	if st := k8s.TokenReview(t, expired, "vault"); st.Authenticated {
		t.Error("the API server authenticated the expired token")
	}

	// A long-running daemon whose Vault token is revoked logs in again with the JWT file as it is
	// now (the kubelet rotates the projected token).
	t.Run("login again with the rotated JWT", func(t *testing.T) {
		file := writeFile(t, "token", jobToken("vault"))
		store, err := vault.Open(ctx, config.Vault{
			Address: v.Addr, KVMount: "secret",
			Auth: config.Auth{Method: config.AuthKubernetes, Role: "token-rotator", Mount: "kubernetes", JWTFile: file},
		})
		if err != nil {
			t.Fatal(err)
		}
		// The old JWT revoked: its service account deleted and made again.
		k8s.DeleteServiceAccount(t, "token-rotator", "token-rotator")
		if err := os.WriteFile(file, []byte(jobToken("vault")), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := v.Client.Sys().RevokePrefix("auth/kubernetes/login"); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Read(ctx, "stora/acme"); err != nil {
			t.Errorf("Read after the Vault token was revoked: %v", err)
		}
	})
}

// TestAppRoleAuth logs in with AppRole, set up by vault/setup.sh (APPROLE=true), as token-rotator
// does outside Kubernetes.
func TestAppRoleAuth(t *testing.T) {
	v := testenv.StartVault(t)
	runSetup(t, v, "APPROLE=true")
	seed(t, v)
	ctx := context.Background()
	r, err := v.Client.Logical().Read("auth/approle/role/token-rotator/role-id")
	if err != nil {
		t.Fatal(err)
	}
	roleID := r.Data["role_id"].(string)
	s, err := v.Client.Logical().Write("auth/approle/role/token-rotator/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	secretID := s.Data["secret_id"].(string)
	open := func(secretID string) (*vault.Store, error) {
		return vault.Open(ctx, config.Vault{
			Address: v.Addr, KVMount: "secret",
			Auth: config.Auth{Method: config.AuthAppRole, RoleID: roleID, Mount: "approle", SecretIDFile: writeFile(t, "secret_id", secretID+"\n")},
		})
	}
	store, err := open(secretID)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	if err := store.Writable(ctx, "stora/acme", true, true); err != nil {
		t.Errorf("Writable(stora/acme): %v", err)
	}
	if err := store.Writable(ctx, "apps/new", false, false); err != nil {
		t.Errorf("Writable(apps/new): %v", err)
	}
	if _, err := store.Read(ctx, "stora/partner"); err != nil {
		t.Errorf("Read(stora/partner): %v", err)
	}
	// The secret_id is reusable: a second login (the job's re-login) works.
	if _, err := open(secretID); err != nil {
		t.Errorf("second login with the same secret_id: %v", err)
	}

	wrong := "8f2c1a6e-0000-4000-8000-000000000000"
	_, err = open(wrong)
	if err == nil {
		t.Fatal("logged in with a wrong secret_id")
	}
	if msg := err.Error(); !strings.Contains(msg, "vault approle login") || strings.Contains(msg, wrong) {
		t.Errorf("error %q: want it to name the approle login, without the secret_id", msg)
	} else {
		t.Logf("%s", strings.Join(strings.Fields(msg), " "))
	}
}

// openWithToken opens the store as the job does with auth method token and a token_file.
func openWithToken(t *testing.T, v *testenv.Vault, token string) *vault.Store {
	t.Helper()
	s, err := vault.Open(context.Background(), config.Vault{
		Address: v.Addr, KVMount: "secret",
		Auth: config.Auth{Method: config.AuthToken, TokenFile: writeFile(t, "token", token)},
	})
	if err != nil {
		t.Fatalf("vault.Open: %v", err)
	}
	return s
}

func checkAll(t *testing.T, allowed, refused map[string]func() error) {
	t.Helper()
	for name, op := range allowed {
		if err := op(); err != nil {
			t.Errorf("may %s: %v", name, err)
		}
	}
	for name, op := range refused {
		if err := op(); !denied(err) {
			t.Errorf("may not %s: got %v, want 403 permission denied", name, err)
		}
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestSetupBindsAnotherServiceAccount: setup.sh's SERVICE_ACCOUNT and AUDIENCE (what the Helm
// chart's NOTES print for a release of another name or audience) make the job's role bind that
// service account and audience: its token logs in, the default name's is refused.
func TestSetupBindsAnotherServiceAccount(t *testing.T) {
	v := testenv.StartVault(t)
	k8s, kubeEnv := startKube(t)
	runSetup(t, v, append(kubeEnv, "NAMESPACE=tools", "SERVICE_ACCOUNT=rotator-token-rotator", "AUDIENCE=https://vault.example")...)
	seed(t, v)
	login := func(serviceAccount, audience string) error {
		jwt := saToken(t, k8s, "tools", serviceAccount, audience)
		_, err := vault.Open(context.Background(), config.Vault{
			Address: v.Addr, KVMount: "secret",
			Auth: config.Auth{Method: config.AuthKubernetes, Role: "token-rotator", Mount: "kubernetes", JWTFile: writeFile(t, "token", jwt)},
		})
		return err
	}
	if err := login("rotator-token-rotator", "https://vault.example"); err != nil {
		t.Errorf("the named service account with the named audience: %v", err)
	}
	if err := login("token-rotator", "https://vault.example"); err == nil {
		t.Error("the default service account name logged in: the role binds more than SERVICE_ACCOUNT")
	}
	if err := login("rotator-token-rotator", "vault"); err == nil {
		t.Error("audience vault logged in: the role binds more than AUDIENCE")
	}
}
