//go:build unix

package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"token-rotator/internal/testenv"
)

// TestExampleRuns builds the example and runs it as docs/apps.md shows, against a real Vault and the
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

// TestExampleAgainstTheDemo follows docs/apps.md's "to try it" steps: `scripts/demo --keep` leaves Vault
// and the token endpoint running and prints what to export, the API stand-in and the rotate
// command; the example app gets 200 OK there, and again after that command rotated the token.
func TestExampleAgainstTheDemo(t *testing.T) {
	testenv.RequireVault(t)
	bin := filepath.Join(t.TempDir(), "stora-app")
	if out, err := exec.Command("go", "build", "-o", bin, "token-rotator/examples/stora-app").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	demo := exec.Command("bash", "scripts/demo", "--keep")
	demo.Dir = "../.."
	demo.Env = append(os.Environ(), "VAULT_BIN="+testenv.VaultBinary())
	demo.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := demo.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testenv.SyncBuffer
	demo.Stderr = &stderr
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-demo.Process.Pid, syscall.SIGINT)
		done := make(chan struct{})
		go func() { demo.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-demo.Process.Pid, syscall.SIGKILL)
			t.Error("scripts/demo --keep did not stop on Ctrl-C")
		}
	})

	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	var api, rotate string
	lines := bufio.NewScanner(stdout)
	for rotate == "" && lines.Scan() {
		line := lines.Text()
		switch {
		case strings.HasPrefix(line, "export "):
			env = append(env, strings.Fields(strings.TrimPrefix(line, "export "))...)
		case strings.HasPrefix(line, "API stand-in: "):
			api = strings.Fields(strings.TrimPrefix(line, "API stand-in: "))[0]
		case strings.HasPrefix(line, "rotate again: "):
			rotate = strings.TrimPrefix(line, "rotate again: ")
		}
	}
	if api == "" || rotate == "" || len(env) < 2 {
		t.Fatalf("scripts/demo --keep printed no API stand-in, rotate command or exports\n%s", stderr.String())
	}
	app := func() string {
		cmd := exec.Command(bin, "-path", "apps/acme", "-url", api)
		cmd.Env = env
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	if out := app(); out != "200 OK\n" {
		t.Fatalf("the example against the demo: %q, want 200 OK", out)
	}
	token := func() string {
		cmd := exec.Command(testenv.VaultBinary(), "kv", "get", "-mount=secret", "-field=access_token", "apps/acme")
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("vault kv get: %v", err)
		}
		return string(out)
	}
	before := token()
	cmd := exec.Command("sh", "-c", rotate)
	cmd.Dir, cmd.Env = "../..", env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", rotate, err, out)
	}
	if token() == before {
		t.Fatal("the printed rotate command left the token as it was")
	}
	if out := app(); out != "200 OK\n" {
		t.Errorf("the example after a rotation: %q, want 200 OK", out)
	}
}
