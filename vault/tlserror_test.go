package vault

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// TestTLSErrorForAnExpiredCertificate checks the message for a certificate crypto/x509 itself
// rejects as expired (the root-package tests cover unknown authorities and names against a real
// vault -dev-tls): it names the expiry, the subject, and VAULT_CACERT, and still unwraps to Go's error.
func TestTLSErrorForAnExpiredCertificate(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vault.example"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		DNSNames: []string{"vault.example"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	_, verr := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "vault.example"})
	var invalid x509.CertificateInvalidError
	if !errors.As(verr, &invalid) || invalid.Reason != x509.Expired {
		t.Fatalf("setup: want an expired-certificate error, got %v", verr)
	}
	te := tlsError(fmt.Errorf("Get %q: %w", "https://vault.example:8200/v1/x", verr))
	if te == nil {
		t.Fatal("tlsError did not recognise an expired certificate")
	}
	msg := te.Error()
	for _, want := range []string{"expired", `subject "CN=vault.example"`, "VAULT_CACERT"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q: %s", want, msg)
		}
	}
	if strings.Contains(msg, "x509:") || strings.Contains(msg, "\n") {
		t.Errorf("message is not one line without Go's prefix: %q", msg)
	}
	if tlsError(fmt.Errorf("dial tcp: connection refused")) != nil {
		t.Error("a network error was taken for a certificate error")
	}
}

// TestRefusedClientCertificateHint checks every shape in which Vault's refusal of a client that
// sent no certificate reaches the job over TLS 1.3 (the alert, a broken pipe or a reset on the
// request's write, or the connection closed before HTTP/2's preface; CI saw the reset) carries the hint to set VAULT_CLIENT_CERT, while a reset on
// the read of the answer (a node going away) and a plain-HTTP address do not.
func TestRefusedClientCertificateHint(t *testing.T) {
	t.Setenv("VAULT_CLIENT_CERT", "")
	sys := func(op string, errno syscall.Errno) error {
		return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(op, errno)}
	}
	get := func(addr string, err error) error {
		return &url.Error{Op: "Get", URL: addr + "/v1/sys/health", Err: err}
	}
	for _, c := range []struct {
		name string
		err  error
		hint bool
	}{
		{"alert", get("https://v:8200", errors.New("remote error: tls: certificate required")), true},
		{"broken pipe on write", get("https://v:8200", sys("write", syscall.EPIPE)), true},
		{"reset on write", get("https://v:8200", sys("write", syscall.ECONNRESET)), true},
		{"closed before HTTP/2's preface", get("https://v:8200", errors.New("http2: client conn could not be established")), true},
		{"reset on read", get("https://v:8200", sys("read", syscall.ECONNRESET)), false},
		{"reset on write over http", get("http://v:8200", sys("write", syscall.ECONNRESET)), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			te := tlsError(c.err)
			if got := te != nil && strings.Contains(te.Error(), "VAULT_CLIENT_CERT"); got != c.hint {
				t.Errorf("hint to set VAULT_CLIENT_CERT: %v, want %v (%v)", got, c.hint, te)
			}
			if !Unavailable(c.err) {
				t.Error("not waited out as Vault being unavailable")
			}
		})
	}
}

// TestUnavailable: which errors the job waits out as Vault being away (rotate's 30 s wait before
// anything is spent), and which are answers.
func TestUnavailable(t *testing.T) {
	resp := func(code int) error { return cleanError(&api.ResponseError{StatusCode: code, Errors: []string{"x"}}) }
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"503 sealed or no leader", resp(503), true},
		{"500", resp(500), true},
		{"501 not a Vault API", resp(501), false},
		{"429 a quota still blocking", resp(429), true},
		{"the request's own timeout", fmt.Errorf("read: %w", context.DeadlineExceeded), true},
		{"connection refused", &url.Error{Op: "Get", URL: "http://v:8200/v1/x", Err: errors.New("connection refused")}, true},
		{"403 refused", resp(403), false},
		{"404", resp(404), false},
		{"nil", nil, false},
	} {
		if got := Unavailable(c.err); got != c.want {
			t.Errorf("%s: Unavailable %v, want %v", c.name, got, c.want)
		}
	}
}
