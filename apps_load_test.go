//go:build unix

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"token-rotator/apptoken"
	"token-rotator/internal/testenv"
)

// The figure app owners need (issue 12): what apps see while the job rotates the token they
// share, against the real Doorkeeper's protected resource, with the built binary as the job.

const (
	// loadFor is how long the apps call the API; the job rotates every rotateEvery meanwhile,
	// the first time after firstRotation: 12 rotations in 60 s.
	loadFor       = 60 * time.Second
	rotateEvery   = 5 * time.Second
	firstRotation = 2200 * time.Millisecond
	// podsPerKind app instances of each kind run, each calling the API perPodPerSecond times a
	// second: 20 requests a second for each kind.
	podsPerKind     = 2
	perPodPerSecond = 10
	// naiveEvery is how often a naive pod reads Vault again; the pods are staggered by
	// naiveEvery/podsPerKind.
	naiveEvery = 3 * time.Second
	// appTimeout bounds each API call, the apptoken Transport's wait for a new token included
	// (WaitForNew, 10 s by default). Doorkeeper answers in milliseconds here: a timeout is a
	// failure, and must not be one the machine's load makes.
	appTimeout = 20 * time.Second
	outputPath = "apps/partner"
)

// TestAppsUnderRotation runs, in each revocation mode of the real Doorkeeper, the job
// (`token-rotator --once --force`, every 5 s) rotating a partner's authorization-code token at
// least 10 times in 60 s, while four app pods share that token, each calling the protected API
// 10 times a second: two through package apptoken (the 401 rule), two naive (they read Vault every
// 3 s, staggered, and send what they last read). It asserts that every request through apptoken
// succeeded, that the naive pods saw failures (so the test sees them), that the load was made,
// and that at least 10 rotations landed in Vault. It prints both kinds' figures.
func TestAppsUnderRotation(t *testing.T) {
	t.Parallel()
	for _, immediate := range []bool{false, true} {
		mode := map[bool]string{true: "revoked at once", false: "revoked on use"}[immediate]
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			appsUnderRotation(t, immediate, mode)
		})
	}
}

func appsUnderRotation(t *testing.T, immediate bool, mode string) {
	w := newLoadWorld(t, immediate)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var pkg, naive []*appPod
	for i := range podsPerKind {
		pkg = append(pkg, w.apptokenPod(ctx, fmt.Sprintf("apptoken-%d", i)))
		naive = append(naive, w.naivePod(ctx, fmt.Sprintf("naive-%d", i), time.Duration(i)*naiveEvery/podsPerKind))
	}
	begin := time.Now()
	end := begin.Add(loadFor)
	var calls sync.WaitGroup
	for i, p := range append(slices.Clone(pkg), naive...) {
		// Spread the pods' ticks over the interval, so that the server sees a steady stream.
		go p.drive(begin.Add(time.Duration(i)*time.Second/perPodPerSecond/(2*podsPerKind)), end, &calls)
	}
	jobDone := w.rotateUntil(begin.Add(firstRotation), end)
	time.Sleep(time.Until(end))
	calls.Wait()
	job := <-jobDone
	cancel()

	if job.failedRuns > 0 {
		t.Errorf("%d of %d job runs failed", job.failedRuns, job.runs)
	}
	if job.landed < 10 {
		t.Errorf("the access token in Vault changed %d times in %v (%d job runs); want at least 10 rotations", job.landed, loadFor, job.runs)
	}
	a, b := figuresOf(pkg), figuresOf(naive)
	wantCalls := int(0.95 * float64(podsPerKind*perPodPerSecond) * loadFor.Seconds())
	for _, f := range []figures{a, b} {
		if f.requests < wantCalls {
			t.Errorf("%s pods made %d requests in %v; want at least %d (%d a second)", f.kind, f.requests, loadFor, wantCalls, podsPerKind*perPodPerSecond)
		}
	}
	if a.failed > 0 {
		// A request is sent again once. When the server takes longer than the time between two
		// rotations to answer (a machine too loaded to run this test), the second try can meet
		// the next rotation: say so, with the naive pods' latency, which no retry lengthens.
		t.Errorf("%d of %d requests through apptoken failed; want none (naive pods' latency p50 / p99 / max: %s; the test needs answers well within the %v between rotations):\n%s",
			a.failed, a.requests, b.latency(), rotateEvery, strings.Join(a.firstFailures, "\n"))
	}
	if b.failed == 0 {
		t.Errorf("no request of the naive pods failed across %d rotations: the test cannot see what a rotation does to apps", job.landed)
	}

	pods := fmt.Sprintf("%d pods × %d req/s", podsPerKind, perPodPerSecond)
	landed := fmt.Sprintf("%d in %.0f s (%d job runs)", job.landed, loadFor.Seconds(), job.runs)
	t.Logf("RELIABILITY apps-load | %s | apptoken (`Transport`, default options), %s | %d requests, %d failed (the test fails above 0) | %d, each sent again with the token Vault then held | %s | %d | %s | %s",
		mode, pods, a.requests, a.failed, a.refused, a.longestFailing(), a.vaultReads, a.latency(), landed)
	t.Logf("RELIABILITY apps-load | %s | naive: reads Vault every %.0f s, sends what it read, %s | %d requests, %d failed (%.1f%%) | %d, each a failed request | %s | %d | %s | %s",
		mode, naiveEvery.Seconds(), pods, b.requests, b.failed, 100*float64(b.failed)/float64(max(b.requests, 1)), b.unauthorized, b.longestFailing(), b.vaultReads, b.latency(), landed)
}

// loadWorld is a real Vault, the real Doorkeeper, a partner's client with a refresh token that
// Doorkeeper's set-up route issued (as an operator's consent would), and a config for the built
// job that writes the partner's access token to outputPath.
type loadWorld struct {
	t     *testing.T
	vault *testenv.Vault
	dk    *testenv.Doorkeeper
	cfg   string
}

func newLoadWorld(t *testing.T, immediate bool) *loadWorld {
	testenv.JobBinary(t)
	w := &loadWorld{t: t, vault: testenv.StartVault(t), dk: testenv.StartDoorkeeper(t, testenv.DoorkeeperOptions{RevokeImmediately: immediate})}
	id, secret := w.dk.AddClient(t, "https://partner.example/callback", "")
	_, rt := w.dk.IssueTokenPair(t, id, "public.contact:read")
	if _, err := w.vault.Client.KVv2("secret").Put(context.Background(), "stora/partner",
		map[string]any{"client_id": id, "client_secret": secret, "refresh_token": rt}); err != nil {
		t.Fatal(err)
	}
	w.cfg = writeConfig(t, fmt.Sprintf("token_url: %s\nvault:\n  address: %s\n  kv_mount: secret\nclients:\n"+
		"  - {name: partner, grant: authorization_code, secret: stora/partner, output: %s}\n", w.dk.TokenURL, w.vault.Addr, outputPath))
	if err := w.rotate(); err != nil { // the output apps read
		t.Fatal(err)
	}
	return w
}

// rotate runs `token-rotator --once --force` once and returns an error when it did not exit 0
// with the client rotated.
func (w *loadWorld) rotate() error {
	cmd := exec.Command(testenv.JobBinary(w.t), "--config", w.cfg, "--once", "--force", "--log-format", "json")
	cmd.Env = append(os.Environ(), "VAULT_TOKEN="+w.vault.Token)
	out, err := cmd.CombinedOutput()
	if n := outcomes(string(out)); err != nil || n["rotated"] != 1 {
		return fmt.Errorf("token-rotator --once --force: %v, outcomes %v:\n%s", err, n, out)
	}
	return nil
}

// accessToken is the access token in the output secret now.
func (w *loadWorld) accessToken() string {
	s, err := w.vault.Client.KVv2("secret").Get(context.Background(), outputPath)
	if err != nil {
		w.t.Errorf("read %s: %v", outputPath, err)
		return ""
	}
	at, _ := s.Data["access_token"].(string)
	return at
}

// jobFigures are what rotateUntil saw.
type jobFigures struct {
	runs, failedRuns int
	landed           int // times the access token in Vault changed after a run
}

// rotateUntil runs the job at first and every rotateEvery after (but never sooner than
// rotateEvery/2 after a run ended), while before end, in the background, and sends what it saw
// once its last run is over.
func (w *loadWorld) rotateUntil(first, end time.Time) <-chan jobFigures {
	done := make(chan jobFigures, 1)
	go func() {
		var f jobFigures
		prev := w.accessToken()
		for at := first; at.Before(end); at = at.Add(rotateEvery) {
			time.Sleep(time.Until(at))
			f.runs++
			if err := w.rotate(); err != nil {
				f.failedRuns++
				w.t.Error(err)
			}
			if now := w.accessToken(); now != prev && now != "" {
				f.landed++
				prev = now
			}
			// A run that overran its slot must not make the next one follow at once: two
			// rotations in quick succession would be this test's doing, not the job's.
			if soonest := time.Now().Add(rotateEvery / 2); at.Add(rotateEvery).Before(soonest) {
				at = soonest.Add(-rotateEvery)
			}
		}
		done <- f
	}()
	return done
}

// appPod is one app instance: it calls the API perPodPerSecond times a second, each call in its
// own goroutine so that a slow answer delays nothing else, and records every call.
type appPod struct {
	name    string
	call    func() (status int, err error)
	vault   *testenv.Requests
	refused *atomic.Int64 // 401s the apptoken Transport met and handled; nil for naive pods

	mu    sync.Mutex
	calls []apiCall
}

type apiCall struct {
	sent   time.Time
	took   time.Duration
	status int
	err    error
}

func (c apiCall) failed() bool { return c.err != nil || c.status != http.StatusOK }

// drive calls the API from start until end; calls tracks the calls in flight.
func (p *appPod) drive(start, end time.Time, calls *sync.WaitGroup) {
	time.Sleep(time.Until(start))
	tick := time.NewTicker(time.Second / perPodPerSecond)
	defer tick.Stop()
	for now := time.Now(); now.Before(end); now = <-tick.C {
		calls.Add(1)
		go func() {
			defer calls.Done()
			sent := time.Now()
			status, err := p.call()
			p.mu.Lock()
			p.calls = append(p.calls, apiCall{sent: sent, took: time.Since(sent), status: status, err: err})
			p.mu.Unlock()
		}()
	}
}

// apptokenPod is an app pod as docs/apps.md tells a Go app to be written: package apptoken's Source
// on a Vault client of its own, and an http.Client whose Transport is the Source's (the 401
// rule). Its calls carry no Authorization header: the Transport sets it.
func (w *loadWorld) apptokenPod(ctx context.Context, name string) *appPod {
	w.t.Helper()
	vc, reads := w.vault.CountingClient(w.t, w.vault.Token)
	src, err := apptoken.New(vc, apptoken.Options{Mount: "secret", Path: outputPath})
	if err != nil {
		w.t.Fatal(err)
	}
	refused := &atomic.Int64{}
	base := testenv.Unauthorized{Base: http.DefaultTransport.(*http.Transport).Clone(), N: refused}
	client := &http.Client{Transport: src.Transport(base), Timeout: appTimeout}
	return &appPod{name: name, vault: reads, refused: refused, call: func() (int, error) {
		return get(ctx, client, w.dk.APIURL, "")
	}}
}

// naivePod is an app pod without the 401 rule: it reads the output secret at start, again every
// naiveEvery (the first time after firstRead), and sends the access token it last read.
func (w *loadWorld) naivePod(ctx context.Context, name string, firstRead time.Duration) *appPod {
	w.t.Helper()
	vc, reads := w.vault.CountingClient(w.t, w.vault.Token)
	var token atomic.Pointer[string]
	read := func() error {
		s, err := vc.KVv2("secret").Get(ctx, outputPath)
		if err != nil {
			return err
		}
		at, _ := s.Data["access_token"].(string)
		token.Store(&at)
		return nil
	}
	if err := read(); err != nil {
		w.t.Fatal(err)
	}
	go func() {
		for next := time.Now().Add(firstRead + naiveEvery); ; next = next.Add(naiveEvery) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(next)):
			}
			if err := read(); err != nil && ctx.Err() == nil {
				w.t.Errorf("%s: read %s: %v", name, outputPath, err)
			}
		}
	}()
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: appTimeout}
	return &appPod{name: name, vault: reads, call: func() (int, error) {
		return get(ctx, client, w.dk.APIURL, "Bearer "+*token.Load())
	}}
}

// get sends GET url (with the Authorization header auth, unless empty) and returns the status.
func get(ctx context.Context, c *http.Client, url, auth string) (int, error) {
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// figures sum up the calls of the pods of one kind.
type figures struct {
	kind                string
	requests, failed    int
	refused, vaultReads int64 // refused: 401s the apptoken Transport met
	unauthorized        int   // calls that ended in a 401
	took                []time.Duration
	longest             time.Duration // the longest run of failures of one pod, first failed call to next success
	firstFailures       []string
}

func figuresOf(pods []*appPod) figures {
	f := figures{kind: strings.TrimRight(pods[0].name, "-0123456789")}
	for _, p := range pods {
		p.mu.Lock()
		calls := slices.Clone(p.calls)
		p.mu.Unlock()
		slices.SortFunc(calls, func(a, b apiCall) int { return a.sent.Compare(b.sent) })
		var failingSince time.Time
		for _, c := range calls {
			f.requests++
			f.took = append(f.took, c.took)
			if !c.failed() {
				if !failingSince.IsZero() {
					f.longest = max(f.longest, c.sent.Sub(failingSince))
					failingSince = time.Time{}
				}
				continue
			}
			f.failed++
			if c.status == http.StatusUnauthorized {
				f.unauthorized++
			}
			if failingSince.IsZero() {
				failingSince = c.sent
			}
			if len(f.firstFailures) < 10 {
				what := fmt.Sprintf("HTTP %d", c.status)
				if c.err != nil {
					what = c.err.Error()
				}
				f.firstFailures = append(f.firstFailures, fmt.Sprintf("  %s at %s after %v: %s", p.name, c.sent.Format("15:04:05.000"), c.took.Round(time.Millisecond), what))
			}
		}
		if !failingSince.IsZero() && len(calls) > 0 {
			f.longest = max(f.longest, calls[len(calls)-1].sent.Sub(failingSince))
		}
		f.vaultReads += int64(p.vault.KVReads("secret", outputPath))
		if p.refused != nil {
			f.refused += p.refused.Load()
		}
	}
	slices.Sort(f.took)
	return f
}

// latency is "p50 / p99 / max" of the calls' durations.
func (f figures) latency() string {
	if len(f.took) == 0 {
		return "-"
	}
	q := func(p float64) time.Duration { return f.took[int(p*float64(len(f.took)-1))] }
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
	return ms(q(0.5)) + " / " + ms(q(0.99)) + " / " + ms(f.took[len(f.took)-1])
}

func (f figures) longestFailing() string {
	if f.failed == 0 {
		return "none"
	}
	return fmt.Sprintf("%d ms", f.longest.Milliseconds())
}
