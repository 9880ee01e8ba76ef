//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"token-rotator/internal/faultproxy"
	"token-rotator/internal/storafake"
	"token-rotator/internal/testenv"
)

// The tests in this file run the built token-rotator binary as separate processes, the way a
// CronJob and a manual run would overlap, and signal them. Each logs a "RELIABILITY" line that
// scripts/reliability gathers into RELIABILITY.md.

// TestMain removes the binary the tests in this package built (testenv.JobBinary).
func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveJobBinary()
	os.Exit(code)
}

// issuance remembers, per client, the refresh tokens the server issued, in order, and when.
type issuance struct {
	mu     sync.Mutex
	tokens map[string][]string
	at     map[string]time.Time
}

func watchIssuance(s *storafake.Server) *issuance {
	is := &issuance{tokens: map[string][]string{}, at: map[string]time.Time{}}
	s.Issued = func(clientID, rt string) {
		is.mu.Lock()
		defer is.mu.Unlock()
		is.tokens[clientID] = append(is.tokens[clientID], rt)
		is.at[rt] = time.Now()
	}
	return is
}

func (is *issuance) latest(clientID string) string {
	is.mu.Lock()
	defer is.mu.Unlock()
	if l := is.tokens[clientID]; len(l) > 0 {
		return l[len(l)-1]
	}
	return ""
}

func (is *issuance) count(clientID string) int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return len(is.tokens[clientID])
}

// procWorld is a real Vault, the fake token endpoint (revoking refresh tokens on use) and
// partner secrets seeded with live refresh tokens.
type procWorld struct {
	t        *testing.T
	vault    *testenv.Vault
	stora    *storafake.Server
	tokenURL string
	issued   *issuance
	ids      map[string]string // secret path -> client_id
}

func newProcWorld(t *testing.T) *procWorld {
	v := testenv.StartVault(t)
	s := storafake.New()
	s.RevokeImmediately = true
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return &procWorld{t: t, vault: v, stora: s, tokenURL: ts.URL + "/oauth2/token", issued: watchIssuance(s), ids: map[string]string{}}
}

// seed creates n partner clients, each with its own application and a live refresh token in Vault.
func (w *procWorld) seed(prefix string, n int) []string {
	var paths []string
	for i := 0; i < n; i++ {
		id, secret := w.stora.AddClient()
		p := fmt.Sprintf("%s/p%02d", prefix, i)
		w.put(p, map[string]any{"client_id": id, "client_secret": secret, "refresh_token": w.stora.IssueRefreshToken(id, "public.contact:read")})
		w.ids[p] = id
		paths = append(paths, p)
	}
	return paths
}

func (w *procWorld) put(path string, data map[string]any) {
	w.t.Helper()
	if _, err := w.vault.Client.KVv2("secret").Put(context.Background(), path, data); err != nil {
		w.t.Fatal(err)
	}
}

func (w *procWorld) data(path string) map[string]any {
	w.t.Helper()
	s, err := w.vault.Client.KVv2("secret").Get(context.Background(), path)
	if err != nil {
		w.t.Fatal(err)
	}
	return s.Data
}

// config writes a config whose clients are the given secrets (output = secret) and returns it.
func (w *procWorld) config(vaultAddr string, paths []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "token_url: %s\nvault:\n  address: %s\nclients:\n", w.tokenURL, vaultAddr)
	for i, p := range paths {
		fmt.Fprintf(&b, "  - {name: c%02d, grant: authorization_code, secret: %s}\n", i, p)
	}
	return writeConfig(w.t, b.String())
}

func (w *procWorld) command(cfg string, args ...string) *exec.Cmd {
	cmd := exec.Command(testenv.JobBinary(w.t), append([]string{"--config", cfg, "--once", "--log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "VAULT_TOKEN="+w.vault.Token)
	return cmd
}

// runAtOnce starts n `--once` processes on cfg at the same instant and waits for them all. It
// returns everything they printed, how many exited non-zero (each an error of the test, with its
// output), and the time from the first start to the last exit.
func (w *procWorld) runAtOnce(t *testing.T, cfg string, n int) (all string, failedRuns int, elapsed time.Duration) {
	t.Helper()
	var b strings.Builder
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for i := 0; i < n; i++ {
		cmd := w.command(cfg)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmds, outs = append(cmds, cmd), append(outs, &out)
	}
	start := time.Now()
	for _, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			failedRuns++
			t.Errorf("process %d: %v\n%s", i, err, outs[i])
		}
		b.WriteString(outs[i].String())
	}
	return b.String(), failedRuns, time.Since(start)
}

// outcomes counts the outcome of every client line in JSON logs.
func outcomes(logs string) map[string]int {
	n := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var l struct {
			Client  string `json:"client"`
			Outcome string `json:"outcome"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Client != "" && l.Outcome != "" {
			n[l.Outcome]++
		}
	}
	return n
}

// TestConcurrentRunsShareSecretsSafely starts N processes at the same instant on the same M
// secrets, against a server that retires a refresh token the moment it is used. Every secret
// must end with the newest pair the server issued, and no run may report a failure for a race it
// lost.
func TestConcurrentRunsShareSecretsSafely(t *testing.T) {
	const processes, secrets = 8, 20
	w := newProcWorld(t)
	paths := w.seed("race", secrets)
	cfg := w.config(w.vault.Addr, paths)
	all, failedRuns, elapsed := w.runAtOnce(t, cfg, processes)
	held := 0
	for _, p := range paths {
		d := w.data(p)
		rt, _ := d["refresh_token"].(string)
		at, _ := d["access_token"].(string)
		switch {
		case rt != w.issued.latest(w.ids[p]):
			t.Errorf("%s: Vault holds an older refresh token than the newest issued (%d issued)", p, w.issued.count(w.ids[p]))
		case !w.stora.RefreshTokenValid(rt) || at == "":
			t.Errorf("%s: the pair in Vault does not work", p)
		case d["rotation_claim"] != nil:
			t.Errorf("%s: a claim was left behind", p)
		default:
			held++
		}
	}
	n := outcomes(all)
	if n["failed"] > 0 {
		t.Errorf("%d client failures reported for races lost", n["failed"])
	}
	// The claims let exactly one process spend each refresh token: one refresh per secret.
	refreshes := 0
	for _, p := range paths {
		refreshes += w.issued.count(w.ids[p])
	}
	if refreshes != secrets || n["rotated"] != secrets {
		t.Errorf("the server issued %d refresh tokens and %d rotations were reported for %d secrets; want exactly one each: a claim let two processes spend one refresh token", refreshes, n["rotated"], secrets)
	}
	t.Logf("RELIABILITY race | %d processes × %d secrets, started at once | %d rotated, %d skipped as claimed elsewhere, %d found fresh, %d rotated elsewhere, %d failed | %d/%d secrets hold the newest pair; %d runs exited non-zero | %v",
		processes, secrets, n["rotated"], n["claimed_elsewhere"], n["not_due"], n["rotated_elsewhere"], n["failed"], held, secrets, failedRuns, elapsed.Round(time.Millisecond))
}

// TestSIGTERMAtEachStep signals a run at each step of a rotation. Whatever the step, the pair in
// Vault afterwards is the newest the server issued, and the exit code says what happened.
func TestSIGTERMAtEachStep(t *testing.T) {
	w := newProcWorld(t)
	u, _ := url.Parse(w.vault.Addr)
	vp := faultproxy.Start(t, u.Host)
	proxied := "http://" + vp.Addr

	type step struct {
		name string
		// arm sets up the servers to call term() at the step, and returns a cleanup.
		arm func(term func()) func()
		// rotated and skipped are the outcomes RELIABILITY.md states for the step: the rotation
		// under way finishes, the client not yet started is skipped.
		rotated, skipped int
	}
	steps := []step{
		{"before anything", nil, 0, 0},
		{"while Vault is read at start-up", func(term func()) func() {
			vp.Set(faultproxy.Stall)
			before := vp.Connections()
			go func() {
				for vp.Connections() == before { // the process has its signal handler by now
					time.Sleep(5 * time.Millisecond)
				}
				term()
				time.Sleep(200 * time.Millisecond)
				vp.Set(faultproxy.Pass)
			}()
			return func() {}
		}, 0, 0},
		{"token request in flight", func(term func()) func() {
			w.stora.Intercept = func(http.ResponseWriter, *http.Request) bool {
				term()
				time.Sleep(200 * time.Millisecond) // the server answers after the signal
				return false
			}
			return func() { w.stora.Intercept = nil }
		}, 1, 1},
		{"response received, Vault stalls the write-back", func(term func()) func() {
			prev := w.stora.Issued
			w.stora.Issued = func(id, rt string) {
				prev(id, rt)
				vp.Set(faultproxy.Stall)
				term()
				time.AfterFunc(500*time.Millisecond, func() { vp.Set(faultproxy.Pass) })
			}
			return func() { w.stora.Issued = prev }
		}, 1, 1},
		{"Vault drops connections during the write-back", func(term func()) func() {
			prev := w.stora.Issued
			w.stora.Issued = func(id, rt string) {
				prev(id, rt)
				vp.Set(faultproxy.Refuse)
				term()
				time.AfterFunc(500*time.Millisecond, func() { vp.Set(faultproxy.Pass) })
			}
			return func() { w.stora.Issued = prev }
		}, 1, 1},
	}
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			paths := w.seed(fmt.Sprintf("term%d", i), 2)
			cmd := w.command(w.config(proxied, paths), "--log-level", "debug")
			var out testenv.SyncBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			var once sync.Once
			term := func() { once.Do(func() { _ = cmd.Process.Signal(syscall.SIGTERM) }) }
			if st.arm != nil {
				defer st.arm(term)()
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if st.arm == nil {
				term()
			}
			err := cmd.Wait()
			code := cmd.ProcessState.ExitCode()
			n := outcomes(out.String())
			newest := 0
			for _, p := range paths {
				rt, _ := w.data(p)["refresh_token"].(string)
				if latest := w.issued.latest(w.ids[p]); latest != "" && rt != latest {
					t.Errorf("%s: Vault does not hold the newest refresh token issued", p)
				} else if !w.stora.RefreshTokenValid(rt) {
					t.Errorf("%s: the refresh token in Vault is dead", p)
				} else {
					newest++
				}
			}
			// A signal before the handler is set kills the process (exit -1): nothing was spent.
			// Any later signal ends in exit 0: a rotation under way finishes, the clients not yet
			// started are skipped.
			if (st.arm == nil && code != -1 && code != 0) || (st.arm != nil && code != 0) {
				t.Errorf("exit %d: %v\n%s", code, err, out.String())
			}
			if n["rotated"] != st.rotated || n["skipped"] != st.skipped {
				t.Errorf("%d rotated, %d skipped; want %d rotated, %d skipped: the signal must stop the pass from starting the second client", n["rotated"], n["skipped"], st.rotated, st.skipped)
			}
			t.Logf("RELIABILITY sigterm | %s | exit %d, %d rotated, %d skipped | %d/%d secrets hold the newest pair",
				st.name, code, n["rotated"], n["skipped"], newest, len(paths))
		})
	}
}

// TestSecondSIGTERMExitsAtOnce sends SIGTERM twice while a refresh request is held by the token
// endpoint. The first only stops new work (the other clients are skipped); the second ends the
// process at once, with exit 3 and a line on stderr saying why, before the request is answered.
func TestSecondSIGTERMExitsAtOnce(t *testing.T) {
	w := newProcWorld(t)
	paths := w.seed("second", 3)
	cfg := w.config(w.vault.Addr, paths)
	body, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// One request at a time: the third client waits for a worker, and is skipped on the first
	// signal, which shows the process has handled it before the second is sent.
	if err := os.WriteFile(cfg, append([]byte("concurrency: 1\n"), body...), 0o600); err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	var holdOnce sync.Once
	w.stora.Intercept = func(rw http.ResponseWriter, _ *http.Request) bool {
		holdOnce.Do(func() { close(held); <-release })
		rw.WriteHeader(http.StatusServiceUnavailable) // nothing spent: the stored token stays live
		return true
	}
	defer close(release) // before the server's cleanup waits for the held request

	cmd := w.command(cfg)
	var stdout, stderr testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-held:
	case err := <-exited:
		t.Fatalf("exited (%v) before any token request:\n%s", err, stderr.String())
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("no token request:\n%s", stderr.String())
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), `"reason":"shutting down"`); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("no client skipped after the first SIGTERM:\n%s", stderr.String())
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("still running 10s after the second SIGTERM, with its token request held:\n%s", stderr.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != exitInterrupted {
		t.Errorf("exit %d after a second SIGTERM, want %d:\n%s", code, exitInterrupted, stderr.String())
	}
	if !strings.Contains(stderr.String(), "token-rotator: second signal: exiting without waiting") {
		t.Errorf("stderr does not say why it exited:\n%s", stderr.String())
	}
	newest := 0
	for _, p := range paths {
		rt, _ := w.data(p)["refresh_token"].(string)
		if latest := w.issued.latest(w.ids[p]); latest != "" && rt != latest {
			t.Errorf("%s: Vault does not hold the newest refresh token issued", p)
		} else if !w.stora.RefreshTokenValid(rt) {
			t.Errorf("%s: the refresh token in Vault is dead", p)
		} else {
			newest++
		}
	}
	t.Logf("RELIABILITY sigterm | a second SIGTERM while the token request is held (3 clients, one request at a time) | exit %d at once, request unanswered; %d skipped | %d/%d secrets hold the newest pair",
		cmd.ProcessState.ExitCode(), outcomes(stderr.String())["skipped"], newest, len(paths))
}

// TestSIGKILLAtRandomMoments kills runs at random moments, many times over, and counts refresh
// tokens lost. A loss is only possible once the refresh request has left the process and before
// the write-back lands: the server may rotate the token (even after the client is dead, from a
// request already on the wire) and its answer dies with the process. The test checks every loss
// is such a case (the server issued a new token during that run) and measures how long that
// window is in runs left alone: from the request reaching the server to the pair in Vault.
func TestSIGKILLAtRandomMoments(t *testing.T) {
	const iterations = 150
	w := newProcWorld(t)
	paths := w.seed("kill", 1)
	p, id := paths[0], w.ids[paths[0]]
	cfg := w.config(w.vault.Addr, paths)
	var arrivedMu sync.Mutex
	var arrived time.Time // when the last token request reached the server
	w.stora.Intercept = func(http.ResponseWriter, *http.Request) bool {
		arrivedMu.Lock()
		arrived = time.Now()
		arrivedMu.Unlock()
		return false
	}
	lastArrival := func() time.Time { arrivedMu.Lock(); defer arrivedMu.Unlock(); return arrived }

	// Calibrate: how long does a whole run take, and how long from the server's response to the
	// pair being in Vault?
	var runTimes, windows []time.Duration
	for i := 0; i < 5; i++ {
		before := w.issued.count(id)
		start := time.Now()
		if out, err := w.command(cfg, "--force").CombinedOutput(); err != nil {
			t.Fatalf("calibration run: %v\n%s", err, out)
		}
		runTimes = append(runTimes, time.Since(start))
		if w.issued.count(id) == before+1 {
			windows = append(windows, w.written(p).Sub(lastArrival()))
		}
	}
	slices.Sort(runTimes)
	median := runTimes[len(runTimes)/2]

	var lostInWindow, lostAfterDeath, lostOutside, claimsLeft, killedMidRun int
	for i := 0; i < iterations; i++ {
		before := w.issued.count(id)
		cmd := w.command(cfg, "--force")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(median * 3 / 2))))
		killedAt := time.Now()
		_ = cmd.Process.Kill()
		err := cmd.Wait()
		if err != nil {
			killedMidRun++
		}
		d := w.data(p)
		if d["rotation_claim"] != nil {
			claimsLeft++ // a run killed after claiming: the claim lapses in 15 minutes; lapse it now
			delete(d, "rotation_claim")
			w.put(p, d)
		}
		rt, _ := d["refresh_token"].(string)
		if w.stora.RefreshTokenValid(rt) {
			if w.issued.count(id) > before && err == nil && rt == w.issued.latest(id) {
				windows = append(windows, w.written(p).Sub(lastArrival()))
			}
			continue
		}
		// Lost. It is inside the window when the server issued a new pair for this run's request
		// and Vault does not hold it.
		if n := w.issued.count(id); n > before {
			lostInWindow++
			if w.issued.at[w.issued.latest(id)].After(killedAt) {
				lostAfterDeath++
			}
		} else {
			lostOutside++
			t.Errorf("run %d: refresh token lost outside the window between response and write-back (issued %d → %d, killed %v)",
				i, before, n, killedAt.Format(time.StampMicro))
		}
		w.put(p, map[string]any{"client_id": d["client_id"], "client_secret": d["client_secret"], "refresh_token": w.stora.IssueRefreshToken(id, "public.contact:read")})
	}
	// Aimed kills: SIGKILL at the instant the server commits the new pair, before its answer
	// leaves. These land in the window by construction; the test must see each as a loss there.
	const aimed = 5
	aimedLost := 0
	prev := w.stora.Issued
	defer func() { w.stora.Issued = prev }()
	for i := 0; i < aimed; i++ {
		before := w.issued.count(id)
		cmd := w.command(cfg, "--force")
		w.stora.Issued = func(cid, rt string) {
			prev(cid, rt)
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		w.stora.Issued = prev
		d := w.data(p)
		rt, _ := d["refresh_token"].(string)
		if !w.stora.RefreshTokenValid(rt) && w.issued.count(id) > before {
			aimedLost++
		}
		delete(d, "rotation_claim")
		d["refresh_token"] = w.stora.IssueRefreshToken(id, "public.contact:read")
		w.put(p, d)
	}
	if aimedLost != aimed {
		t.Errorf("%d of %d kills aimed inside the window lost the refresh token; the test cannot see losses", aimedLost, aimed)
	}

	slices.Sort(windows)
	var p50, maxW time.Duration
	if len(windows) > 0 {
		p50, maxW = windows[len(windows)/2], windows[len(windows)-1]
	}
	// The bounds RELIABILITY.md states: the window is a few milliseconds (its median under
	// maxWindow even on a loaded machine), so random kills lose a refresh token in few runs.
	const maxWindow, maxLostShare = 20 * time.Millisecond, 10
	if len(windows) == 0 || p50 > maxWindow {
		t.Errorf("median window from the refresh request reaching the server to the pair in Vault %v over %d runs; want under %v: something stands between the response and the write-back", p50, len(windows), maxWindow)
	}
	if lostInWindow > iterations/maxLostShare {
		t.Errorf("%d of %d random kills lost a refresh token; want at most %d (1 in %d): the window is wider than it should be", lostInWindow, iterations, iterations/maxLostShare, maxLostShare)
	}
	t.Logf("RELIABILITY sigkill | %d runs killed at random in [0, %v] (a whole run takes %v) | %d died mid-run, %d left a claim | %d refresh tokens lost inside the window (%d of them rotated by the server after the process was dead; the test fails above %d), %d outside (fails above 0) | window from the refresh request reaching the server to the pair in Vault: median %v (the test fails above %v), max %v over %d runs",
		iterations, (median * 3 / 2).Round(time.Millisecond), median.Round(time.Millisecond), killedMidRun, claimsLeft,
		lostInWindow, lostAfterDeath, iterations/maxLostShare, lostOutside, p50.Round(100*time.Microsecond), maxWindow, maxW.Round(100*time.Microsecond), len(windows))
	t.Logf("RELIABILITY sigkill | %d runs killed at the instant the server committed the new pair | all died mid-run | %d refresh tokens lost inside the window, 0 outside | (the losses the window allows, shown to be seen)",
		aimed, aimedLost)
}

// written is when Vault created the current version of the secret at path.
func (w *procWorld) written(path string) time.Time {
	s, err := w.vault.Client.KVv2("secret").Get(context.Background(), path)
	if err != nil || s.VersionMetadata == nil {
		w.t.Fatalf("metadata of %s: %v", path, err)
	}
	return s.VersionMetadata.CreatedTime
}
