package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/internal/testenv"
	"token-rotator/rotate"
)

// The Vault token lifetimes production issues (issue 13, item 4), against the real Vault dev
// server, with the daemon (run, as main calls it) on a 1-second schedule. Tokens live seconds, so
// the margin a token must cover when a rotation starts is shortened from 15 minutes
// (rotate.DefaultTokenMargin, which rotate.TestVaultTokenOutlastsTheRotation holds to the whole
// rotation) to lifeMargin. With passes a second apart and Vault's TTLs in whole seconds rounded
// down, 2 s leaves a token at least a second when it is renewed or replaced.
const lifeMargin = 2 * time.Second

// lifeWorld is a daemon's world: a real Vault behind a proxy that counts the daemon's requests,
// the token endpoint issuing 5-minute access tokens (so that every pass finds the access token
// due and spends the refresh token) in revoke-at-once mode, and one authorization code client
// holding a refresh token.
type lifeWorld struct {
	*env
	t     *testing.T
	reqs  *testenv.Requests // what the daemon sent to Vault
	front string            // the proxy's address: the daemon's vault.address
}

func newLifeWorld(t *testing.T) *lifeWorld {
	t.Helper()
	e := newEnv(t)
	e.stora.TTL = 5 * time.Minute
	e.stora.RevokeImmediately = true // a spent refresh token dies at once: one not stored is dead in Vault
	c := e.vault.Client
	if err := c.Sys().PutPolicy("rotator", `path "secret/data/*" { capabilities = ["create", "read", "update", "patch"] }
path "secret/metadata/*" { capabilities = ["read", "patch"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	id, secret := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": e.stora.IssueRefreshToken(id, "public.contact:read")})

	target, _ := url.Parse(e.vault.Addr)
	reqs := &testenv.Requests{Base: http.DefaultTransport}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = reqs
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)

	prev := tuneRotator
	tuneRotator = func(r *rotate.Rotator) { // a broken build fails in seconds, not 8 minutes of write-back
		r.TokenMargin, r.WriteDeadline = lifeMargin, 5*time.Second
	}
	t.Cleanup(func() { tuneRotator = prev })
	return &lifeWorld{env: e, t: t, reqs: reqs, front: front.URL}
}

// token creates a Vault token with the rotator policy and the given auth/token/create fields.
func (w *lifeWorld) token(fields map[string]any) string {
	w.t.Helper()
	fields["policies"] = "rotator"
	s, err := w.vault.Client.Logical().Write("auth/token/create", fields)
	if err != nil {
		w.t.Fatal(err)
	}
	return s.Auth.ClientToken
}

// approle enables AppRole with a role "rotator" of the given token_ fields and returns the
// config's vault.auth for it. The daemon then has no VAULT_TOKEN.
func (w *lifeWorld) approle(fields map[string]any) string {
	w.t.Helper()
	c := w.vault.Client
	if err := c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		w.t.Fatal(err)
	}
	fields["token_policies"] = "rotator"
	if _, err := c.Logical().Write("auth/approle/role/rotator", fields); err != nil {
		w.t.Fatal(err)
	}
	roleID, err := c.Logical().Read("auth/approle/role/rotator/role-id")
	if err != nil {
		w.t.Fatal(err)
	}
	sid, err := c.Logical().Write("auth/approle/role/rotator/secret-id", nil)
	if err != nil {
		w.t.Fatal(err)
	}
	file := filepath.Join(w.dir, "secret-id")
	if err := os.WriteFile(file, []byte(sid.Data["secret_id"].(string)), 0o600); err != nil {
		w.t.Fatal(err)
	}
	w.t.Setenv("VAULT_TOKEN", "")
	return "{method: approle, role_id: " + roleID.Data["role_id"].(string) + ", secret_id_file: " + file + "}"
}

// daemon runs the daemon for d with the given vault.auth ("" for VAULT_TOKEN), then stops it
// as SIGTERM would, and returns its exit code and logs.
func (w *lifeWorld) daemon(auth string, d time.Duration, args ...string) (int, string) {
	w.t.Helper()
	body := "token_url: " + w.stora.TokenURL + "\nschedule: \"@every 1s\"\nrenew_before: 30m\nvault:\n  address: " + w.front + "\n"
	if auth != "" {
		body += "  auth: " + auth + "\n"
	}
	body += "clients:\n  - name: acme\n    grant: authorization_code\n    secret: stora/acme\n"
	cfg := filepath.Join(w.dir, "daemon.yaml")
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		w.t.Fatal(err)
	}
	// Stop half a second off the schedule's whole wall-clock seconds (robfig/cron's @every runs on
	// them): a pass due at the instant the daemon stops would be skipped, and its log would say
	// nothing of the token.
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(d).Truncate(time.Second).Add(500*time.Millisecond))
	defer cancel()
	var out testenv.SyncBuffer
	code := exitCode(run(ctx, append([]string{"--config", cfg, "--log-format", "json", "--metrics-address", "127.0.0.1:0"}, args...), &out, &out), &out)
	return code, out.String()
}

// writes is how many requests the daemon sent to a Vault write endpoint (PUT or POST).
func (w *lifeWorld) writes(path string) int {
	return w.reqs.Count(http.MethodPut, path) + w.reqs.Count(http.MethodPost, path)
}

// refreshes are the refresh grants the token endpoint answered 200 to after t: each spent the
// refresh token Vault held.
func (w *lifeWorld) refreshes(after time.Time) int {
	n := 0
	for _, r := range w.stora.Requests() {
		if r.GrantType == "refresh_token" && r.Status == http.StatusOK && r.At.After(after) {
			n++
		}
	}
	return n
}

// lastRequest is when the token endpoint last saw a request (zero: never).
func (w *lifeWorld) lastRequest() time.Time {
	rs := w.stora.Requests()
	if len(rs) == 0 {
		return time.Time{}
	}
	return rs[len(rs)-1].At
}

// stored checks what a user would: the refresh token in Vault is live at the token endpoint (a
// refresh retires the one it spends, so nothing spent was lost) and the credential secret was
// written after t.
func (w *lifeWorld) stored(after time.Time) {
	w.t.Helper()
	got := w.get("stora/acme")
	if rt := str(got, "refresh_token"); !w.stora.RefreshTokenValid(rt) {
		w.t.Errorf("the refresh token in Vault is dead at the token endpoint: one was spent and not stored")
	}
	if at := got.VersionMetadata.CreatedTime; !at.After(after) {
		w.t.Errorf("the credential secret was last written at %v, before %v", at.Format(time.StampMilli), after.Format(time.StampMilli))
	}
}

// failures are the daemon's "rotation failed" lines: when, and the error.
type failure struct {
	At    time.Time `json:"time"`
	Error string    `json:"error"`
}

func failures(logs string) []failure {
	var out []failure
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l struct {
			Msg string `json:"msg"`
			failure
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "rotation failed" {
			out = append(out, l.failure)
		}
	}
	return out
}

// keepsRotating checks a daemon run that must not fail: exit 0, no failed rotation, at least n
// refresh grants after the token's original expiry, the last of them stored.
func (w *lifeWorld) keepsRotating(code int, logs string, expired time.Time, n int) {
	w.t.Helper()
	if f := failures(logs); code != 0 || len(f) > 0 {
		w.t.Fatalf("exit %d, %d failed rotations:\n%s", code, len(f), logs)
	}
	if got := w.refreshes(expired); got < n {
		w.t.Errorf("%d refresh grants after the Vault token's first expiry (%v), want at least %d", got, expired.Format(time.StampMilli), n)
	}
	w.stored(expired)
}

// refuses checks a run whose VAULT_TOKEN stopped covering a rotation: exit exit (--once: 1, a
// client failed; a daemon: 0, stopped by SIGTERM), the failures say want, no token request after
// the first failure, the refresh token in Vault live, and the token itself in no log line.
func (w *lifeWorld) refuses(code, exit int, logs, token string, want ...string) failure {
	w.t.Helper()
	f := failures(logs)
	if code != exit || len(f) == 0 {
		w.t.Fatalf("exit %d, %d failed rotations; want exit %d and failures once the token runs short:\n%s", code, len(f), exit, logs)
	}
	for _, s := range want {
		if !strings.Contains(f[0].Error, s) {
			w.t.Errorf("the first failure says %q; want it to say %q", f[0].Error, s)
		}
	}
	if last := w.lastRequest(); last.After(f[0].At) {
		w.t.Errorf("a token request at %v, after the daemon refused at %v", last.Format(time.StampMilli), f[0].At.Format(time.StampMilli))
	}
	if strings.Contains(logs, token) {
		w.t.Errorf("the logs contain the Vault token")
	}
	if rt := str(w.get("stora/acme"), "refresh_token"); !w.stora.RefreshTokenValid(rt) {
		w.t.Errorf("the refresh token in Vault is dead at the token endpoint: one was spent and not stored")
	}
	return f[0]
}

// TestDaemonRenewsPeriodicVaultTokens: a periodic token (4 s period) lives as long as it is
// renewed; the daemon renews it and rotates across several periods, whether it came from
// VAULT_TOKEN or from an AppRole login (which it then never repeats).
func TestDaemonRenewsPeriodicVaultTokens(t *testing.T) {
	const period, span = 4 * time.Second, 10 * time.Second
	t.Run("VAULT_TOKEN", func(t *testing.T) {
		w := newLifeWorld(t)
		tok := w.token(map[string]any{"period": "4s"})
		t.Setenv("VAULT_TOKEN", tok)
		start := time.Now()
		code, logs := w.daemon("", span)
		w.keepsRotating(code, logs, start.Add(period), 4)
		if n := w.writes("/v1/auth/token/renew-self"); n < 2 {
			t.Errorf("%d renewals in %v of a %v periodic token, want at least 2", n, span, period)
		}
		c, _ := w.vault.CountingClient(t, tok)
		if _, err := c.Auth().Token().LookupSelf(); err != nil {
			t.Errorf("the periodic token is no longer valid after %v: %v", span, err)
		}
		t.Logf("%d rotations, %d renewals, %d lookups in %v", w.refreshes(start), w.writes("/v1/auth/token/renew-self"), w.reqs.Count(http.MethodGet, "/v1/auth/token/lookup-self"), span)
	})
	t.Run("approle", func(t *testing.T) {
		w := newLifeWorld(t)
		auth := w.approle(map[string]any{"token_period": "4s"})
		start := time.Now()
		code, logs := w.daemon(auth, span)
		w.keepsRotating(code, logs, start.Add(period), 4)
		// One login at start, then renewals. A 4 s period can lapse between two renewals when
		// CI's cores are busy; the job then logs in once more, which is the recovery, not a login
		// per client (TestShortLivedLoginTokensAreNotReplacedPerClient holds that): allow one.
		if n, r := w.writes("/v1/auth/approle/login"), w.writes("/v1/auth/token/renew-self"); n < 1 || n > 2 || r < 2 {
			t.Errorf("%d logins and %d renewals in %v; want the login at start (and at most one more, after a lapse under load) and renewals (at least 2)", n, r, span)
		}
		t.Logf("%d rotations, %d renewals, %d logins in %v", w.refreshes(start), w.writes("/v1/auth/token/renew-self"), w.writes("/v1/auth/approle/login"), span)
	})
}

// TestDaemonAcrossExplicitMaxTTL: a token with a short explicit_max_ttl cannot be renewed past
// it. From AppRole the daemon logs in again; from a token_file that an agent keeps fresh it reads
// the file again; from VAULT_TOKEN it refuses to start a rotation once the token cannot cover one,
// and says so before any token request.
func TestDaemonAcrossExplicitMaxTTL(t *testing.T) {
	const maxTTL, span = 4 * time.Second, 9 * time.Second
	t.Run("approle", func(t *testing.T) {
		w := newLifeWorld(t)
		auth := w.approle(map[string]any{"token_ttl": "3s", "token_explicit_max_ttl": "4s"})
		start := time.Now()
		code, logs := w.daemon(auth, span)
		w.keepsRotating(code, logs, start.Add(maxTTL), 3)
		if n := w.writes("/v1/auth/approle/login"); n < 3 {
			t.Errorf("%d logins in %v with tokens capped at %v, want at least 3", n, span, maxTTL)
		}
		t.Logf("%d rotations, %d logins, %d renewals in %v", w.refreshes(start), w.writes("/v1/auth/approle/login"), w.writes("/v1/auth/token/renew-self"), span)
	})
	t.Run("token_file refreshed by an agent", func(t *testing.T) {
		w := newLifeWorld(t)
		file := filepath.Join(w.dir, "vault-token")
		sink := func() { // as Vault Agent's file sink: a new token, written whole
			tmp := file + ".tmp"
			if err := os.WriteFile(tmp, []byte(w.token(map[string]any{"ttl": "4s", "explicit_max_ttl": "4s"})), 0o600); err != nil {
				t.Error(err)
			}
			if err := os.Rename(tmp, file); err != nil {
				t.Error(err)
			}
		}
		sink()
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			for tick := time.NewTicker(time.Second); ; {
				select {
				case <-ctx.Done():
					tick.Stop()
					return
				case <-tick.C:
					sink()
				}
			}
		})
		t.Setenv("VAULT_TOKEN", "")
		start := time.Now()
		code, logs := w.daemon("{method: token, token_file: "+file+"}", span)
		stop()
		wg.Wait()
		w.keepsRotating(code, logs, start.Add(maxTTL), 3)
		t.Logf("%d rotations, %d lookups in %v", w.refreshes(start), w.reqs.Count(http.MethodGet, "/v1/auth/token/lookup-self"), span)
	})
	t.Run("VAULT_TOKEN", func(t *testing.T) {
		w := newLifeWorld(t)
		tok := w.token(map[string]any{"ttl": "3s", "explicit_max_ttl": "5s"})
		expires := time.Now().Add(5 * time.Second)
		t.Setenv("VAULT_TOKEN", tok)
		start := time.Now()
		code, logs := w.daemon("", span)
		f := w.refuses(code, 0, logs, tok, "the Vault token from VAULT_TOKEN is capped by its explicit_max_ttl (5s)", "use token_file (e.g. Vault Agent's sink), or a login method (kubernetes, approle)")
		if n := w.refreshes(start); n < 2 {
			t.Errorf("%d rotations while the token still covered one, want at least 2", n)
		}
		// The margin is checked when a rotation starts; its reads and claim come before the request.
		if last := w.lastRequest(); last.After(expires.Add(-lifeMargin + 500*time.Millisecond)) {
			t.Errorf("a token request %v before the Vault token expired: the rotation started within the margin (%v)", expires.Sub(last), lifeMargin)
		}
		t.Logf("%d rotations, then refused %v before the token's expiry: %s", w.refreshes(start), expires.Sub(f.At).Round(10*time.Millisecond), f.Error)
	})
}

// TestDaemonWithBatchVaultTokens: a batch token cannot be renewed. From AppRole the daemon logs
// in again as each nears its expiry, and never asks Vault to renew one; from VAULT_TOKEN it
// rotates while the token covers a rotation, then refuses, before any token request, saying to
// use a token file or a login method.
func TestDaemonWithBatchVaultTokens(t *testing.T) {
	const ttl, span = 3 * time.Second, 8 * time.Second
	t.Run("approle", func(t *testing.T) {
		w := newLifeWorld(t)
		auth := w.approle(map[string]any{"token_type": "batch", "token_ttl": "3s"})
		start := time.Now()
		code, logs := w.daemon(auth, span)
		w.keepsRotating(code, logs, start.Add(ttl), 3)
		if n, r := w.writes("/v1/auth/approle/login"), w.writes("/v1/auth/token/renew-self"); n < 3 || r != 0 {
			t.Errorf("%d logins and %d renewals in %v with %v batch tokens; want at least 3 logins and no renewal", n, r, span, ttl)
		}
		t.Logf("%d rotations, %d logins in %v", w.refreshes(start), w.writes("/v1/auth/approle/login"), span)
	})
	t.Run("VAULT_TOKEN", func(t *testing.T) {
		w := newLifeWorld(t)
		// A margin of 4 s on a 6 s token: the whole-second passes land in the last 4 s of its
		// life three times, so the refusal comes before the token expires even on a loaded machine.
		tuneRotator = func(r *rotate.Rotator) { r.TokenMargin, r.WriteDeadline = 4*time.Second, 5*time.Second }
		tok := w.token(map[string]any{"type": "batch", "ttl": "6s"})
		t.Setenv("VAULT_TOKEN", tok)
		start := time.Now()
		code, logs := w.daemon("", span)
		f := w.refuses(code, 0, logs, tok, "the Vault token from VAULT_TOKEN is a batch token, which cannot be renewed", "use token_file (e.g. Vault Agent's sink), or a login method (kubernetes, approle)")
		if n := w.writes("/v1/auth/token/renew-self"); n != 0 {
			t.Errorf("%d renewals of a batch token, want none", n)
		}
		t.Logf("%d rotations, then refused: %s", w.refreshes(start), f.Error)
	})
}

// TestVaultTokenExpiresBetweenTheRequestAndTheWriteBack: the token endpoint holds its answer
// until the daemon's Vault token has expired, so the refresh token is spent and the token that
// would store the new one is dead. From AppRole the write-back logs in again and lands. From
// VAULT_TOKEN, which nothing can replace, the rotation must not start: a token that does not
// cover the rotation (the margin standing for the held answer) is refused before the request.
func TestVaultTokenExpiresBetweenTheRequestAndTheWriteBack(t *testing.T) {
	const hold = 3500 * time.Millisecond
	holdFirst := func(w *lifeWorld) {
		var once sync.Once
		w.stora.Issued = func(string, string) { once.Do(func() { time.Sleep(hold) }) }
	}
	t.Run("approle", func(t *testing.T) {
		w := newLifeWorld(t)
		auth := w.approle(map[string]any{"token_ttl": "3s", "token_explicit_max_ttl": "3s"})
		holdFirst(w)
		start := time.Now()
		code, logs := w.daemon(auth, 30*time.Second, "--once")
		if f := failures(logs); code != 0 || len(f) > 0 || w.refreshes(start) != 1 {
			t.Fatalf("exit %d, %d failures, %d refresh grants; want exit 0 after one:\n%s", code, len(f), w.refreshes(start), logs)
		}
		w.stored(start.Add(hold))
		if n := w.writes("/v1/auth/approle/login"); n != 2 {
			t.Errorf("%d logins, want 2: at start and for the write-back", n)
		}
	})
	t.Run("VAULT_TOKEN", func(t *testing.T) {
		w := newLifeWorld(t)
		tok := w.token(map[string]any{"ttl": "3s", "renewable": false})
		t.Setenv("VAULT_TOKEN", tok)
		holdFirst(w)
		prev := tuneRotator
		tuneRotator = func(r *rotate.Rotator) { // the margin covers the rotation, as DefaultTokenMargin does in production
			r.TokenMargin, r.WriteDeadline = hold+time.Second, 5*time.Second
		}
		t.Cleanup(func() { tuneRotator = prev })
		code, logs := w.daemon("", 30*time.Second, "--once")
		w.refuses(code, 1, logs, tok, "the Vault token from VAULT_TOKEN is not renewable and expires in", "before a rotation started now could end (4.5s)")
		if n := len(w.stora.Requests()); n != 0 {
			t.Errorf("%d token requests, want none", n)
		}
	})
}

// TestShortLivedLoginTokensAreNotReplacedPerClient: a login method whose tokens live 10 minutes,
// shorter than a rotation may last (rotate.DefaultTokenMargin), with the default margin. The job
// can log in again whenever Vault refuses its token, write-back included, so such a token need
// only last vault.ReloginMargin: a pass over five clients logs in once, at start-up, not once per
// client.
func TestShortLivedLoginTokensAreNotReplacedPerClient(t *testing.T) {
	w := newLifeWorld(t)
	tuneRotator = func(r *rotate.Rotator) { r.WriteDeadline = 5 * time.Second } // the default margin
	auth := w.approle(map[string]any{"token_ttl": "10m", "token_max_ttl": "10m"})
	var clients strings.Builder
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		id, secret := w.stora.AddClient()
		w.put("stora/"+name, map[string]any{"client_id": id, "client_secret": secret, "refresh_token": w.stora.IssueRefreshToken(id, "public.contact:read")})
		clients.WriteString("  - {name: " + name + ", grant: authorization_code, secret: stora/" + name + "}\n")
	}
	cfg := writeConfig(t, "token_url: "+w.stora.TokenURL+"\nvault:\n  address: "+w.front+"\n  auth: "+auth+"\nclients:\n"+clients.String())
	code, out := w.run("--config", cfg, "--once", "--force")
	if code != 0 || strings.Count(out, `"outcome":"rotated"`) != 5 {
		t.Fatalf("exit %d, want 0 and 5 rotated:\n%s", code, out)
	}
	if n := w.writes("/v1/auth/approle/login"); n != 1 {
		t.Errorf("%d logins for a pass over 5 clients with 10-minute tokens, want 1 (at start-up)", n)
	}
}
