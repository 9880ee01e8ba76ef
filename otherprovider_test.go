//go:build unix

package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/internal/storafake"
	"token-rotator/internal/testenv"
)

// The tests in this file run the built binary against the second real authorization server,
// oidc-provider, configured as a generic provider is: by issuer (discovery), HTTP Basic client
// authentication and form bodies. oidc-provider retires a refresh token at its first use and, when
// a used one is presented again, revokes the whole grant: a double spend by the job would leave a
// dead pair in Vault, which these tests would see.

// oidcWorld is a real Vault (with the procWorld helpers) and a running oidc-provider.
type oidcWorld struct {
	*procWorld
	p *testenv.OIDCProvider
}

func newOIDCWorld(t *testing.T, opts testenv.OIDCProviderOptions) *oidcWorld {
	return &oidcWorld{procWorld: newProcWorld(t), p: testenv.StartOIDCProvider(t, opts)}
}

// oidcConfig writes a config for a generic provider: endpoint is "issuer: URL" or "token_url: URL",
// extra goes at the top level, clients is the clients section.
func (w *oidcWorld) oidcConfig(endpoint, extra, clients string) string {
	return writeConfig(w.t, endpoint+"\ntoken_endpoint_auth_method: client_secret_basic\ntoken_request_encoding: form\n"+
		extra+"vault:\n  address: "+w.vault.Addr+"\nclients:\n"+clients)
}

// seedPairs registers n client_secret_basic clients and stores for each, at prefix/pNN, a refresh
// token issued by the server; it returns the paths, their output paths and the stored tokens.
func (w *oidcWorld) seedPairs(prefix string, n int, ownOutput bool) (paths, outputs, rts []string, clients string) {
	var b strings.Builder
	for i := 0; i < n; i++ {
		id, secret := w.p.AddClientWith(w.t, testenv.OIDCClient{AuthMethod: "client_secret_basic"})
		_, rt := w.p.IssueTokenPair(w.t, id, "public.contact:read")
		p, out := fmt.Sprintf("%s/p%02d", prefix, i), fmt.Sprintf("%s/p%02d/token", prefix, i)
		if !ownOutput {
			out = p
		}
		w.put(p, map[string]any{"client_id": id, "client_secret": secret, "refresh_token": rt})
		paths, outputs, rts = append(paths, p), append(outputs, out), append(rts, rt)
		fmt.Fprintf(&b, "  - {name: c%02d, grant: authorization_code, secret: %s, output: %s}\n", i, p, out)
	}
	return paths, outputs, rts, b.String()
}

// requests returns the token requests the server saw after the first skip, by grant type, and
// whether all were answered 200.
func (w *oidcWorld) requests(skip int) (n map[string]int, total int, all200 bool) {
	log := w.p.TokenRequestLog(w.t)[skip:]
	n, all200 = map[string]int{}, true
	for _, r := range log {
		n[r.GrantType]++
		all200 = all200 && r.Status == http.StatusOK
	}
	return n, len(log), all200
}

func (w *oidcWorld) accessToken(path string) string {
	at, _ := w.data(path)["access_token"].(string)
	return at
}

// TestConcurrentRunsAgainstOIDCProvider starts N processes at the same instant on the same M
// secrets. The claims must let exactly one process spend each refresh token: any second spend of
// a refresh token would make oidc-provider revoke the grant, and the pair in Vault would be dead.
func TestConcurrentRunsAgainstOIDCProvider(t *testing.T) {
	// Access tokens live 2 h, as Stora's: a process that reads a secret after another rotated it
	// finds it fresh. (With the provider's default 120 s, shorter than renew_before, every run
	// rotates every secret again, one after the other, which is right but not what is counted.)
	w := newOIDCWorld(t, testenv.OIDCProviderOptions{AccessTokenTTL: 2 * time.Hour})
	t.Run("OutputInCredentialSecret", func(t *testing.T) { w.race(t, "oprace1", false) })
	t.Run("OutputInItsOwnSecret", func(t *testing.T) { w.race(t, "oprace2", true) })
}

func (w *oidcWorld) race(t *testing.T, prefix string, ownOutput bool) {
	const processes, secrets = 6, 10
	w.t = t
	paths, outputs, rts, clients := w.seedPairs(prefix, secrets, ownOutput)
	// Stora's default rate limit (60 a minute) would space each process's requests a second
	// apart; the race is what is measured here.
	cfg := w.oidcConfig("issuer: "+w.p.BaseURL, "rate_limit: {per_second: 100, per_minute: 6000}\n", clients)
	before := len(w.p.TokenRequestLog(t))
	all, failedRuns, elapsed := w.runAtOnce(t, cfg, processes)
	held := 0
	for i, p := range paths {
		d := w.data(p)
		rt, _ := d["refresh_token"].(string)
		at := w.accessToken(outputs[i])
		switch {
		case rt == "" || rt == rts[i]:
			t.Errorf("%s: not rotated", p)
		case w.p.RefreshTokenRevoked(t, rt):
			t.Errorf("%s: the refresh token in Vault is not active: the grant was revoked, a refresh token was spent twice", p)
		case at == "" || w.p.TokenInfo(t, at) != http.StatusOK:
			t.Errorf("%s: the access token in %s is not active", p, outputs[i])
		case d["access_token"] != nil && w.p.TokenInfo(t, d["access_token"].(string)) != http.StatusOK:
			t.Errorf("%s: the access token in the credential secret is not active", p)
		case d["rotation_claim"] != nil:
			t.Errorf("%s: a claim was left behind", p)
		default:
			held++
		}
	}
	n := outcomes(all)
	if n["failed"] > 0 {
		t.Errorf("%d client failures reported", n["failed"])
	}
	grants, total, all200 := w.requests(before)
	// Every request must be a refresh the server granted, one per rotation reported: a second
	// spend of one refresh token would be refused (and the grant revoked, seen above).
	if total != grants["refresh_token"] || !all200 || n["rotated"] != total {
		t.Errorf("the server saw %d token requests (%v, all 200: %v) and %d rotations were reported; want only granted refreshes, one per rotation",
			total, grants, all200, n["rotated"])
	}
	// Exactly one refresh per secret, the output in its own secret too: the claim is held until
	// the output is written, so no process finds the new refresh token unclaimed beside the old
	// access token.
	extra := total - secrets
	if extra != 0 {
		t.Errorf("the server saw %d refreshes for %d secrets; want exactly one each", total, secrets)
	}
	if t.Failed() {
		for _, l := range strings.Split(all, "\n") {
			if strings.Contains(l, `"outcome":"rotated"`) {
				t.Logf("%s", l)
			}
		}
	}
	t.Logf("RELIABILITY race oidc-provider | %d processes × %d secrets (output in its own secret: %v), started at once, against oidc-provider (refresh tokens retired at first use, reuse revokes the grant) | %d token requests seen by the server (%d more than one per secret), %d rotated, %d skipped as claimed elsewhere, %d found fresh, %d rotated elsewhere, %d failed | %d/%d secrets hold an active pair; %d runs exited non-zero | %v",
		processes, secrets, ownOutput, total, extra, n["rotated"], n["claimed_elsewhere"], n["not_due"], n["rotated_elsewhere"], n["failed"], held, secrets, failedRuns, elapsed.Round(time.Millisecond))
}

// TestSIGTERMMidRotationAgainstOIDCProvider sends SIGTERM while the first refresh request is on
// its way to oidc-provider (a loopback proxy in front of its token endpoint signals, waits, then
// forwards). The rotation under way finishes and its pair is stored; the other client is not
// started; exit 0.
func TestSIGTERMMidRotationAgainstOIDCProvider(t *testing.T) {
	w := newOIDCWorld(t, testenv.OIDCProviderOptions{})
	paths, outputs, rts, clients := w.seedPairs("opterm", 2, true)
	var cmd *exec.Cmd
	var once sync.Once
	target, _ := url.Parse(w.p.BaseURL)
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			time.Sleep(200 * time.Millisecond) // the server answers after the signal
		})
		rp.ServeHTTP(rw, r)
	}))
	t.Cleanup(proxy.Close)
	tokenPath := strings.TrimPrefix(w.p.TokenURL, w.p.BaseURL)
	// Discovery would name the real endpoint, so the proxy is named by token_url. One request at
	// a time: the second client can only start after the first, by which time the signal is in.
	cfg := w.oidcConfig("token_url: "+proxy.URL+tokenPath, "concurrency: 1\n", clients)
	before := len(w.p.TokenRequestLog(t))
	cmd = w.command(cfg)
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	n := outcomes(out.String())
	if code != 0 {
		t.Errorf("exit %d: %v\n%s", code, err, out.String())
	}
	if n["rotated"] != 1 || n["skipped"] != 1 {
		t.Errorf("%d rotated, %d skipped; want 1 rotated (the request under way finishes), 1 skipped (not started after the signal):\n%s", n["rotated"], n["skipped"], out.String())
	}
	rotated, kept := 0, 0
	for i, p := range paths {
		rt, _ := w.data(p)["refresh_token"].(string)
		switch {
		case w.p.RefreshTokenRevoked(t, rt):
			t.Errorf("%s: the refresh token in Vault is not active", p)
		case rt == rts[i]:
			kept++
		case w.p.TokenInfo(t, w.accessToken(outputs[i])) != http.StatusOK || !w.p.RefreshTokenRevoked(t, rts[i]):
			t.Errorf("%s: rotated, but the access token stored is not active or the old refresh token was not spent", p)
		default:
			rotated++
		}
	}
	if rotated != 1 || kept != 1 {
		t.Errorf("%d secrets hold a new active pair and %d their original active refresh token; want 1 and 1", rotated, kept)
	}
	if grants, total, all200 := w.requests(before); total != 1 || grants["refresh_token"] != 1 || !all200 {
		t.Errorf("the server saw %d token requests (%v, all 200: %v), want 1 refresh", total, grants, all200)
	}
	t.Logf("RELIABILITY sigterm oidc-provider | token request in flight (SIGTERM, then the server answers 200 ms later) | exit %d, %d rotated, %d skipped | %d secret holds a new active pair, %d its original active refresh token",
		code, n["rotated"], n["skipped"], rotated, kept)
}

// TestPKCEMismatchAgainstOIDCProvider stores a code with the wrong code_verifier: oidc-provider
// refuses it (invalid_grant), nothing is stored, and the secret says reauthorization is needed.
// Then a public client (no secret, PKCE) with the right verifier is exchanged and refreshed.
func TestPKCEMismatchAgainstOIDCProvider(t *testing.T) {
	w := newOIDCWorld(t, testenv.OIDCProviderOptions{})
	verifierA := "verifier-a-" + strings.Repeat("a", 40)
	verifierB := "verifier-b-" + strings.Repeat("b", 40)

	// A confidential client, its code stored with the wrong verifier.
	{
		id, secret := w.p.AddClientWith(t, testenv.OIDCClient{AuthMethod: "client_secret_basic"})
		code := w.p.IssueCode(t, id, redirectURI, "public.contact:read", storafake.S256(verifierA))
		cred, out := "oppkce/wrong", "oppkce/wrong/token"
		w.put(cred, map[string]any{"client_id": id, "client_secret": secret, "code": code, "code_verifier": verifierB, "redirect_uri": redirectURI})
		cfg := w.oidcConfig("issuer: "+w.p.BaseURL, "", "  - {name: partner, grant: authorization_code, secret: "+cred+", output: "+out+"}\n")
		before := len(w.p.TokenRequestLog(t))
		log, err := w.command(cfg).CombinedOutput()
		if code := exitOf(err); code != 1 || !strings.Contains(string(log), "HTTP 400 invalid_grant") {
			t.Fatalf("exit %d, want 1 with HTTP 400 invalid_grant:\n%s", code, log)
		}
		if grants, total, _ := w.requests(before); total != 1 || grants["authorization_code"] != 1 {
			t.Errorf("the server saw %d token requests (%v), want 1 code exchange", total, grants)
		}
		s, err := w.vault.Client.KVv2("secret").Get(context.Background(), cred)
		if err != nil {
			t.Fatal(err)
		}
		if s.Data["access_token"] != nil || s.Data["refresh_token"] != nil {
			t.Errorf("a token was stored in the credential secret after a refused exchange")
		}
		if _, err := w.vault.Client.KVv2("secret").Get(context.Background(), out); err == nil {
			t.Errorf("the output secret was written after a refused exchange")
		}
		if s.Data["code"] != nil || s.Data["code_verifier"] != nil || str(s, "redirect_uri") != redirectURI {
			t.Errorf("after the refusal: code kept %v, code_verifier kept %v, redirect_uri kept %v",
				s.Data["code"] != nil, s.Data["code_verifier"] != nil, str(s, "redirect_uri") == redirectURI)
		}
		if s.CustomMetadata["rotator_status"] != "reauthorization_required" {
			t.Errorf("status in metadata %v, want reauthorization_required", s.CustomMetadata["rotator_status"])
		}
		assertNoSecrets(t, string(log), code, verifierA, verifierB, secret)
	}

	// A public client with the right verifier: exchanged, then refreshed.
	{
		id, secret := w.p.AddClientWith(t, testenv.OIDCClient{AuthMethod: "none"})
		if secret != "" {
			t.Fatal("a public client got a secret")
		}
		code := w.p.IssueCode(t, id, redirectURI, "public.contact:read", storafake.S256(verifierA))
		cred, out := "oppkce/public", "oppkce/public/token"
		w.put(cred, map[string]any{"client_id": id, "code": code, "code_verifier": verifierA, "redirect_uri": redirectURI})
		cfg := w.oidcConfig("issuer: "+w.p.BaseURL, "",
			"  - {name: public, grant: authorization_code, secret: "+cred+", output: "+out+", token_endpoint_auth_method: none}\n")
		before := len(w.p.TokenRequestLog(t))
		log, err := w.command(cfg).CombinedOutput()
		if err != nil {
			t.Fatalf("exchange: %v:\n%s", err, log)
		}
		rt1, at1 := str(w.getKV(cred), "refresh_token"), w.accessToken(out)
		if rt1 == "" || w.p.RefreshTokenRevoked(t, rt1) || w.p.TokenInfo(t, at1) != http.StatusOK {
			t.Fatalf("after the exchange the pair in Vault is not active (refresh token stored %v)", rt1 != "")
		}
		log2, err := w.command(cfg, "--force").CombinedOutput()
		if err != nil {
			t.Fatalf("refresh: %v:\n%s", err, log2)
		}
		rt2, at2 := str(w.getKV(cred), "refresh_token"), w.accessToken(out)
		if rt2 == "" || rt2 == rt1 || at2 == at1 {
			t.Fatalf("the refresh did not store a new pair")
		}
		if w.p.RefreshTokenRevoked(t, rt2) || w.p.TokenInfo(t, at2) != http.StatusOK || !w.p.RefreshTokenRevoked(t, rt1) {
			t.Errorf("after the refresh: new refresh token active %v, new access token active %v, old refresh token retired %v",
				!w.p.RefreshTokenRevoked(t, rt2), w.p.TokenInfo(t, at2) == http.StatusOK, w.p.RefreshTokenRevoked(t, rt1))
		}
		if grants, total, all200 := w.requests(before); total != 2 || grants["authorization_code"] != 1 || grants["refresh_token"] != 1 || !all200 {
			t.Errorf("the server saw %d token requests (%v, all 200: %v), want 1 exchange and 1 refresh", total, grants, all200)
		}
		assertNoSecrets(t, string(log)+string(log2), code, verifierA, rt1, at1, rt2, at2)
	}
}

// getKV reads the KV v2 secret at path.
func (w *oidcWorld) getKV(path string) *api.KVSecret {
	w.t.Helper()
	s, err := w.vault.Client.KVv2("secret").Get(context.Background(), path)
	if err != nil {
		w.t.Fatal(err)
	}
	return s
}

// exitOf is a process's exit code from cmd.Run's error.
func exitOf(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestReusedRefreshTokenAgainstOIDCProvider: Vault holds a refresh token that was already used
// outside the job (a copy of the secret refreshed by a script). oidc-provider answers invalid_grant
// and revokes the whole grant, the refresh token it issued meanwhile too; the job reports
// reauthorization_required, exit 1, after one request, and writes no token.
func TestReusedRefreshTokenAgainstOIDCProvider(t *testing.T) {
	w := newOIDCWorld(t, testenv.OIDCProviderOptions{})
	id, secret := w.p.AddClientWith(t, testenv.OIDCClient{AuthMethod: "client_secret_basic"})
	_, used := w.p.IssueTokenPair(t, id, "public.contact:read")
	status, body := w.p.TokenRequest(t, id, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {used}})
	newer, _ := body["refresh_token"].(string)
	if status != http.StatusOK || newer == "" {
		t.Fatalf("refresh outside the job: HTTP %d", status)
	}
	cred, out := "opreuse/cred", "opreuse/token"
	w.put(cred, map[string]any{"client_id": id, "client_secret": secret, "refresh_token": used})
	cfg := w.oidcConfig("issuer: "+w.p.BaseURL, "", "  - {name: partner, grant: authorization_code, secret: "+cred+", output: "+out+"}\n")
	before := len(w.p.TokenRequestLog(t))
	log, err := w.command(cfg).CombinedOutput()
	if code := exitOf(err); code != 1 || !strings.Contains(string(log), "HTTP 400 invalid_grant") {
		t.Fatalf("exit %d, want 1 with HTTP 400 invalid_grant:\n%s", code, log)
	}
	if _, total, _ := w.requests(before); total != 1 {
		t.Errorf("the server saw %d token requests, want 1 (invalid_grant is not retried)", total)
	}
	s := w.getKV(cred)
	if str(s, "refresh_token") != used || s.Data["access_token"] != nil || s.CustomMetadata["rotator_status"] != "reauthorization_required" {
		t.Errorf("after the refusal: stored refresh token kept %v, access token written %v, status %q; want kept, none, reauthorization_required",
			str(s, "refresh_token") == used, s.Data["access_token"] != nil, s.CustomMetadata["rotator_status"])
	}
	if _, err := w.vault.Client.KVv2("secret").Get(context.Background(), out); err == nil {
		t.Errorf("the output secret was written after a refused refresh")
	}
	if !w.p.RefreshTokenRevoked(t, newer) {
		t.Errorf("oidc-provider did not revoke the grant on reuse: the refresh token issued outside the job is still active")
	}
	assertNoSecrets(t, string(log), secret, used, newer)
}

// TestJSONBodyRefusedSaysWhatToSet: left at Stora's JSON body, a client of a server that takes
// only form bodies fails with the server's invalid_request and a hint naming the setting.
func TestJSONBodyRefusedSaysWhatToSet(t *testing.T) {
	w := newOIDCWorld(t, testenv.OIDCProviderOptions{})
	id, secret := w.p.AddClient(t, redirectURI, "public.contact:read")
	w.put("opjson/cred", map[string]any{"client_id": id, "client_secret": secret})
	cfg := writeConfig(t, "issuer: "+w.p.BaseURL+"\nvault:\n  address: "+w.vault.Addr+"\nclients:\n"+
		"  - {name: acme, grant: client_credentials, scope: public.contact:read, secret: opjson/cred, output: opjson/token}\n")
	log, err := w.command(cfg).CombinedOutput()
	if code := exitOf(err); code != 1 || !strings.Contains(string(log), "HTTP 400 invalid_request") ||
		!strings.Contains(string(log), "needs token_request_encoding: form") {
		t.Errorf("exit %d; want 1 with the server's invalid_request and the hint:\n%s", code, log)
	}
	assertNoSecrets(t, string(log), secret)
}
