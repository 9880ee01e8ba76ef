package ha

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"token-rotator/internal/storafake"
	"token-rotator/internal/testenv"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// binary builds token-rotator once per test run.
func binary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "token-rotator-ha")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "token-rotator")
		if out, err := exec.Command("go", "build", "-o", binPath, "token-rotator").CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

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
}

func newWorld(t *testing.T) *world {
	t.Helper()
	c := testenv.SharedCluster(t)
	t.Cleanup(func() { c.Heal(t) })
	s := storafake.New()
	s.RevokeImmediately = true
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return &world{t: t, cluster: c, stora: s, tokenURL: ts.URL + "/oauth2/token",
		jobToken: c.JobToken(t, 0), prefix: "stora/" + strings.ReplaceAll(t.Name(), "/", "-")}
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
	f := filepath.Join(w.t.TempDir(), "config.yaml")
	if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return f
}

// command is `token-rotator --config cfg --once --log-format json ARGS`, logged in to Vault with
// the job's token.
func (w *world) command(cfg string, args ...string) *exec.Cmd {
	cmd := exec.Command(binary(w.t), append([]string{"--config", cfg, "--once", "--log-format", "json"}, args...)...)
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
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
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
