package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOverlappingClientsExit2 runs --once on a config where two clients would spend one refresh
// token. The config is checked before Vault is contacted, so no Vault runs here: VAULT_ADDR points
// at a closed port, and an exit 2 that named Vault would mean the overlap went unnoticed.
func TestOverlappingClientsExit2(t *testing.T) {
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	t.Setenv("VAULT_TOKEN", "unused")
	p := filepath.Join(t.TempDir(), "config.yaml")
	cfg := "clients:\n" +
		"  - name: a\n    grant: authorization_code\n    secret: stora/x\n    output: apps/a\n" +
		"  - name: b\n    grant: authorization_code\n    secret: stora/x\n    output: apps/b\n"
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := runRotator("--once", "--config", p)
	if code != 2 {
		t.Fatalf("exit %d, want 2:\n%s", code, out)
	}
	if want := p + `:8:13: clients[1].secret: "stora/x" is also a's secret`; !strings.Contains(out, want) {
		t.Errorf("output does not name %s:8:13, the later client's secret, and client a:\n%s", p, out)
	}
	if strings.Contains(strings.ToLower(out), "vault") {
		t.Errorf("output mentions Vault: the config should have stopped the run first:\n%s", out)
	}
}
