package apptoken

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/internal/testenv"
)

const appPolicy = `path "secret/data/apps/acme" { capabilities = ["read"] }`

// approle enables the approle auth method with a role "app" (the app's policy, tokens living
// ttl) and returns Open's Login for it.
func (w *world) approle(ttl string) *Login {
	w.t.Helper()
	c := w.vault.Client
	if err := c.Sys().PutPolicy("app", appPolicy); err != nil {
		w.t.Fatal(err)
	}
	if err := c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		w.t.Fatal(err)
	}
	if _, err := c.Logical().Write("auth/approle/role/app", map[string]any{
		"token_policies": "app", "token_ttl": ttl, "token_max_ttl": ttl}); err != nil {
		w.t.Fatal(err)
	}
	r, err := c.Logical().Read("auth/approle/role/app/role-id")
	if err != nil {
		w.t.Fatal(err)
	}
	sid, err := c.Logical().Write("auth/approle/role/app/secret-id", nil)
	if err != nil {
		w.t.Fatal(err)
	}
	file := filepath.Join(w.t.TempDir(), "secret-id")
	if err := os.WriteFile(file, []byte(sid.Data["secret_id"].(string)), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return &Login{Method: MethodAppRole, RoleID: r.Data["role_id"].(string), SecretIDFile: file}
}

// appToken is a Vault token with the app's policy.
func (w *world) appToken(ttl string) string {
	w.t.Helper()
	if err := w.vault.Client.Sys().PutPolicy("app", appPolicy); err != nil {
		w.t.Fatal(err)
	}
	s, err := w.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"app"}, TTL: ttl, NoDefaultPolicy: true})
	if err != nil {
		w.t.Fatal(err)
	}
	return s.Auth.ClientToken
}

// rotateInVault writes a new token to apps/acme, as the job's next rotation would, and checks
// that s gives it once MaxAge has passed: which it cannot without a Vault token that works.
func (w *world) rotateInVault(s *Source, rt string) string {
	w.t.Helper()
	next, rt2 := w.refresh(rt)
	w.store("apps/acme", next, time.Now().Add(2*time.Hour))
	time.Sleep(150 * time.Millisecond) // MaxAge 100 ms: the next call starts a read
	if !eventually(w.t, s, next) {
		w.t.Fatal("after the Vault token was refused: still the old access token 5 s on (no new login?)")
	}
	return rt2
}

var fast = Options{Path: "apps/acme", MaxAge: 100 * time.Millisecond, MinReadInterval: 10 * time.Millisecond}

// TestOpenLogsInAgainWhenVaultRefusesTheToken: a Source made by Open keeps reading when its
// Vault token is revoked, and when it expires (a 2-second token; Kubernetes roles give 1-hour
// ones): it logs in again, as token-rotator does. With kubernetes it reads the service account
// token file again, which the kubelet rewrites.
func TestOpenLogsInAgainWhenVaultRefusesTheToken(t *testing.T) {
	t.Parallel()
	revoke := func(w *world, prefix string) {
		if _, err := w.vault.Client.Logical().Write("sys/leases/revoke-prefix/"+prefix, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		// setup returns Open's Login, and what makes Vault refuse the token it gives
		setup func(w *world) (*Login, func())
	}{
		{"approle, revoked", func(w *world) (*Login, func()) {
			return w.approle("1h"), func() { revoke(w, "auth/approle/login") }
		}},
		{"approle, expired", func(w *world) (*Login, func()) {
			return w.approle("2s"), func() { time.Sleep(2500 * time.Millisecond) }
		}},
		{"kubernetes, revoked", func(w *world) (*Login, func()) {
			login, kubelet := w.kubernetes()
			return login, func() { revoke(w, "auth/kubernetes/login"); kubelet() }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			at, rt := w.pair()
			w.store("apps/acme", at, time.Now().Add(2*time.Hour))
			opts := fast
			login, refuse := tc.setup(w)
			opts.Address, opts.Login = w.vault.Addr, login
			s, err := Open(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			if token(t, s) != at {
				t.Fatal("wrong token")
			}
			refuse()
			w.rotateInVault(s, rt)
		})
	}
}

// kubernetes enables the kubernetes auth method against a real kube-apiserver, its reviewer a
// service account vault/vault-auth bound to system:auth-delegator, with a role "acme" for the
// service account apps/acme (the app's policy, 1-hour tokens). It returns Open's Login, with a
// service account token file from TokenRequest, and the kubelet's rotation of that file: the old
// JWT revoked (its service account deleted and made again), a new one written.
func (w *world) kubernetes() (*Login, func()) {
	w.t.Helper()
	k8s := testenv.StartKube(w.t, testenv.KubeOptions{})
	reviewer := k8s.ReviewerToken(w.t)
	c := w.vault.Client
	if err := c.Sys().PutPolicy("app", appPolicy); err != nil {
		w.t.Fatal(err)
	}
	if err := c.Sys().EnableAuthWithOptions("kubernetes", &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		w.t.Fatal(err)
	}
	if _, err := c.Logical().Write("auth/kubernetes/config", map[string]any{
		"kubernetes_host": k8s.URL, "kubernetes_ca_cert": k8s.CACertPEM, "disable_local_ca_jwt": true,
		"token_reviewer_jwt": reviewer}); err != nil {
		w.t.Fatal(err)
	}
	if _, err := c.Logical().Write("auth/kubernetes/role/acme", map[string]any{
		"bound_service_account_names": "acme", "bound_service_account_namespaces": "apps",
		"audience": "vault", "token_policies": "app", "token_ttl": "1h"}); err != nil {
		w.t.Fatal(err)
	}
	file := filepath.Join(w.t.TempDir(), "token")
	jwt := ""
	kubelet := func() {
		if jwt != "" {
			k8s.DeleteServiceAccount(w.t, "apps", "acme")
		}
		k8s.ServiceAccount(w.t, "apps", "acme")
		jwt = k8s.TokenRequest(w.t, "apps", "acme", "vault", time.Hour)
		if err := os.WriteFile(file, []byte(jwt), 0o600); err != nil {
			w.t.Fatal(err)
		}
	}
	kubelet()
	return &Login{Method: MethodKubernetes, Role: "acme", JWTFile: file}, kubelet
}

// TestOpenReadsTheTokenFileAgain: with method token and a token file (a Vault Agent sink), a
// refused Vault token is replaced by what the file holds now.
func TestOpenReadsTheTokenFileAgain(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	at, rt := w.pair()
	w.store("apps/acme", at, time.Now().Add(2*time.Hour))
	file := filepath.Join(t.TempDir(), "vault-token")
	first := w.appToken("1h")
	if err := os.WriteFile(file, []byte(first+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := fast
	opts.Address, opts.Login = w.vault.Addr, &Login{Method: MethodToken, TokenFile: file}
	s, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	token(t, s)
	if err := w.vault.Client.Auth().Token().RevokeTree(first); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(w.appToken("1h")), 0o600); err != nil {
		t.Fatal(err)
	}
	w.rotateInVault(s, rt)
}

// TestCallersClientIsTheCallersToKeep: a Source from New never logs in; once Vault refuses the
// client's token, reads fail with Vault's 403, naming the path (a cached token that has not
// expired is still given meanwhile).
func TestCallersClientIsTheCallersToKeep(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	at, _ := w.pair()
	w.store("apps/acme", at, time.Now().Add(2*time.Hour))
	vt := w.appToken("1h")
	c, _ := w.client(vt)
	opts := fast
	s, err := New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	cold, err := New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	token(t, s)
	if err := w.vault.Client.Auth().Token().RevokeTree(vt); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	if token(t, s) != at {
		t.Error("Vault refused the client's token: want the cached token while it lasts")
	}
	_, err = cold.Token()
	if err == nil || !strings.Contains(err.Error(), "secret/apps/acme") || !strings.Contains(err.Error(), "403") {
		t.Errorf("no cached token, client's token revoked: error %v, want Vault's 403 naming secret/apps/acme", err)
	}
	if c.Token() != vt {
		t.Error("the caller's client was logged in again")
	}
}

// TestOpenWithVaultTokenOnly: with no Login, Open logs in with VAULT_TOKEN (and VAULT_ADDR) from
// the environment; once Vault refuses that token nothing can replace it: a Source holding a token
// keeps giving it while it lasts, and one holding none fails with Vault's 403, naming the path.
func TestOpenWithVaultTokenOnly(t *testing.T) {
	w := newWorld(t)
	at, _ := w.pair()
	w.store("apps/acme", at, time.Now().Add(2*time.Hour))
	vt := w.appToken("1h")
	t.Setenv("VAULT_ADDR", w.vault.Addr)
	t.Setenv("VAULT_TOKEN", vt)
	warm, err := Open(context.Background(), fast)
	if err != nil {
		t.Fatal(err)
	}
	cold, err := Open(context.Background(), fast)
	if err != nil {
		t.Fatal(err)
	}
	if token(t, warm) != at {
		t.Fatal("wrong token")
	}
	if err := w.vault.Client.Auth().Token().RevokeTree(vt); err != nil {
		t.Fatal(err)
	}
	w.store("apps/acme", "another", time.Now().Add(2*time.Hour))
	time.Sleep(150 * time.Millisecond)
	if tok, err := warm.Token(); err != nil || tok.AccessToken != at {
		t.Errorf("VAULT_TOKEN revoked: %v; want the cached token while it lasts", err)
	}
	_, err = cold.Token()
	if err == nil || !strings.Contains(err.Error(), "secret/apps/acme") || !strings.Contains(err.Error(), "403") {
		t.Errorf("VAULT_TOKEN revoked, no cached token: error %v, want Vault's 403 naming secret/apps/acme", err)
	}
}

// TestOpenWithoutAVaultToken: with method token, no VAULT_TOKEN and no TokenFile, Open fails
// saying what to set, in words that fit an app (not the job's config key).
func TestOpenWithoutAVaultToken(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "")
	_, err := Open(context.Background(), Options{Path: "apps/acme", Address: "http://127.0.0.1:1"})
	if err == nil || !strings.Contains(err.Error(), "set VAULT_TOKEN or a token file") {
		t.Errorf("Open with no Vault token: %v, want it to say: set VAULT_TOKEN or a token file", err)
	}
}

// TestPolicyRefusalIsNotALogin: a Source made by Open with AppRole, whose policy does not allow
// read on the path it is given, does not log in again on each read (Vault answers 403 to a
// revoked token and to a policy's refusal alike): 20 reads cost no login after Open's, and the
// error names the path and the policy path to grant, on KV v2 and KV v1. Without Vault's default
// policy the token cannot be looked up, and each refused read costs a login.
func TestPolicyRefusalIsNotALogin(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	if err := w.vault.Client.Sys().Mount("kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	login := w.approle("1h") // policy: read on secret/data/apps/acme only
	front, logins := loginCounter(t, w.vault.Addr, "/v1/auth/approle/login")
	for _, tc := range []struct {
		mount, path string
		version     int
		grant       string
	}{
		{"secret", "apps/other", 0, "the Vault policy must allow read on secret/data/apps/other"},
		{"kv1", "apps/acme", 1, "the Vault policy must allow read on kv1/apps/acme"},
	} {
		before := logins()
		opts := fast
		opts.Mount, opts.Path, opts.KVVersion, opts.Address, opts.Login = tc.mount, tc.path, tc.version, front, login
		s, err := Open(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		var last error
		for range 20 {
			_, last = s.Token()
			time.Sleep(15 * time.Millisecond) // more than MinReadInterval: each call reads
		}
		t.Logf("%s/%s: %v", tc.mount, tc.path, last)
		if got := logins() - before; got != 1 {
			t.Errorf("%s/%s: %d logins for Open and 20 refused reads, want 1 (Open's)", tc.mount, tc.path, got)
		}
		if last == nil || !errors.Is(last, ErrPermissionDenied) || !strings.Contains(last.Error(), tc.mount+"/"+tc.path+":") ||
			!strings.Contains(last.Error(), tc.grant) {
			t.Errorf("error %v, want ErrPermissionDenied naming %s/%s and saying %q", last, tc.mount, tc.path, tc.grant)
		}
	}

	// A role with token_no_default_policy gives tokens that may not look themselves up: each
	// refused read costs a login, and the error still says what to grant.
	if _, err := w.vault.Client.Logical().Write("auth/approle/role/app", map[string]any{"token_no_default_policy": true}); err != nil {
		t.Fatal(err)
	}
	before := logins()
	opts := fast
	opts.Path, opts.Address, opts.Login = "apps/other", front, login
	s, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	var last error
	for range 5 {
		_, last = s.Token()
		time.Sleep(15 * time.Millisecond)
	}
	if got := logins() - before; got != 6 {
		t.Errorf("no default policy: %d logins for Open and 5 refused reads, want 6", got)
	}
	if !errors.Is(last, ErrPermissionDenied) || !strings.Contains(last.Error(), "the Vault policy must allow read on secret/data/apps/other") {
		t.Errorf("no default policy: error %v, want ErrPermissionDenied saying what to grant", last)
	}
}

// loginCounter is a pass-through proxy in front of Vault at addr that counts the requests to
// path; it returns the proxy's address and the count so far.
func loginCounter(t *testing.T, addr, path string) (string, func() int) {
	t.Helper()
	target, err := url.Parse(addr)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path {
			n.Add(1)
		}
		proxy.ServeHTTP(rw, r)
	}))
	t.Cleanup(front.Close)
	return front.URL, func() int { return int(n.Load()) }
}
