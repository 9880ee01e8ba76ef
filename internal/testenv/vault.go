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
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Vault is a running Vault dev server.
type Vault struct {
	// Addr is its http://127.0.0.1:PORT address (https:// for StartVaultTLS).
	Addr string
	// CACert is the path of the PEM file of the CA that signed the server's certificate
	// (StartVaultTLS); "" for plain HTTP. Its directory holds only that CA, for VAULT_CAPATH.
	CACert string
	// Token is its root token.
	Token string
	// Client is an API client logged in with Token.
	Client *api.Client
	// Process is the server's process, for tests that stop it (SIGSTOP: a Vault that hangs).
	Process *os.Process
	// ClientCert and ClientKey are the PEM files of a client certificate that CACert's CA signed,
	// which Vault requires (StartVaultMTLS); "" otherwise.
	ClientCert, ClientKey string
}

// VaultBinary finds the vault binary: $VAULT_BIN, `vault` on PATH, or the build that
// scripts/vault-bin caches. It returns "" when there is none.
func VaultBinary() string { return Binary("VAULT_BIN", "vault", "vault-v*") }

// Binary finds a test dependency's executable: $env, name on PATH, or the newest copy a script
// of scripts/ cached under the per-machine cache ($TOKEN_ROTATOR_CACHE, else
// ~/.cache/token-rotator) matching cached (a glob relative to it). It returns "" when there is none.
func Binary(env, name, cached string) string {
	if b := os.Getenv(env); b != "" {
		return b
	}
	if b, err := exec.LookPath(name); err == nil {
		return b
	}
	matches, _ := filepath.Glob(filepath.Join(cacheDir(), cached))
	slices.Sort(matches)
	for i := len(matches) - 1; i >= 0; i-- {
		if fi, err := os.Stat(matches[i]); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return matches[i]
		}
	}
	return ""
}

// cacheDir is the per-machine cache the scripts of scripts/ build into: $TOKEN_ROTATOR_CACHE, else
// token-rotator under the user's cache directory ($XDG_CACHE_HOME or ~/.cache); "" when there is none.
func cacheDir() string {
	if cache := os.Getenv("TOKEN_ROTATOR_CACHE"); cache != "" {
		return cache
	}
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "token-rotator")
	}
	return ""
}

// RequireVault returns the vault binary or ends the test: skipped with the reason, or failed
// when CI=true, where a skipped suite would pass unseen.
func RequireVault(tb testing.TB) string {
	tb.Helper()
	bin := VaultBinary()
	if bin == "" {
		unavailable(tb, "no vault binary: run `make test`, which builds one, or set VAULT_BIN")
	}
	return bin
}

var startMu sync.Mutex

// StartVault starts `vault server -dev` on a free loopback port with a KV v2 mount at secret/,
// waits until it answers, and stops it when the test ends.
func StartVault(tb testing.TB) *Vault {
	tb.Helper()
	return startVault(tb, false)
}

// StartVaultTLS is StartVault over TLS: `vault server -dev-tls`, which makes its own CA and a
// certificate for 127.0.0.1 and localhost signed by it. Addr is https://127.0.0.1:PORT; CACert is
// the CA's PEM file, alone in its directory; Client trusts it.
func StartVaultTLS(tb testing.TB) *Vault {
	tb.Helper()
	return startVault(tb, true)
}

// StartVaultMTLS is StartVault with Vault listening over TLS that requires a client certificate
// (tls_require_and_verify_client_cert), as Vaults behind a zero-trust network are run. The test
// makes the CA, Vault's certificate for 127.0.0.1 and a client certificate: Addr is
// https://127.0.0.1:PORT, CACert the CA's PEM file, ClientCert and ClientKey the client's PEM
// files; Client presents them.
func StartVaultMTLS(tb testing.TB) *Vault {
	tb.Helper()
	return startVaultWith(tb, false, newMTLS(tb))
}

func startVault(tb testing.TB, tls bool) *Vault {
	tb.Helper()
	return startVaultWith(tb, tls, nil)
}

func startVaultWith(tb testing.TB, tls bool, m *mtls) *Vault {
	tb.Helper()
	bin := RequireVault(tb)
	startMu.Lock() // one start at a time: a free port found here stays free until Vault takes it
	defer startMu.Unlock()
	port := FreePort(tb)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	v := &Vault{Addr: "http://" + addr, Token: "root"}
	args := []string{"server", "-dev", "-dev-listen-address=" + addr,
		"-dev-root-token-id=" + v.Token, "-dev-no-store-token", "-log-level=warn"}
	if tls {
		// Vault writes vault-ca.pem, vault-cert.pem and vault-key.pem here; the CA goes alone
		// into a directory of its own once written, for tests of VAULT_CAPATH.
		certDir := tb.TempDir()
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+certDir)
		v.Addr = "https://" + addr
		v.CACert = filepath.Join(certDir, "vault-ca.pem")
	}
	if m != nil {
		// The dev listener stays plain HTTP; the one the tests use is the second, from a config
		// file, on its own port.
		port := FreePort(tb)
		cfgFile := filepath.Join(tb.TempDir(), "listener.hcl")
		hcl := fmt.Sprintf("listener \"tcp\" {\n  address = \"127.0.0.1:%d\"\n  tls_cert_file = %q\n  tls_key_file = %q\n  tls_client_ca_file = %q\n  tls_require_and_verify_client_cert = true\n}\n",
			port, m.serverCert, m.serverKey, m.ca)
		if err := os.WriteFile(cfgFile, []byte(hcl), 0o600); err != nil {
			tb.Fatal(err)
		}
		args = append(args, "-config="+cfgFile)
		v.Addr = fmt.Sprintf("https://127.0.0.1:%d", port)
		v.CACert, v.ClientCert, v.ClientKey = m.ca, m.clientCert, m.clientKey
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
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
	if tls {
		if err := waitForFile(v.CACert, 30*time.Second); err != nil {
			tb.Fatalf("vault -dev-tls: %v\n%s", err, out.String())
		}
		caDir := tb.TempDir()
		pem, err := os.ReadFile(v.CACert)
		if err != nil {
			tb.Fatal(err)
		}
		v.CACert = filepath.Join(caDir, "vault-ca.pem")
		if err := os.WriteFile(v.CACert, pem, 0o600); err != nil {
			tb.Fatal(err)
		}
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: v.CACert}); err != nil {
			tb.Fatal(err)
		}
	}
	if m != nil {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: v.CACert, ClientCert: v.ClientCert, ClientKey: v.ClientKey}); err != nil {
			tb.Fatal(err)
		}
	}
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

// waitForFile waits until path holds a whole PEM block.
func waitForFile(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte("-----END ")) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not written within %v", path, timeout)
		}
		time.Sleep(20 * time.Millisecond)
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
