//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"token-rotator/internal/testenv"
)

// TestRotatesViaIssuer runs the built job with a client that names an issuer, not a token_url:
// the job reads the issuer's RFC 8414 metadata (at the path-inserted well-known URL, from a
// loopback handler pointing at the fake token endpoint) and rotates through the token_endpoint it
// names. An issuer whose metadata is absent fails its client, before any token request, and only
// it: the other client rotates, and the exit code is 1.
func TestRotatesViaIssuer(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var seen []string
	var issuer string
	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path)
		mu.Unlock()
		if r.URL.Path != "/.well-known/oauth-authorization-server/tenant" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"issuer":"` + issuer + `","token_endpoint":"` + e.stora.TokenURL + `","authorization_endpoint":"` + e.stora.BaseURL + `/oauth2/authorize"}`))
	}))
	t.Cleanup(meta.Close)
	issuer = meta.URL + "/tenant"

	id, secret := e.stora.AddClient()
	e.put("idp/acme", map[string]any{"client_id": id, "client_secret": secret})
	e.put("idp/other", map[string]any{"client_id": id, "client_secret": secret})
	cfg := writeConfig(t, "issuer: "+issuer+"\nclients:\n"+
		"  - {name: acme, grant: client_credentials, scope: public.contact:read, secret: idp/acme, output: idp/acme-token}\n"+
		"  - {name: other, grant: client_credentials, scope: public.contact:read, secret: idp/other, output: idp/other-token}\n")
	code, out := runJob(t, "--config", cfg, "--once")
	if code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, out)
	}
	for _, p := range []string{"idp/acme-token", "idp/other-token"} {
		if st := e.tokenInfo(str(e.get(p), "access_token")); st != 200 {
			t.Errorf("%s: the token endpoint answered %d to the stored access token, want 200", p, st)
		}
	}
	if n := len(e.stora.Requests()); n != 2 {
		t.Errorf("token endpoint saw %d requests, want 2", n)
	}
	mu.Lock()
	asked := append([]string(nil), seen...)
	mu.Unlock()
	if len(asked) != 1 {
		t.Errorf("metadata requests %v, want one for the pass (two clients, one issuer)", asked)
	}
	assertNoSecrets(t, out, secret)

	// A client whose issuer publishes no metadata fails before anything is spent; the other runs.
	e.put("idp/lost", map[string]any{"client_id": id, "client_secret": secret})
	cfg = writeConfig(t, "token_url: "+e.stora.TokenURL+"\nclients:\n"+
		"  - {name: lost, grant: client_credentials, scope: public.contact:read, secret: idp/lost, output: idp/lost-token, issuer: "+meta.URL+"/nowhere}\n"+
		"  - {name: acme, grant: client_credentials, scope: public.contact:read, secret: idp/acme, output: idp/acme-token}\n")
	before := len(e.stora.Requests())
	code, out = runJob(t, "--config", cfg, "--once", "--force")
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	if n := len(e.stora.Requests()) - before; n != 1 {
		t.Errorf("token endpoint saw %d requests, want 1 (acme's only)", n)
	}
	if e.get("idp/acme-token").VersionMetadata.Version != 2 || !e.absent("idp/lost-token") {
		t.Errorf("want acme rotated again and nothing written for lost")
	}
	want := "discovery: no authorization server metadata for issuer " + meta.URL + "/nowhere: 404 Not Found at both"
	if !strings.Contains(out, want) || !strings.Contains(out, `"client":"lost","outcome":"failed"`) {
		t.Errorf("output does not fail lost with %q:\n%s", want, out)
	}
}

// runJob runs the built job with args and returns its exit code and its output.
func runJob(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(testenv.JobBinary(t), append(args, "--log-format", "json")...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), buf.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, buf.String()
}

func (e *env) absent(path string) bool {
	_, err := e.vault.Client.KVv2("secret").Get(context.Background(), path)
	return err != nil
}

// TestAuthorizeAtTheIssuersAuthorizationEndpoint: a client named by its issuer sends its operator
// to the authorization_endpoint of the issuer's metadata, and exchanges the code at the metadata's
// token_endpoint.
func TestAuthorizeAtTheIssuersAuthorizationEndpoint(t *testing.T) {
	e := newEnv(t)
	var issuer string
	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/oauth-authorization-server" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"issuer":"` + issuer + `","token_endpoint":"` + e.stora.TokenURL + `","authorization_endpoint":"` + e.stora.BaseURL + `/sso/approve"}`))
	}))
	t.Cleanup(meta.Close)
	issuer = meta.URL
	id, secret := e.stora.AddClient()
	e.put("idp/partner", map[string]any{"client_id": id, "client_secret": secret})
	cfg := e.config("  - name: partner\n    grant: authorization_code\n    secret: idp/partner\n    issuer: " + issuer + "\n")
	code, out, shown := authorizeAs(t, e.stora, id, "https://partner.example/callback", nil, "--config", cfg, "--client", "partner")
	if !strings.HasPrefix(shown, e.stora.BaseURL+"/sso/approve?") {
		t.Errorf("authorization URL %s, want the metadata's authorization_endpoint", shown)
	}
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if rt := str(e.get("idp/partner"), "refresh_token"); !e.stora.RefreshTokenValid(rt) {
		t.Errorf("no working refresh token stored")
	}
}

// TestStatusReadsVaultWhileTheIssuerIsDown: status reads Vault alone. With the issuer's metadata
// unreachable, it still shows the token Vault holds and its expiry, with no problem.
func TestStatusReadsVaultWhileTheIssuerIsDown(t *testing.T) {
	e := newEnv(t)
	var issuer string
	meta := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"issuer":"` + issuer + `","token_endpoint":"` + e.stora.TokenURL + `"}`))
	}))
	issuer = meta.URL
	id, secret := e.stora.AddClient()
	e.put("idp/acme", map[string]any{"client_id": id, "client_secret": secret})
	cfg := writeConfig(t, "issuer: "+issuer+"\nclients:\n"+
		"  - {name: acme, grant: client_credentials, scope: public.contact:read, secret: idp/acme, output: idp/acme-token}\n")
	if code, out := runJob(t, "--config", cfg, "--once"); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	meta.Close()
	cmd := exec.Command(testenv.JobBinary(t), "status", "--config", cfg, "--output", "json")
	b, err := cmd.Output()
	code, out := exitOf(err), string(b)
	var doc struct {
		Targets []struct {
			Status    *string `json:"status"`
			ExpiresAt *string `json:"expires_at"`
			Problem   *string `json:"problem"`
		} `json:"targets"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Targets) != 1 {
		t.Fatalf("status --output json exit %d: %v\n%s", code, err, out)
	}
	if r := doc.Targets[0]; r.Problem != nil || r.ExpiresAt == nil || *r.ExpiresAt != str(e.get("idp/acme-token"), "expires_at") || r.Status == nil || *r.Status != "ok" {
		t.Errorf("status with the issuer down: exit %d, %s; want status ok and the expiry Vault holds", code, out)
	}
}

// TestAuthorizeCodeWithTheIssuerDown: a code given to authorize for a client whose issuer's
// metadata cannot be read is refused before it is stored, as when no code is given.
func TestAuthorizeCodeWithTheIssuerDown(t *testing.T) {
	e := newEnv(t)
	meta := httptest.NewServer(http.NotFoundHandler())
	meta.Close()
	e.put("idp/partner", map[string]any{"client_id": "id", "client_secret": "s"})
	cfg := e.config("  - name: partner\n    grant: authorization_code\n    secret: idp/partner\n    issuer: " + meta.URL + "\n")
	var out testenv.SyncBuffer
	err := runAuthorize(context.Background(), []string{"--config", cfg, "--client", "partner", "--code", "the-code", "--redirect-uri", "https://p.example/cb"}, strings.NewReader(""), &out, &out)
	if code := exitCode(err, &out); code != 2 || !strings.Contains(err.Error(), "discovery: ") {
		t.Errorf("exit %d, error %v; want 2 naming discovery", code, err)
	}
	if got := e.get("idp/partner"); got.VersionMetadata.Version != 1 {
		t.Errorf("the secret is at version %d: the code was stored", got.VersionMetadata.Version)
	}
}
