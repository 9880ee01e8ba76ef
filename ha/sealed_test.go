package ha

import (
	"bytes"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The node the job talks to, a standby, is sealed mid-pass (Vault will not seal a standby through
// its API, so it is restarted and left sealed, as a node is during an upgrade): it answers 503 to
// every request until unsealed. docs/bad-input.md (Vault sealed or unreachable): exit 2 at
// start-up naming the address; mid-pass, the client fails and the write-back retries.

// start starts the job with command's arguments and returns a func that waits for its end and
// returns its exit code and output.
func (w *world) start(cfg string, args ...string) func() (int, string) {
	w.t.Helper()
	cmd := w.command(cfg, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	return func() (int, string) {
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), out.String()
		} else if err != nil {
			w.t.Fatal(err)
		}
		return 0, out.String()
	}
}

// holdTokenRequests makes the token endpoint hold every token request until release is called,
// and returns a channel that receives once n requests are held.
func (w *world) holdTokenRequests(n int) (held <-chan struct{}, release func()) {
	var mu sync.Mutex
	count := 0
	all := make(chan struct{})
	gate := make(chan struct{})
	w.stora.Intercept = func(http.ResponseWriter, *http.Request) bool {
		mu.Lock()
		if count++; count == n {
			close(all)
		}
		mu.Unlock()
		<-gate
		return false
	}
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	w.t.Cleanup(release)
	return all, release
}

// TestStandbySealedWhileTokenRequestsAreInFlight seals the job's node while the token endpoint
// holds every client's refresh request, lets the server answer, and unseals the node 6 s later,
// longer than the Vault client's own retries last (2 retries, 3 to 4.5 s): the write-backs meet
// 503s, are retried by the job, and land once the node is back. Every
// refresh token the server issued is in Vault.
func TestStandbySealedWhileTokenRequestsAreInFlight(t *testing.T) {
	w := newWorld(t)
	paths := w.seed(3)
	standby := w.cluster.Standby(t)
	lb := w.balancer(standby)
	held, release := w.holdTokenRequests(len(paths))
	wait := w.start(w.config(lb.URL, paths))
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		release()
		code, out := wait()
		t.Fatalf("the job did not send %d token requests at once: exit %d\n%s", len(paths), code, out)
	}
	standby.Seal(t)
	sealed := time.Now()
	release()
	time.Sleep(6 * time.Second)
	standby.Unseal(t)
	unsealed := time.Now()
	code, out := wait()
	if code != 0 || outcomes(out)["rotated"] != len(paths) {
		t.Fatalf("exit %d, outcomes %v, want exit 0 and %d rotated\n%s", code, outcomes(out), len(paths), out)
	}
	if n, lost := len(w.issued()), w.unstored(paths); n != len(paths) || lost != 0 {
		t.Errorf("the server issued %d refresh tokens, %d of them not in Vault", n, lost)
	}
	if n := w.working(paths); n != len(paths) {
		t.Errorf("%d of %d secrets hold a refresh token the server accepts", n, len(paths))
	}
	for _, p := range paths {
		if _, ok := w.data(p)["rotation_claim"]; ok {
			t.Errorf("the claim was left in %s", p)
		}
	}
	var last time.Time
	for _, c := range lb.log() {
		if c.landed() && c.Done.After(last) {
			last = c.Done
		}
	}
	sealedAnswers := lb.answered(http.StatusServiceUnavailable, sealed, time.Now())
	if sealedAnswers == 0 || logLines(out, "write-back failed; retrying") == 0 {
		t.Errorf("the sealed node answered 503 %d times, the job retried its write-backs %d times: the seal did not outlast the Vault client's own retries",
			sealedAnswers, logLines(out, "write-back failed; retrying"))
	}
	t.Logf("RELIABILITY ha-failover | the job's node sealed while %d refresh requests were in flight, unsealed %v later | exit %d, %d rotated; %d answers 503 (sealed); write-back retries by the job: %d | last pair landed %v after the unseal; %d refresh tokens issued, all in Vault and working; no claim left | fake, revoke at once",
		len(paths), unsealed.Sub(sealed).Round(100*time.Millisecond), code, outcomes(out)["rotated"], sealedAnswers,
		logLines(out, "write-back failed; retrying"), last.Sub(unsealed).Round(10*time.Millisecond), len(w.issued()))
}

// TestStandbySealedBeforeTheClaim seals the job's node when its first claim arrives, and leaves it
// sealed: no client can claim its secret, so none spends its refresh token. Each waits for Vault
// (rotate.DefaultVaultWait, 30 s) and then fails (exit 1), the server sees no request, and the
// next pass, the node back, rotates them all.
func TestStandbySealedBeforeTheClaim(t *testing.T) {
	w := newWorld(t)
	paths := w.seed(2)
	standby := w.cluster.Standby(t)
	lb := w.balancer(standby)
	arrived, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	lb.setHook(func(c vaultCall) {
		if c.Method == http.MethodPatch && slices.Contains(c.Keys, "rotation_claim") && !slices.Contains(c.Keys, "refresh_token") {
			once.Do(func() { close(arrived) })
			<-proceed
		}
	})
	wait := w.start(w.config(lb.URL, paths))
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		close(proceed)
		code, out := wait()
		t.Fatalf("no claim reached Vault: exit %d\n%s", code, out)
	}
	standby.Seal(t)
	sealed := time.Now()
	close(proceed)
	code, out := wait()
	waited := time.Since(sealed)
	if logLines(out, "vault unavailable; waiting") == 0 || waited < 20*time.Second {
		t.Errorf("the claims failed %v after the seal, logging %d waits: want them to wait for Vault (30 s)", waited.Round(time.Second), logLines(out, "vault unavailable; waiting"))
	}
	if code != 1 || outcomes(out)["failed"] != len(paths) {
		t.Fatalf("exit %d, outcomes %v, want exit 1 and %d failed\n%s", code, outcomes(out), len(paths), out)
	}
	if strings.Count(out, `"error":"claim `) != len(paths) || !strings.Contains(out, "Vault is sealed") {
		t.Errorf("the failures do not say the claim met a sealed Vault:\n%s", out)
	}
	if n := len(w.stora.Requests()); n != 0 {
		t.Errorf("the server saw %d token requests, want 0: a refresh token was spent with Vault sealed", n)
	}
	if n := w.working(paths); n != len(paths) {
		t.Errorf("%d of %d secrets hold a refresh token the server accepts", n, len(paths))
	}
	standby.Unseal(t)
	code2, out2 := w.run(w.config(lb.URL, paths))
	if code2 != 0 || outcomes(out2)["rotated"] != len(paths) || w.working(paths) != len(paths) || w.unstored(paths) != 0 {
		t.Errorf("the next pass, the node unsealed: exit %d, outcomes %v, %d of %d secrets working\n%s",
			code2, outcomes(out2), w.working(paths), len(paths), out2)
	}
	t.Logf("RELIABILITY ha-failover | the job's node sealed when the first claim arrived, left sealed | waited %v for Vault, then exit %d, %d failed (claim: Vault sealed), 0 token requests | every refresh token still the stored one and working; the next pass, the node unsealed, rotated %d | fake, revoke at once",
		waited.Round(time.Second), code, outcomes(out)["failed"], outcomes(out2)["rotated"])
}

// TestStandbySealedAtStart gives the job a sealed node, left sealed: it waits out a Vault that
// cannot answer (rotate.DefaultVaultWait, 30 s: a node restarting in an upgrade comes back within
// it), then exits 2 naming the address, with no token request.
func TestStandbySealedAtStart(t *testing.T) {
	w := newWorld(t)
	paths := w.seed(1)
	standby := w.cluster.Standby(t)
	lb := w.balancer(standby)
	standby.Seal(t)
	start := time.Now()
	code, out := w.run(w.config(lb.URL, paths))
	waited := time.Since(start)
	if code != 2 || !strings.Contains(out, lb.URL) || !strings.Contains(out, "sealed") {
		t.Fatalf("exit %d, want 2 with a message naming %s and the seal:\n%s", code, lb.URL, out)
	}
	if waited < 20*time.Second || logLines(out, "vault unavailable; waiting") == 0 {
		t.Errorf("exit after %v with %d waits logged: want the start to wait for Vault (30 s)", waited, logLines(out, "vault unavailable; waiting"))
	}
	if n := len(w.stora.Requests()); n != 0 {
		t.Errorf("the server saw %d token requests, want 0", n)
	}
	t.Logf("RELIABILITY ha-failover | the job's node sealed before the job starts, left sealed | waited %v for Vault, then exit %d, naming the address | 0 token requests | fake, revoke at once", waited.Round(time.Second), code)
}
