package ha

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"token-rotator/internal/testenv"
)

// The job talks to a standby through a load balancer (the balancer), as production's would to a
// Vault cluster, and the leader is killed (SIGKILL) at one step of a pass. The standby the job
// talks to stays up: it is the rest of the cluster that fails over under it.

// TestLeaderKilledDuringWriteBack kills the leader the moment the token endpoint has committed a
// new refresh token, before its answer reaches the job: the write-back meets a cluster without a
// leader, and the only copy of the refresh token is in the job's memory. The job retries the
// write-back until a new leader takes it.
func TestLeaderKilledDuringWriteBack(t *testing.T) {
	w := newWorld(t)
	paths := w.seed(1)
	old, _ := w.data(paths[0])["refresh_token"].(string)
	lb := w.balancer(w.cluster.Standby(t))
	k := w.leaderKiller(lb)
	w.onIssue = func(int) { k.kill() }
	code, out := w.run(w.config(lb.URL, paths))
	if k.when().IsZero() {
		t.Fatalf("the leader was not killed: no refresh token issued\n%s", out)
	}
	if code != 0 || outcomes(out)["rotated"] != 1 {
		t.Fatalf("exit %d, outcomes %v, want exit 0 and rotated\n%s", code, outcomes(out), out)
	}
	data := w.data(paths[0])
	issued := w.issued()
	if rt, _ := data["refresh_token"].(string); len(issued) != 1 || rt != issued[0] || rt == old || !w.stora.RefreshTokenValid(rt) {
		t.Errorf("%d refresh tokens issued; Vault holds the one issued: %v, and the server accepts it: %v",
			len(issued), len(issued) == 1 && rt == issued[0], w.stora.RefreshTokenValid(rt))
	}
	if _, ok := data["rotation_claim"]; ok {
		t.Errorf("the claim was left in %s", paths[0])
	}
	took, ok := lb.landedAfter(k.when())
	if !ok {
		t.Fatalf("no write-back landed through the balancer after the kill")
	}
	redirected := lb.answered(http.StatusTemporaryRedirect, k.when(), time.Now())
	if t.Failed() {
		logCalls(t, lb, k.when())
	}
	t.Logf("RELIABILITY ha-failover | leader killed (SIGKILL) when the token endpoint had committed the new refresh token, before its answer reached the job | exit %d, %d rotated; the standby answered %d write(s) with a redirect to the dead leader, where the Vault client's retries failed; write-back retries by the job: %d | pair landed %v after the kill; the refresh token in Vault is the one issued and works; no claim left | fake, revoke at once",
		code, outcomes(out)["rotated"], redirected, logLines(out, "write-back failed; retrying"), took.Round(10*time.Millisecond))
}

// TestLeaderKilledDuringWriteBackDoorkeeper is TestLeaderKilledDuringWriteBack against the real
// Doorkeeper, refresh tokens revoked at once: a reverse proxy in front of its token endpoint kills
// the leader when Doorkeeper has answered a refresh and before the job gets the answer. The
// refresh token the job stored is then used for real, by a second pass.
func TestLeaderKilledDuringWriteBackDoorkeeper(t *testing.T) {
	w := newWorld(t)
	dk := testenv.StartDoorkeeper(t, testenv.DoorkeeperOptions{RevokeImmediately: true})
	id, secret := dk.AddClient(t, "", "")
	_, old := dk.IssueTokenPair(t, id, "public.contact:read")
	path := w.prefix + "/partner"
	w.put(path, map[string]any{"client_id": id, "client_secret": secret, "refresh_token": old})

	lb := w.balancer(w.cluster.Standby(t))
	k := w.leaderKiller(lb)
	var mu sync.Mutex
	var granted string
	base, _ := url.Parse(dk.BaseURL)
	proxy := httputil.NewSingleHostReverseProxy(base)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method != http.MethodPost || resp.Request.URL.Path != "/oauth2/token" || resp.StatusCode != http.StatusOK {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if err != nil {
			return err
		}
		var tok struct {
			RefreshToken string `json:"refresh_token"`
		}
		_ = json.Unmarshal(body, &tok)
		mu.Lock()
		granted = tok.RefreshToken
		mu.Unlock()
		k.kill()
		return nil
	}
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)

	cfg := w.writeConfig(fmt.Sprintf("token_url: %s/oauth2/token\nvault:\n  address: %s\nclients:\n"+
		"  - {name: partner, grant: authorization_code, secret: %s}\n", front.URL, lb.URL, path))
	code, out := w.run(cfg)
	if k.when().IsZero() {
		t.Fatalf("the leader was not killed: Doorkeeper granted nothing\n%s", out)
	}
	if code != 0 || outcomes(out)["rotated"] != 1 {
		t.Fatalf("exit %d, outcomes %v, want exit 0 and rotated\n%s", code, outcomes(out), out)
	}
	took, ok := lb.landedAfter(k.when())
	if !ok {
		t.Fatalf("no write-back landed through the balancer after the kill")
	}
	redirected := lb.answered(http.StatusTemporaryRedirect, k.when(), time.Now())
	data := w.data(path)
	rt, _ := data["refresh_token"].(string)
	mu.Lock()
	want := granted
	mu.Unlock()
	if rt == "" || rt != want {
		t.Fatalf("the refresh token in Vault is not the one Doorkeeper granted")
	}
	if !dk.RefreshTokenRevoked(t, old) || dk.RefreshTokenRevoked(t, rt) {
		t.Errorf("Doorkeeper: the spent refresh token revoked %v (want true), the stored one revoked %v (want false)",
			dk.RefreshTokenRevoked(t, old), dk.RefreshTokenRevoked(t, rt))
	}
	if _, ok := data["rotation_claim"]; ok {
		t.Errorf("the claim was left in %s", path)
	}
	// The stored refresh token works: a second pass, on the cluster under its new leader, spends it.
	code2, out2 := w.run(cfg, "--force")
	if rt2, _ := w.data(path)["refresh_token"].(string); code2 != 0 || outcomes(out2)["rotated"] != 1 || rt2 == rt || dk.RefreshTokenRevoked(t, rt2) {
		t.Errorf("second pass with the stored refresh token: exit %d, outcomes %v, a new live refresh token stored %v\n%s",
			code2, outcomes(out2), rt2 != rt && !dk.RefreshTokenRevoked(t, rt2), out2)
	}
	if n := dk.TokenRequests(); n != 2 {
		t.Errorf("Doorkeeper saw %d token requests, want 2 (one per pass)", n)
	}
	if t.Failed() {
		logCalls(t, lb, k.when())
	}
	t.Logf("RELIABILITY ha-failover | leader killed (SIGKILL) when Doorkeeper had answered a refresh, before the answer reached the job | exit %d, %d rotated; the standby answered %d write(s) with a redirect to the dead leader, where the Vault client's retries failed; write-back retries by the job: %d | pair landed %v after the kill; Doorkeeper: the spent refresh token revoked, the stored one live and refreshed again by the next pass; no claim left | Doorkeeper, revoke at once",
		code, outcomes(out)["rotated"], redirected, logLines(out, "write-back failed; retrying"), took.Round(10*time.Millisecond))
}

// logCalls logs the calls the balancer answered from t on, for a failure's diagnosis.
func logCalls(tb testing.TB, lb *balancer, from time.Time) {
	tb.Helper()
	for _, c := range lb.log() {
		if !c.Done.Before(from) {
			tb.Logf("  +%v %s %s %v -> %d in %v", c.At.Sub(from).Round(time.Millisecond), c.Method, c.Path, c.Keys, c.Status, c.Done.Sub(c.At).Round(time.Millisecond))
		}
	}
}

// TestLeaderKilledMidPass kills the leader when one step of a pass sends its first request to
// the job's node: the job's start (its first request of all: the login's and the mount's), the
// read of a credential secret, the claim, the client's pre-flight, the listing of a partner's
// connections. The pre-flight sends a request of its own (sys/capabilities-self) only when the
// pass's prefetch of capabilities failed: the balancer answers that prefetch 503, and the leader
// dies at the next one, the first client's pre-flight. Every step before the token request waits out the
// election (nothing is spent yet), so the pass rotates every client and exits 0; no refresh
// token may be spent without being stored; and the next pass finds nothing lost.
func TestLeaderKilledMidPass(t *testing.T) {
	nth := func(n int, match func(c vaultCall) bool) func() func(c vaultCall) bool {
		return func() func(c vaultCall) bool {
			var mu sync.Mutex
			seen := 0
			return func(c vaultCall) bool {
				if !match(c) {
					return false
				}
				mu.Lock()
				defer mu.Unlock()
				seen++
				return seen == n
			}
		}
	}
	for _, step := range []struct {
		name  string
		at    func() func(c vaultCall) bool
		setup func(w *world, addr string) (cfg string, paths []string)
	}{
		{"start", nth(1, func(vaultCall) bool { return true }), clients(2)},
		{"read", nth(1, func(c vaultCall) bool { return c.Method == http.MethodGet && strings.HasPrefix(c.Path, "secret/data/") }), clients(2)},
		{"claim", nth(1, func(c vaultCall) bool {
			return c.Method == http.MethodPatch && slices.Contains(c.Keys, "rotation_claim") && !slices.Contains(c.Keys, "refresh_token")
		}), clients(2)},
		{"pre-flight", nth(2, func(c vaultCall) bool { return c.Path == "sys/capabilities-self" }), clients(2)},
		{"listing", nth(1, func(c vaultCall) bool { return c.Method == "LIST" }), func(w *world, addr string) (string, []string) {
			shared, conns := w.seedPartner(2)
			return w.partnerConfig(addr, shared), conns
		}},
	} {
		t.Run(step.name, func(t *testing.T) {
			w := newWorld(t)
			lb := w.balancer(w.cluster.Standby(t))
			cfg, paths := step.setup(w, lb.URL)
			k := w.leaderKiller(lb)
			at := step.at()
			if step.name == "pre-flight" {
				lb.setRefuse(nth(1, func(c vaultCall) bool { return c.Path == "sys/capabilities-self" })())
			}
			lb.setHook(func(c vaultCall) {
				if at(c) {
					k.kill()
				}
			})
			code, out := w.run(cfg)
			firstEnd := time.Now()
			if k.when().IsZero() {
				t.Fatalf("the leader was not killed: no %s request\n%s", step.name, out)
			}
			redirected := lb.answered(http.StatusTemporaryRedirect, k.when(), firstEnd)
			defer func() {
				if t.Failed() {
					logCalls(t, lb, k.when())
				}
			}()
			o := outcomes(out)
			// Nothing is spent before the claim, so the steps before it wait out the election
			// (rotate.DefaultVaultWait) and the pass rotates every client.
			if code != 0 || o["rotated"] != len(paths) {
				t.Errorf("exit %d, outcomes %v: want 0 and all %d rotated in the pass the leader died in", code, o, len(paths))
			}
			if n := len(w.issued()); n != o["rotated"] || len(w.stora.Requests()) != n {
				t.Errorf("%d token requests, %d refresh tokens issued, %d rotated: a failed client spent its refresh token", len(w.stora.Requests()), n, o["rotated"])
			}
			if lost := w.unstored(paths); lost != 0 {
				t.Errorf("%d refresh tokens issued and not in Vault", lost)
			}
			if n := w.working(paths); n != len(paths) {
				t.Errorf("%d of %d secrets hold a refresh token the server accepts", n, len(paths))
			}
			firstPass, landed := lb.landedAfter(k.when())
			// The next pass, the cluster under its new leader, rotates what failed.
			code2, out2 := w.run(cfg)
			if code2 != 0 || o["rotated"]+outcomes(out2)["rotated"] != len(paths) || w.unstored(paths) != 0 || w.working(paths) != len(paths) {
				t.Errorf("next pass: exit %d, outcomes %v; %d refresh tokens not in Vault, %d of %d secrets working\n%s",
					code2, outcomes(out2), w.unstored(paths), w.working(paths), len(paths), out2)
			}
			took, _ := lb.landedAfter(k.when())
			where := "in the next pass, started at once"
			if landed {
				took, where = firstPass, "in the same pass"
			}
			if t.Failed() {
				t.Logf("first pass:\n%s", out)
			}
			t.Logf("RELIABILITY ha-failover | leader killed (SIGKILL) at the first %s request of a pass (%d %s) | exit %d, %s; the standby redirected %d request(s) to the dead leader | first pair landed %v after the kill, %s; over both passes %d refresh tokens issued, all in Vault and working | fake, revoke at once",
				step.name, len(paths), map[bool]string{true: "connections", false: "clients"}[step.name == "listing"], code, summary(o), redirected, took.Round(10*time.Millisecond), where, len(w.issued()))
		})
	}
}

// clients seeds n clients and writes their config.
func clients(n int) func(w *world, addr string) (string, []string) {
	return func(w *world, addr string) (string, []string) {
		paths := w.seed(n)
		return w.config(addr, paths), paths
	}
}
