package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"token-rotator/internal/testenv"
)

// TestExampleRuns builds the example and runs it as README shows, against a real Vault and the
// bundled Stora-compatible server, whose /oauth2/token/info stands in for the API: it prints
// "200 OK" and exits 0; with no secret at the path it exits 1 naming the path.
func TestExampleRuns(t *testing.T) {
	v := testenv.StartVault(t)
	stora := testenv.StartStora(t)
	id, _ := stora.AddClient()
	at, _ := stora.IssueTokenPair(id, "public.contact:read")
	if _, err := v.Client.KVv2("secret").Put(context.Background(), "apps/acme", map[string]any{
		"access_token": at, "token_type": "Bearer", "expires_at": time.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339)}); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "stora-app")
	if out, err := exec.Command("go", "build", "-o", bin, "token-rotator/examples/stora-app").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	env = append(env, "VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+v.Token)
	for _, tc := range []struct {
		path, want string
		code       int
	}{
		{"apps/acme", "200 OK\n", 0},
		{"apps/none", "secret/apps/none: no secret at this path", 1},
	} {
		cmd := exec.Command(bin, "-path", tc.path, "-url", stora.BaseURL+"/oauth2/token/info")
		cmd.Env = env
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != tc.code || !strings.Contains(string(out), tc.want) {
			t.Errorf("-path %s: exit %d, output %q; want %d and %q", tc.path, cmd.ProcessState.ExitCode(), out, tc.code, tc.want)
		}
		if strings.Contains(string(out), at) {
			t.Errorf("-path %s: the output holds the token", tc.path)
		}
	}
}
