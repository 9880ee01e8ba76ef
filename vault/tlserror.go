package vault

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"

	"github.com/hashicorp/vault/api"
)

// TLSError is a failed check of Vault's TLS certificate, with what to set to fix it. Its text is
// one line: the server, the problem as Go's crypto/x509 names it, the certificate's subject and
// issuer names (nothing else of the certificate), and the environment variable that fixes it.
type TLSError struct {
	// Server is the host:port the job connected to; "" when unknown.
	Server string
	// Problem is crypto/x509's description, without its "x509: " prefix.
	Problem string
	// Subject and Issuer are the distinguished names of Vault's certificate; "" when unknown.
	Subject, Issuer string
	// Fix says which environment variable to set, and to what.
	Fix string
	// Err is the error from crypto/tls or crypto/x509, or the connection's.
	Err error

	what string // the failure's first words; "" for a failed check of Vault's certificate
}

func (e *TLSError) Error() string {
	var b strings.Builder
	if e.what != "" {
		fmt.Fprintf(&b, "TLS: %s", e.what)
		if e.Server != "" {
			fmt.Fprintf(&b, " at %s", e.Server)
		}
		fmt.Fprintf(&b, ": %s; %s", e.Problem, e.Fix)
		return b.String()
	}
	b.WriteString("TLS: Vault's certificate")
	if e.Server != "" {
		fmt.Fprintf(&b, " at %s", e.Server)
	}
	if e.Subject != "" {
		fmt.Fprintf(&b, " (subject %q, issuer %q)", e.Subject, e.Issuer)
	}
	fmt.Fprintf(&b, " failed verification: %s; %s", e.Problem, e.Fix)
	return b.String()
}

func (e *TLSError) Unwrap() error { return e.Err }

// tlsError turns a failed verification of Vault's certificate into a TLSError, and returns nil
// for any other error.
func tlsError(err error) *TLSError {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
		ue       *url.Error
	)
	out := &TLSError{Err: err}
	var cert *x509.Certificate
	switch {
	case errors.As(err, &hostname):
		out.Problem, cert = hostname.Error(), hostname.Certificate
		out.Fix = "connect by a name the certificate covers: set VAULT_ADDR to it, or VAULT_TLS_SERVER_NAME to it when the address must stay as it is"
	case errors.As(err, &unknown):
		out.Problem, cert = unknown.Error(), unknown.Cert
		out.Fix = "set VAULT_CACERT to the PEM file of the CA that signed Vault's certificate, or VAULT_CAPATH to a directory holding it"
	case errors.As(err, &invalid):
		out.Problem, cert = invalid.Error(), invalid.Cert
		out.Fix = "Vault needs a certificate that is valid now (check its dates and this machine's clock); if it is signed by a private CA, set VAULT_CACERT to that CA's PEM file"
	case refusedClient(err):
		// Vault (its listener's tls_require_and_verify_client_cert) ends the connection when the
		// client sends no certificate: over TLS 1.3 as a broken pipe or reset on the request's
		// write more often than as the alert itself.
		out.Problem = "Vault closed the connection after the TLS handshake, as it does when it requires a client certificate and none is sent (" + rootCause(err) + ")"
		out.Fix = "if Vault requires client certificates, set VAULT_CLIENT_CERT and VAULT_CLIENT_KEY to the PEM files of one its CA signed"
		out.what = "Vault refused the connection"
	default:
		return nil
	}
	out.Problem = strings.TrimPrefix(out.Problem, "x509: ")
	if cert == nil && errors.As(err, &verify) && len(verify.UnverifiedCertificates) > 0 {
		cert = verify.UnverifiedCertificates[0]
	}
	if cert != nil {
		out.Subject, out.Issuer = cert.Subject.String(), cert.Issuer.String()
	}
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			out.Server = u.Host
		}
	}
	return out
}

// refusedClient reports whether err is a request to an https Vault, made without a client
// certificate (VAULT_CLIENT_CERT unset), that the server ended: a TLS alert about the client's
// certificate, or the connection broken or reset under the request's write (a reset or an EOF
// on the read of the answer is a node going away). Unavailable waits out both kinds alike; this
// only adds the hint.
func refusedClient(err error) bool {
	var ue *url.Error
	if !errors.As(err, &ue) || !strings.HasPrefix(ue.URL, "https://") || os.Getenv(api.EnvVaultClientCert) != "" {
		return false
	}
	var op *net.OpError
	msg := err.Error()
	return errors.Is(err, syscall.EPIPE) ||
		errors.As(err, &op) && op.Op == "write" && errors.Is(err, syscall.ECONNRESET) ||
		strings.Contains(msg, "http2: client conn could not be established") || // the server closed it before HTTP/2's preface
		strings.Contains(msg, "remote error: tls: certificate required") || strings.Contains(msg, "remote error: tls: bad certificate")
}

// rootCause is the innermost error's text: "write: broken pipe", not the whole chain with the URL.
func rootCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		if _, ok := next.(syscall.Errno); ok {
			return err.Error()
		}
		err = next
	}
}
