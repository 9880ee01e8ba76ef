package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/internal/storafake"
	"token-rotator/internal/testenv"
	"token-rotator/vault"
)

// env is one integration test's world: a real Vault dev server, the token endpoint, a config file.
type env struct {
	t     *testing.T
	vault *testenv.Vault
	stora *testenv.Stora
	dir   string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, vault: testenv.StartVault(t), stora: testenv.StartStora(t), dir: t.TempDir()}
	t.Setenv("VAULT_ADDR", e.vault.Addr)
	t.Setenv("VAULT_TOKEN", e.vault.Token)
	return e
}

// config writes a config file with the given clients section and returns its path.
func (e *env) config(clients string) string {
	e.t.Helper()
	return writeConfig(e.t, "token_url: "+e.stora.TokenURL+"\nrenew_before: 30m\nvault:\n  kv_mount: secret\nclients:\n"+clients)
}

// writeConfig writes body to a config file in a new temporary directory and returns its path.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *env) put(path string, data map[string]any) {
	e.t.Helper()
	if _, err := e.vault.Client.KVv2("secret").Put(context.Background(), path, data); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) get(path string) *api.KVSecret {
	e.t.Helper()
	s, err := e.vault.Client.KVv2("secret").Get(context.Background(), path)
	if err != nil {
		e.t.Fatalf("read %s: %v", path, err)
	}
	return s
}

// run runs token-rotator with args and returns its exit code and everything it printed.
func (e *env) run(args ...string) (int, string) { return runRotator(args...) }

// runRotator runs token-rotator in-process, as main would, and returns its exit code and
// everything it printed.
func runRotator(args ...string) (int, string) {
	var out bytes.Buffer
	code := exitCode(run(context.Background(), args, &out, &out), &out)
	return code, out.String()
}

// tokenInfo asks the token endpoint whether an access token works, as an app using it would.
func (e *env) tokenInfo(accessToken string) int {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.stora.BaseURL+"/oauth2/token/info", nil)
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func str(s *api.KVSecret, key string) string {
	v, _ := s.Data[key].(string)
	return v
}

func assertExpiry(t *testing.T, s *api.KVSecret) {
	t.Helper()
	exp, err := time.Parse(time.RFC3339, str(s, "expires_at"))
	if err != nil {
		t.Fatalf("expires_at %q is not RFC 3339: %v", str(s, "expires_at"), err)
	}
	if !strings.HasSuffix(str(s, "expires_at"), "Z") {
		t.Errorf("expires_at %q is not UTC", str(s, "expires_at"))
	}
	if left := time.Until(exp); left < 119*time.Minute || left > 121*time.Minute {
		t.Errorf("expires_at is %v away, want about 2h", left)
	}
}

func assertNoSecrets(t *testing.T, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(out, s) {
			t.Errorf("output contains a secret value %.6s…:\n%s", s, out)
		}
	}
}

func TestClientCredentialsEndToEnd(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret, "owner": "team-a"})
	e.put("stora/acme/token", map[string]any{"consumer": "billing-app"})
	cfg := e.config("  - name: acme\n    grant: client_credentials\n    scope: public.contact:read public.invoice:read\n    secret: stora/acme\n    output: stora/acme/token\n")

	code, out := e.run("--config", cfg, "--once")
	if code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, out)
	}
	tok := e.get("stora/acme/token")
	if got := e.tokenInfo(str(tok, "access_token")); got != 200 {
		t.Errorf("token info with the stored access token: HTTP %d, want 200", got)
	}
	if str(tok, "token_type") != "Bearer" || str(tok, "scope") != "public.contact:read public.invoice:read" {
		t.Errorf("stored token_type %q scope %q", str(tok, "token_type"), str(tok, "scope"))
	}
	if str(tok, "consumer") != "billing-app" {
		t.Errorf("other key of the output secret lost: %v", tok.Data["consumer"])
	}
	assertExpiry(t, tok)
	if cred := e.get("stora/acme"); cred.VersionMetadata.Version != 1 || str(cred, "owner") != "team-a" {
		t.Errorf("credential secret changed: version %d data keys %d", cred.VersionMetadata.Version, len(cred.Data))
	}
	if n := len(e.stora.Requests()); n != 1 {
		t.Errorf("token endpoint saw %d requests, want 1", n)
	}
	assertNoSecrets(t, out, secret, str(tok, "access_token"))

	// A second pass finds the token fresh and asks for nothing; --force asks again.
	if code, out := e.run("--config", cfg, "--once"); code != 0 || len(e.stora.Requests()) != 1 {
		t.Fatalf("second pass: exit %d, %d requests (want 0, 1):\n%s", code, len(e.stora.Requests()), out)
	}
	if code, out := e.run("--config", cfg, "--once", "--force"); code != 0 || len(e.stora.Requests()) != 2 {
		t.Fatalf("forced pass: exit %d, %d requests (want 0, 2):\n%s", code, len(e.stora.Requests()), out)
	}
	if e.get("stora/acme/token").VersionMetadata.Version != 3 {
		t.Errorf("forced pass did not write a new version of the output")
	}
}

func TestAuthorizationCodeWithPKCEThenRefresh(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	verifier := "verifier-" + strings.Repeat("v", 40)
	code := e.stora.IssueCode(id, "https://partner.example/callback", "public.contact:read public.contact:write", storafake.S256(verifier))
	e.put("stora/partner", map[string]any{"client_id": id, "client_secret": secret,
		"code": code, "redirect_uri": "https://partner.example/callback", "code_verifier": verifier, "operator": "op-1"})
	cfg := e.config("  - name: partner\n    grant: authorization_code\n    secret: stora/partner\n")

	exit, out := e.run("--config", cfg, "--once")
	if exit != 0 {
		t.Fatalf("exchange: exit %d:\n%s", exit, out)
	}
	s := e.get("stora/partner")
	rt1 := str(s, "refresh_token")
	if rt1 == "" || s.Data["code"] != nil || s.Data["code_verifier"] != nil {
		t.Fatalf("after exchange: refresh_token set %v, code %v, code_verifier %v", rt1 != "", s.Data["code"] != nil, s.Data["code_verifier"] != nil)
	}
	if str(s, "redirect_uri") == "" || str(s, "operator") != "op-1" {
		t.Errorf("other keys lost after exchange")
	}
	assertExpiry(t, s)
	at1 := str(s, "access_token")
	if got := e.tokenInfo(at1); got != 200 {
		t.Fatalf("exchanged access token rejected: %d", got)
	}

	// A later pass (forced here; normally when less than renew_before is left) refreshes.
	exit, out2 := e.run("--config", cfg, "--once", "--force")
	if exit != 0 {
		t.Fatalf("refresh: exit %d:\n%s", exit, out2)
	}
	s = e.get("stora/partner")
	rt2, at2 := str(s, "refresh_token"), str(s, "access_token")
	if rt2 == "" || rt2 == rt1 || at2 == at1 {
		t.Fatalf("refresh did not store a new pair")
	}
	if got := e.tokenInfo(at2); got != 200 {
		t.Errorf("refreshed access token rejected: %d", got)
	}
	if e.stora.RefreshTokenValid(rt1) {
		t.Errorf("the consumed refresh token is still valid after the new access token was used")
	}
	if !e.stora.RefreshTokenValid(rt2) {
		t.Errorf("the stored refresh token is not valid")
	}
	reqs := e.stora.Requests()
	if len(reqs) != 2 || reqs[0].GrantType != "authorization_code" || reqs[1].GrantType != "refresh_token" {
		t.Errorf("requests %+v, want authorization_code then refresh_token", reqs)
	}
	assertNoSecrets(t, out+out2, secret, code, verifier, rt1, rt2, at1, at2)
}

func TestRefreshTokenWrittenBeforeAccessToken(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	rt := e.stora.IssueRefreshToken(id, "public.contact:read")
	e.put("stora/p2", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": rt})
	cfg := e.config("  - name: p2\n    grant: authorization_code\n    secret: stora/p2\n    output: apps/p2\n")
	if exit, out := e.run("--config", cfg, "--once"); exit != 0 {
		t.Fatalf("exit %d:\n%s", exit, out)
	}
	cred, tok := e.get("stora/p2"), e.get("apps/p2")
	if str(cred, "refresh_token") == rt || str(cred, "refresh_token") == "" || cred.Data["access_token"] != nil {
		t.Fatalf("credential secret: new refresh token %v, access token present %v", str(cred, "refresh_token") != rt, cred.Data["access_token"] != nil)
	}
	if tok.Data["refresh_token"] != nil || str(tok, "access_token") == "" {
		t.Fatalf("output secret: refresh token present %v, access token present %v", tok.Data["refresh_token"] != nil, str(tok, "access_token") != "")
	}
	// The version of the credential secret that first held the new refresh token (later ones: the
	// claim's release, the status) was written before the output's first.
	first := cred
	for v := cred.VersionMetadata.Version - 1; v >= 1; v-- {
		s, err := e.vault.Client.KVv2("secret").GetVersion(context.Background(), "stora/p2", v)
		if err != nil {
			t.Fatal(err)
		}
		if str(s, "refresh_token") != str(cred, "refresh_token") {
			break
		}
		first = s
	}
	if !first.VersionMetadata.CreatedTime.Before(tok.VersionMetadata.CreatedTime) {
		t.Errorf("refresh token written at %v (version %d), access token at %v: want refresh token first",
			first.VersionMetadata.CreatedTime, first.VersionMetadata.Version, tok.VersionMetadata.CreatedTime)
	}
}

func TestWrongClientSecretExits1AndWritesNothing(t *testing.T) {
	e := newEnv(t)
	id, _ := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": "not-the-secret-at-all"})
	cfg := e.config("  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n    output: stora/acme/token\n")
	exit, out := e.run("--config", cfg, "--once")
	if exit != 1 {
		t.Fatalf("exit %d, want 1:\n%s", exit, out)
	}
	if !strings.Contains(out, "401") || !strings.Contains(out, "invalid_client") {
		t.Errorf("output does not give the 401 invalid_client reason:\n%s", out)
	}
	if e.get("stora/acme").VersionMetadata.Version != 1 {
		t.Errorf("credential secret was written")
	}
	if _, err := e.vault.Client.KVv2("secret").Get(context.Background(), "stora/acme/token"); err == nil {
		t.Errorf("output secret was written")
	}
	assertNoSecrets(t, out, "not-the-secret-at-all")
}

func TestMalformedConfigExits2NamingLine(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	os.WriteFile(p, []byte("schedule: \"*/5 * * * *\"\nclients:\n  - name: acme\n    grant: client_credentials\n    scopes: x\n"), 0o600)
	var out bytes.Buffer
	code := exitCode(run(context.Background(), []string{"--config", p, "--once"}, &out, &out), &out)
	if code != 2 {
		t.Fatalf("exit %d, want 2:\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), p+":5:5") || !strings.Contains(out.String(), "scopes") {
		t.Errorf("error does not name %s:5:5 and the key:\n%s", p, out.String())
	}
}

func TestDryRunRequestsAndWritesNothing(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret})
	cfg := e.config("  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n")
	exit, out := e.run("--config", cfg, "--dry-run")
	if exit != 0 || !strings.Contains(out, "would rotate") {
		t.Fatalf("exit %d:\n%s", exit, out)
	}
	if n := len(e.stora.Requests()); n != 0 {
		t.Errorf("dry run made %d token requests", n)
	}
	if e.get("stora/acme").VersionMetadata.Version != 1 {
		t.Errorf("dry run wrote to Vault")
	}
}

func TestClientFlagSelectsClients(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	e.put("stora/a", map[string]any{"client_id": id, "client_secret": secret})
	e.put("stora/b", map[string]any{"client_id": id, "client_secret": secret})
	cfg := e.config("  - name: a\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/a\n" +
		"  - name: b\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/b\n")
	if exit, out := e.run("--config", cfg, "--once", "--client", "b"); exit != 0 {
		t.Fatalf("exit %d:\n%s", exit, out)
	}
	if e.get("stora/a").Data["access_token"] != nil || e.get("stora/b").Data["access_token"] == nil {
		t.Errorf("--client b rotated the wrong clients")
	}
	if exit, _ := e.run("--config", cfg, "--once", "--client", "nope"); exit != 2 {
		t.Errorf("unknown --client: exit %d, want 2", exit)
	}
}

func TestKVVersion1Mount(t *testing.T) {
	e := newEnv(t)
	if err := e.vault.Client.Sys().Mount("kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	id, secret := e.stora.AddClient()
	if err := e.vault.Client.KVv1("kv1").Put(context.Background(), "stora/acme", map[string]any{"client_id": id, "client_secret": secret, "owner": "x"}); err != nil {
		t.Fatal(err)
	}
	p := e.config("  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n")
	data, _ := os.ReadFile(p)
	os.WriteFile(p, bytes.Replace(data, []byte("kv_mount: secret"), []byte("kv_mount: kv1"), 1), 0o600)
	exit, out := e.run("--config", p, "--once")
	if exit != 0 || !strings.Contains(out, "KV version 1") {
		t.Fatalf("exit %d, want 0 and a KV v1 warning:\n%s", exit, out)
	}
	s, err := e.vault.Client.KVv1("kv1").Get(context.Background(), "stora/acme")
	if err != nil {
		t.Fatal(err)
	}
	if str(s, "owner") != "x" || e.tokenInfo(str(s, "access_token")) != 200 {
		t.Errorf("KV v1 secret after rotation: owner %q, access token works %v", str(s, "owner"), e.tokenInfo(str(s, "access_token")) == 200)
	}
}

func TestDaemonRunsAtStartAndStopsOnCancel(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret})
	cfg := e.config("  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n")
	ctx, cancel := context.WithCancel(context.Background())
	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--config", cfg, "--log-format", "json", "--metrics-address", "127.0.0.1:0"}, &out, &out)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for len(e.stora.Requests()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	for !strings.Contains(out.String(), "next pass") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("daemon returned %v:\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop after cancel")
	}
	if e.get("stora/acme").Data["access_token"] == nil {
		t.Errorf("no pass at start: nothing stored")
	}
	var line map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Errorf("--log-format json printed a non-JSON line: %q", l)
		}
	}
	if !strings.Contains(out.String(), `"msg":"next pass"`) {
		t.Errorf("daemon did not log the next run time:\n%s", out.String())
	}
}

func TestDeletedOutputSecretIsRecreated(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret})
	e.put("apps/acme", map[string]any{"access_token": "old", "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	if err := e.vault.Client.KVv2("secret").Delete(context.Background(), "apps/acme"); err != nil {
		t.Fatal(err)
	}
	cfg := e.config("  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n    output: apps/acme\n")
	if exit, out := e.run("--config", cfg, "--once"); exit != 0 {
		t.Fatalf("exit %d:\n%s", exit, out)
	}
	if got := e.get("apps/acme"); e.tokenInfo(str(got, "access_token")) != 200 || got.VersionMetadata.Version != 2 {
		t.Errorf("deleted output not recreated with a working token (version %d)", got.VersionMetadata.Version)
	}
}

// TestDaemonLogsInAgainWhenItsVaultTokenExpires gives the daemon AppRole tokens that outlive the
// margin a rotation needs (rotate.DefaultTokenMargin) by a few seconds and cannot be renewed past it, and counts
// its logins through a proxy in front of Vault. Passes run every second; the job must log in again
// each time its token comes within the margin, and not on passes while it has more to live.
func TestDaemonLogsInAgainWhenItsVaultTokenExpires(t *testing.T) {
	const margin, spare = vault.ReloginMargin, 4 * time.Second
	e := newEnv(t)
	c := e.vault.Client
	if err := c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Sys().PutPolicy("rotator", `path "secret/data/*" { capabilities = ["create", "read", "update", "patch"] }
path "secret/metadata/*" { capabilities = ["read", "patch"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	ttl := fmt.Sprintf("%ds", int((margin + spare).Seconds()))
	if _, err := c.Logical().Write("auth/approle/role/rotator", map[string]any{
		"token_policies": "rotator", "token_ttl": ttl, "token_max_ttl": ttl}); err != nil {
		t.Fatal(err)
	}
	roleID, err := c.Logical().Read("auth/approle/role/rotator/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := c.Logical().Write("auth/approle/role/rotator/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	sidFile := filepath.Join(e.dir, "secret-id")
	os.WriteFile(sidFile, []byte(sid.Data["secret_id"].(string)), 0o600)
	t.Setenv("VAULT_TOKEN", "")

	// The job reaches Vault through a proxy that notes when each login was sent.
	target, _ := url.Parse(e.vault.Addr)
	var mu sync.Mutex
	var logins []time.Time
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/auth/approle/login" {
			mu.Lock()
			logins = append(logins, time.Now())
			mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	loginTimes := func() []time.Time { mu.Lock(); defer mu.Unlock(); return slices.Clone(logins) }

	id, secret := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret})
	body := "token_url: " + e.stora.TokenURL + "\nschedule: \"@every 1s\"\nvault:\n  address: " + front.URL +
		"\n  auth: {method: approle, role_id: " + roleID.Data["role_id"].(string) + ", secret_id_file: " + sidFile + "}\nclients:\n" +
		"  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n"
	cfg := filepath.Join(e.dir, "daemon.yaml")
	os.WriteFile(cfg, []byte(body), 0o600)

	ctx, cancel := context.WithCancel(context.Background())
	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--config", cfg, "--log-format", "json", "--metrics-address", "127.0.0.1:0"}, &out, &out)
	}()
	// The login at start-up, then two more: each token comes within the margin after about
	// spare, so this takes some 10 passes.
	deadline := time.Now().Add(30 * time.Second)
	for len(loginTimes()) < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("daemon returned %v:\n%s", err, out.String())
	}
	passes := strings.Count(out.String(), `"msg":"pass done"`)
	at := loginTimes()
	if len(at) < 3 || strings.Contains(out.String(), "rotation failed") {
		t.Fatalf("%d logins in %d passes, want 3 or more and no failures:\n%s", len(at), passes, out.String())
	}
	// Vault gives whole seconds of TTL, so a token may look up to a second shorter-lived than it
	// is; a pass starts up to a second after the token came within the margin.
	var gaps []string
	for i := 1; i < len(at); i++ {
		gap := at[i].Sub(at[i-1])
		gaps = append(gaps, gap.Round(10*time.Millisecond).String())
		if gap < spare-time.Second || gap > spare+3*time.Second {
			t.Errorf("login %d came %v after the one before, want about %v (when the token came within %v of expiry)",
				i+1, gap.Round(10*time.Millisecond), spare, margin)
		}
	}
	t.Logf("%d logins in %d passes, %s apart", len(at), passes, strings.Join(gaps, ", "))
}

func TestParseShard(t *testing.T) {
	for _, tc := range []struct {
		flag, env string
		want      string
		err       bool
	}{
		{"", "", "0/0", false},
		{"1/3", "", "1/3", false},
		{"/4", "2", "2/4", false},
		{"/4", "", "", true},
		{"4/4", "", "", true},
		{"-1/4", "", "", true},
		{"1/0", "", "", true},
		{"x", "", "", true},
	} {
		s, err := parseShard(tc.flag, tc.env)
		if (err != nil) != tc.err || (!tc.err && s.String() != tc.want) {
			t.Errorf("parseShard(%q, %q) = %v, %v", tc.flag, tc.env, s, err)
		}
	}
}
