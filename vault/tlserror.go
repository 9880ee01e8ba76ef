package vault

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
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
	// Err is the error from crypto/tls or crypto/x509.
	Err error
}

func (e *TLSError) Error() string {
	var b strings.Builder
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
