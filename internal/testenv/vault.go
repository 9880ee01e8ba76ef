// Package testenv starts the real servers the integration tests run against: a `vault server -dev`
// on a free loopback port, and the Stora-compatible token endpoint.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Vault is a running Vault dev server.
type Vault struct {
	// Addr is its http://127.0.0.1:PORT address.
	Addr string
	// Token is its root token.
	Token string
	// Client is an API client logged in with Token.
	Client *api.Client
	// Process is the server's process, for tests that stop it (SIGSTOP: a Vault that hangs).
	Process *os.Process
}

// VaultBinary finds the vault binary: $VAULT_BIN, `vault` on PATH, or the build that
// scripts/vault-bin caches. It returns "" when there is none.
func VaultBinary() string {
	if b := os.Getenv("VAULT_BIN"); b != "" {
		return b
	}
	if b, err := exec.LookPath("vault"); err == nil {
		return b
	}
	cache := os.Getenv("TOKEN_ROTATOR_CACHE")
	if cache == "" {
		if dir, err := os.UserCacheDir(); err == nil {
			cache = filepath.Join(dir, "token-rotator")
		}
	}
	matches, _ := filepath.Glob(filepath.Join(cache, "vault-v*"))
	for _, m := range matches {
		if fi, err := os.Stat(m); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return m
		}
	}
	return ""
}

// RequireVault returns the vault binary or ends the test: skipped with the reason, or failed
// when CI=true, where a skipped suite would pass unseen.
func RequireVault(tb testing.TB) string {
	tb.Helper()
	bin := VaultBinary()
	if bin == "" {
		msg := "no vault binary: run `make test`, which builds one, or set VAULT_BIN"
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return bin
}

var startMu sync.Mutex

// StartVault starts `vault server -dev` on a free loopback port with a KV v2 mount at secret/,
// waits until it answers, and stops it when the test ends.
func StartVault(tb testing.TB) *Vault {
	tb.Helper()
	bin := RequireVault(tb)
	startMu.Lock() // one start at a time: a free port found here stays free until Vault takes it
	defer startMu.Unlock()
	port := FreePort(tb)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	v := &Vault{Addr: "http://" + addr, Token: "root"}
	var out bytes.Buffer
	cmd := exec.Command(bin, "server", "-dev", "-dev-listen-address="+addr,
		"-dev-root-token-id="+v.Token, "-dev-no-store-token", "-log-level=warn")
	cmd.Env = append(os.Environ(), "VAULT_DEV_ROOT_TOKEN_ID=", "HOME="+tb.TempDir())
	cmd.Stdout, cmd.Stderr = &out, &out
	dieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start vault: %v", err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	v.Process = cmd.Process
	cfg := api.DefaultConfig()
	cfg.Address = v.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	c.SetToken(v.Token)
	v.Client = c
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		h, err := c.Sys().HealthWithContext(ctx)
		if err == nil && h.Initialized && !h.Sealed {
			if _, err := c.Sys().MountConfig("secret"); err == nil {
				return v
			}
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("vault did not come up on %s: %v\n%s", addr, err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
