package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"token-rotator/internal/testenv"
)

// newTLSEnv is newEnv with Vault over TLS (`vault server -dev-tls`, its own CA) and none of the
// VAULT_* TLS variables set: each test sets the ones it is about.
func newTLSEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, vault: testenv.StartVaultTLS(t), stora: testenv.StartStora(t), dir: t.TempDir()}
	t.Setenv("VAULT_ADDR", e.vault.Addr)
	t.Setenv("VAULT_TOKEN", e.vault.Token)
	for _, k := range []string{"VAULT_CACERT", "VAULT_CACERT_BYTES", "VAULT_CAPATH", "VAULT_SKIP_VERIFY", "VAULT_TLS_SERVER_NAME"} {
		t.Setenv(k, "")
	}
	return e
}

// acmeOverTLS stores a client's credentials in the TLS Vault and returns the config naming it.
func (e *env) acmeOverTLS() string {
	e.t.Helper()
	id, secret := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret})
	return e.config("  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n")
}

// TestTLSVaultTrustedByCACertOrCAPath runs --once against a Vault whose certificate a private CA
// signed: with VAULT_CACERT naming the CA's file, and with VAULT_CAPATH naming a directory that
// holds it, the job exits 0 and the access token it got is in Vault and works.
func TestTLSVaultTrustedByCACertOrCAPath(t *testing.T) {
	for _, tc := range []struct{ name, key string }{{"VAULT_CACERT", "file"}, {"VAULT_CAPATH", "dir"}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTLSEnv(t)
			cfg := e.acmeOverTLS()
			v := e.vault.CACert
			if tc.key == "dir" {
				v = filepath.Dir(v)
			}
			t.Setenv(tc.name, v)
			code, out := e.run("--config", cfg, "--once")
			if code != 0 {
				t.Fatalf("exit %d with %s=%s, want 0:\n%s", code, tc.name, v, out)
			}
			s := e.get("stora/acme")
			if e.tokenInfo(str(s, "access_token")) != 200 {
				t.Errorf("the access token in Vault does not work")
			}
			assertExpiry(t, s)
		})
	}
}

// TestTLSVaultNotTrustedExits2WithTheFix runs --once, validate and status against the TLS Vault
// when its certificate cannot be verified: no CA set (the system's roots), another CA set, and a
// server name the certificate does not cover. Each exits 2 with one line that names the problem
// and the variable that fixes it: never a Go stack, never an x509 line without the hint.
func TestTLSVaultNotTrustedExits2WithTheFix(t *testing.T) {
	e := newTLSEnv(t)
	cfg := e.acmeOverTLS()
	wrongCA := writeOtherCA(t)
	cases := []struct {
		name    string
		env     map[string]string
		problem string // what the message must say is wrong
		fix     string // the variable it must say to set
	}{
		{"system roots", nil, "certificate signed by unknown authority", "set VAULT_CACERT"},
		{"another CA", map[string]string{"VAULT_CACERT": wrongCA}, "certificate signed by unknown authority", "set VAULT_CACERT"},
		{"another CA in VAULT_CAPATH", map[string]string{"VAULT_CAPATH": filepath.Dir(wrongCA)}, "certificate signed by unknown authority", "VAULT_CAPATH"},
		{"name not in the certificate", map[string]string{"VAULT_CACERT": e.vault.CACert, "VAULT_TLS_SERVER_NAME": "vault.example"},
			"not vault.example", "VAULT_TLS_SERVER_NAME"},
	}
	for _, tc := range cases {
		for _, cmd := range [][]string{{"--once", "--config", cfg}, {"validate", "--config", cfg}, {"status", "--config", cfg}} {
			t.Run(tc.name+"/"+strings.TrimPrefix(cmd[0], "--"), func(t *testing.T) {
				for k, v := range tc.env {
					t.Setenv(k, v)
				}
				code, out := e.run(cmd...)
				if code != 2 {
					t.Errorf("exit %d, want 2", code)
				}
				for _, want := range []string{tc.problem, tc.fix, e.vault.Addr} {
					if !strings.Contains(out, want) {
						t.Errorf("output lacks %q:\n%s", want, out)
					}
				}
				assertTLSHintOnly(t, out)
				t.Logf("exit %d: %s", code, out)
			})
		}
	}
	if a := str(e.get("stora/acme"), "access_token"); a != "" {
		t.Errorf("an access token was stored although Vault could not be reached safely")
	}
	if n := len(e.stora.Requests()); n != 0 {
		t.Errorf("the token endpoint saw %d requests; want none when Vault cannot be trusted", n)
	}
}

// assertTLSHintOnly fails when out holds a Go stack or a line about x509 that does not also say
// which VAULT_ variable to set.
func assertTLSHintOnly(t *testing.T, out string) {
	t.Helper()
	if strings.Contains(out, "goroutine ") || strings.Contains(out, "panic") {
		t.Errorf("output holds a Go stack:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "x509") && !strings.Contains(line, "VAULT_") {
			t.Errorf("an x509 line without the variable to set: %q", line)
		}
	}
}

// writeOtherCA makes a CA certificate that did not sign Vault's, alone in a new directory, and
// returns its file's path.
func writeOtherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Some Other CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTLSCAFileUnreadable: a VAULT_CACERT naming a missing file, or one that holds no PEM
// certificate, is exit 2 at start-up with a line naming the variable and its file.
func TestTLSCAFileUnreadable(t *testing.T) {
	e := newTLSEnv(t)
	cfg := e.acmeOverTLS()
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, file := range map[string]string{"missing": filepath.Join(t.TempDir(), "none.pem"), "not PEM": notPEM} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("VAULT_CACERT", file)
			code, out := e.run("--once", "--config", cfg)
			if code != 2 || !strings.Contains(out, "VAULT_CACERT="+file) {
				t.Errorf("exit %d, want 2 and a line naming VAULT_CACERT=%s:\n%s", code, file, out)
			}
			assertTLSHintOnly(t, out)
		})
	}
	if n := len(e.stora.Requests()); n != 0 {
		t.Errorf("the token endpoint saw %d requests; want none", n)
	}
}

// TestTLSClientCertificate runs --once against a Vault that requires a client certificate: with
// VAULT_CLIENT_CERT and VAULT_CLIENT_KEY naming one its CA signed, the job exits 0 and the access
// token in Vault works; without them it exits 2 having sent the token endpoint nothing, with a
// line that names the variables to set, and no Go stack.
func TestTLSClientCertificate(t *testing.T) {
	e := &env{t: t, vault: testenv.StartVaultMTLS(t), stora: testenv.StartStora(t), dir: t.TempDir()}
	t.Setenv("VAULT_ADDR", e.vault.Addr)
	t.Setenv("VAULT_TOKEN", e.vault.Token)
	t.Setenv("VAULT_CACERT", e.vault.CACert)
	for _, k := range []string{"VAULT_CAPATH", "VAULT_SKIP_VERIFY", "VAULT_TLS_SERVER_NAME", "VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY"} {
		t.Setenv(k, "")
	}
	cfg := e.acmeOverTLS()

	t.Run("without", func(t *testing.T) {
		code, out := e.run("--once", "--config", cfg)
		if code != 2 || !strings.Contains(out, "VAULT_CLIENT_CERT") || !strings.Contains(out, "VAULT_CLIENT_KEY") {
			t.Errorf("exit %d, want 2 and a line naming VAULT_CLIENT_CERT and VAULT_CLIENT_KEY:\n%s", code, out)
		}
		assertTLSHintOnly(t, out)
		if n := len(e.stora.Requests()); n != 0 {
			t.Errorf("the token endpoint saw %d requests; want none", n)
		}
		t.Logf("exit %d: %s", code, out)
	})
	t.Run("with", func(t *testing.T) {
		t.Setenv("VAULT_CLIENT_CERT", e.vault.ClientCert)
		t.Setenv("VAULT_CLIENT_KEY", e.vault.ClientKey)
		code, out := e.run("--once", "--config", cfg)
		if code != 0 {
			t.Fatalf("exit %d with a client certificate, want 0:\n%s", code, out)
		}
		if e.tokenInfo(str(e.get("stora/acme"), "access_token")) != 200 {
			t.Errorf("the access token in Vault does not work")
		}
	})
}
