package ha

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"token-rotator/internal/storafake"
	"token-rotator/internal/testenv"
)

// world is the shared Vault cluster, healed when the test ends, and a fresh Stora-compatible
// token endpoint that retires a refresh token the moment it is used (the strictest mode: a
// refresh token spent and not stored is lost at once). The job logs in with a token of the
// shipped policy.
type world struct {
	t        *testing.T
	cluster  *testenv.Cluster
	stora    *storafake.Server
	tokenURL string
	jobToken string
	prefix   string // this test's secrets live under it: stora/TESTNAME

	mu sync.Mutex
	// issuedTokens are the refresh tokens the token endpoint issued to the job, in order.
	issuedTokens []string
	// onIssue, when set, is called with the number issued so far each time the token endpoint has
	// committed a new refresh token, before its answer is written (storafake's Issued).
	onIssue func(n int)
}

func newWorld(t *testing.T) *world {
	t.Helper()
	c := testenv.SharedCluster(t)
	t.Cleanup(func() { c.Heal(t) })
	s := storafake.New()
	s.RevokeImmediately = true
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	w := &world{t: t, cluster: c, stora: s, tokenURL: ts.URL + "/oauth2/token",
		jobToken: c.JobToken(t, 0), prefix: "stora/" + strings.ReplaceAll(t.Name(), "/", "-")}
	s.Issued = func(_, rt string) {
		w.mu.Lock()
		w.issuedTokens = append(w.issuedTokens, rt)
		n, hook := len(w.issuedTokens), w.onIssue
		w.mu.Unlock()
		if hook != nil {
			hook(n)
		}
	}
	return w
}

// issued returns the refresh tokens the token endpoint issued so far.
func (w *world) issued() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.issuedTokens)
}

// unstored counts the refresh tokens the token endpoint issued that no secret at paths holds: each
// was spent, and with the server retiring a used refresh token at once, lost.
func (w *world) unstored(paths []string) int {
	w.t.Helper()
	held := map[string]bool{}
	for _, p := range paths {
		if rt, _ := w.data(p)["refresh_token"].(string); rt != "" {
			held[rt] = true
		}
	}
	n := 0
	for _, rt := range w.issued() {
		if !held[rt] {
			n++
		}
	}
	return n
}

// seedPartner creates a partner client with n connections, as README's "Partners" section: the
// client_id and client_secret at stora/TESTNAME/partner, one live refresh token per connection
// below stora/TESTNAME/partner/connections. It returns the shared secret's path and the
// connections' paths.
func (w *world) seedPartner(n int) (shared string, conns []string) {
	w.t.Helper()
	id, secret := w.stora.AddClient()
	shared = w.prefix + "/partner"
	w.put(shared, map[string]any{"client_id": id, "client_secret": secret})
	for i := 0; i < n; i++ {
		p := fmt.Sprintf("%s/connections/op-%02d", shared, i)
		w.put(p, map[string]any{"refresh_token": w.stora.IssueRefreshToken(id, "public.contact:read")})
		conns = append(conns, p)
	}
	return shared, conns
}

// partnerConfig writes a config with one partner client whose connections are listed below
// shared/connections (seedPartner's), talking to the Vault node at addr, and returns its path.
func (w *world) partnerConfig(addr, shared string) string {
	w.t.Helper()
	return w.writeConfig(fmt.Sprintf("token_url: %s\nvault:\n  address: %s\nclients:\n"+
		"  - {name: partner, grant: authorization_code, secret: %s, connections: %s/connections}\n", w.tokenURL, addr, shared, shared))
}

// seed creates n partner clients, each with its own application and a live refresh token in
// Vault at stora/TESTNAME/pNN (the shipped policy's prefix), and returns their paths.
func (w *world) seed(n int) []string {
	w.t.Helper()
	var paths []string
	for i := 0; i < n; i++ {
		id, secret := w.stora.AddClient()
		p := fmt.Sprintf("%s/p%02d", w.prefix, i)
		w.put(p, map[string]any{"client_id": id, "client_secret": secret,
			"refresh_token": w.stora.IssueRefreshToken(id, "public.contact:read")})
		paths = append(paths, p)
	}
	return paths
}

// put writes a secret through the leader.
func (w *world) put(path string, data map[string]any) {
	w.t.Helper()
	if _, err := w.cluster.Leader(w.t).Client.KVv2("secret").Put(context.Background(), path, data); err != nil {
		w.t.Fatal(err)
	}
}

// data reads a secret through the leader.
func (w *world) data(path string) map[string]any {
	w.t.Helper()
	s, err := w.cluster.Leader(w.t).Client.KVv2("secret").Get(context.Background(), path)
	if err != nil {
		w.t.Fatal(err)
	}
	return s.Data
}

// working counts the secrets whose refresh token the token endpoint would still accept: the
// newest it issued for that client. A spent token that did not land in Vault leaves its secret
// holding a retired one.
func (w *world) working(paths []string) int {
	w.t.Helper()
	n := 0
	for _, p := range paths {
		if rt, _ := w.data(p)["refresh_token"].(string); rt != "" && w.stora.RefreshTokenValid(rt) {
			n++
		}
	}
	return n
}

// config writes a config whose clients are the given secrets (output = secret), talking to the
// Vault node at addr, and returns its path.
func (w *world) config(addr string, paths []string) string {
	w.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "token_url: %s\nvault:\n  address: %s\nclients:\n", w.tokenURL, addr)
	for i, p := range paths {
		fmt.Fprintf(&b, "  - {name: c%02d, grant: authorization_code, secret: %s}\n", i, p)
	}
	return w.writeConfig(b.String())
}

// writeConfig writes text to a config file and returns its path.
func (w *world) writeConfig(text string) string {
	w.t.Helper()
	f := filepath.Join(w.t.TempDir(), "config.yaml")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return f
}

// command is `token-rotator --config cfg --once --log-format json ARGS`, logged in to Vault with
// the job's token.
func (w *world) command(cfg string, args ...string) *exec.Cmd {
	cmd := exec.Command(testenv.JobBinary(w.t), append([]string{"--config", cfg, "--once", "--log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "VAULT_TOKEN="+w.jobToken, "VAULT_ADDR=")
	return cmd
}

// run runs command to its end and returns its exit code and output.
func (w *world) run(cfg string, args ...string) (int, string) {
	out, err := w.command(cfg, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		w.t.Fatal(err)
	}
	return 0, string(out)
}

// outcomes counts the outcome of every client line in JSON logs.
func outcomes(logs string) map[string]int {
	n := map[string]int{}
	eachOutcome(logs, func(_, outcome string) { n[outcome]++ })
	return n
}

// clientOutcomes maps each client named in JSON logs to its (last) outcome.
func clientOutcomes(logs string) map[string]string {
	m := map[string]string{}
	eachOutcome(logs, func(client, outcome string) { m[client] = outcome })
	return m
}

// eachOutcome calls f with the client and outcome of every client line in JSON logs.
func eachOutcome(logs string, f func(client, outcome string)) {
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			Client  string `json:"client"`
			Outcome string `json:"outcome"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Client != "" && l.Outcome != "" {
			f(l.Client, l.Outcome)
		}
	}
}

// logLines counts the JSON log lines whose msg is msg.
func logLines(logs, msg string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == msg {
			n++
		}
	}
	return n
}

// balancer is a load balancer in front of one Vault node, the address the job is given as in
// production: a reverse proxy (net/http/httputil) that shows each request to hook, when set,
// before it forwards it (a hook may kill or seal a node, synchronously), and records every request
// and the status of its answer.
type balancer struct {
	URL  string
	node *testenv.Node

	mu     sync.Mutex
	hook   func(c vaultCall)
	refuse func(c vaultCall) bool // answers 503 itself, as a sealed node would, when it says so
	calls  []vaultCall
}

// vaultCall is one request the balancer forwarded.
type vaultCall struct {
	// Method is the request's, LIST for a list (the vault client sends LIST, or GET with list=true).
	Method string
	// Path is the API path without /v1/, e.g. secret/data/stora/x.
	Path string
	// Keys are the keys of a KV v2 write's data (the body's "data" object), or of the body itself.
	Keys []string
	// Status is the answer's HTTP status (502 when the node did not answer).
	Status int
	// At is when the request came in, Done when its answer went back.
	At, Done time.Time
}

// landed reports whether the call wrote a refresh token to a KV v2 secret and Vault accepted it:
// a write-back landing.
func (c vaultCall) landed() bool {
	return (c.Method == http.MethodPatch || c.Method == http.MethodPost || c.Method == http.MethodPut) &&
		strings.Contains(c.Path, "/data/") && slices.Contains(c.Keys, "refresh_token") && c.Status/100 == 2
}

// balancer starts a load balancer in front of node, stopped when the test ends.
func (w *world) balancer(node *testenv.Node) *balancer {
	w.t.Helper()
	target, err := url.Parse(node.Addr)
	if err != nil {
		w.t.Fatal(err)
	}
	b := &balancer{node: node}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		c := vaultCall{Method: r.Method, Path: strings.TrimPrefix(r.URL.Path, "/v1/"), At: time.Now()}
		if r.Method == "LIST" || r.URL.Query().Get("list") == "true" {
			c.Method = "LIST"
		}
		if r.Body != nil {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var v map[string]any
			if json.Unmarshal(body, &v) == nil {
				m := v
				if d, ok := v["data"].(map[string]any); ok {
					m = d
				}
				for k := range m {
					c.Keys = append(c.Keys, k)
				}
			}
		}
		b.mu.Lock()
		hook, refuse := b.hook, b.refuse
		b.mu.Unlock()
		if hook != nil {
			hook(c)
		}
		rec := &statusWriter{ResponseWriter: rw, status: http.StatusOK}
		if refuse != nil && refuse(c) {
			rec.Header().Set("Content-Type", "application/json")
			rec.WriteHeader(http.StatusServiceUnavailable)
			_, _ = rec.Write([]byte(`{"errors":["Vault is sealed"]}`))
		} else {
			proxy.ServeHTTP(rec, r)
		}
		c.Status, c.Done = rec.status, time.Now()
		b.mu.Lock()
		b.calls = append(b.calls, c)
		b.mu.Unlock()
	}))
	w.t.Cleanup(srv.Close)
	b.URL = srv.URL
	return b
}

// setRefuse sets the function that picks requests the balancer answers 503 itself.
func (b *balancer) setRefuse(refuse func(c vaultCall) bool) {
	b.mu.Lock()
	b.refuse = refuse
	b.mu.Unlock()
}

// setHook sets the function shown each request before it is forwarded.
func (b *balancer) setHook(hook func(c vaultCall)) {
	b.mu.Lock()
	b.hook = hook
	b.mu.Unlock()
}

// log returns the requests forwarded so far, in the order their answers went back.
func (b *balancer) log() []vaultCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.calls)
}

// landedAfter returns how long after t the first write-back landed through the balancer; ok is
// false when none landed.
func (b *balancer) landedAfter(t time.Time) (d time.Duration, ok bool) {
	for _, c := range b.log() {
		if !c.Done.Before(t) && c.landed() {
			return c.Done.Sub(t), true
		}
	}
	return 0, false
}

// answered counts the requests answered with status between from and to.
func (b *balancer) answered(status int, from, to time.Time) int {
	n := 0
	for _, c := range b.log() {
		if c.Status == status && !c.Done.Before(from) && !c.Done.After(to) {
			n++
		}
	}
	return n
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// killer kills, once, the node that led when it was made, as a crash or an OOM kill would
// (SIGKILL), and remembers when.
type killer struct {
	t    *testing.T
	node *testenv.Node
	once sync.Once
	mu   sync.Mutex
	at   time.Time
}

// leaderKiller returns a killer of the node that leads now, which must not be the node behind
// lb: the job's node stays up.
func (w *world) leaderKiller(lb *balancer) *killer {
	w.t.Helper()
	leader := w.cluster.Leader(w.t)
	if leader == lb.node {
		w.t.Fatalf("%s leads: the job's node would be killed", leader.Name)
	}
	return &killer{t: w.t, node: leader}
}

// kill kills the node the first time it is called, and waits until it is gone; later calls do
// nothing. It may be called from any goroutine.
func (k *killer) kill() {
	k.once.Do(func() {
		at := time.Now()
		k.node.Kill(k.t)
		k.mu.Lock()
		k.at = at
		k.mu.Unlock()
	})
}

// when returns when the kill began; zero when it has not happened.
func (k *killer) when() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.at
}

// summary is outcomes as "2 rotated, 1 failed", in a stable order.
func summary(o map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(o)) {
		parts = append(parts, fmt.Sprintf("%d %s", o[k], k))
	}
	return strings.Join(parts, ", ")
}
