package oauth

import (
	"fmt"
	"regexp"
	"strings"
)

// Error codes of RFC 6749 §5.2 that callers branch on.
const (
	ErrInvalidRequest       = "invalid_request"
	ErrInvalidClient        = "invalid_client"
	ErrInvalidGrant         = "invalid_grant"
	ErrUnauthorizedClient   = "unauthorized_client"
	ErrUnsupportedGrantType = "unsupported_grant_type"
	ErrInvalidScope         = "invalid_scope"
)

// Error is a response from the token endpoint that did not carry a usable token: an RFC 6749 §5.2
// error response (Code set), or a response of another shape (Code empty, Snippet set). It never
// holds a token, a secret or a code: the server's text passes through Redact, and the values the
// request sent are removed from it.
type Error struct {
	Status      int    // HTTP status code
	Code        string // RFC 6749 §5.2 "error", e.g. "invalid_grant"; empty when the body had none
	Description string // RFC 6749 §5.2 "error_description", redacted
	ContentType string // the response's Content-Type header
	Snippet     string // the start of a body that was not an RFC 6749 error, redacted
	Reason      string // what was wrong with a response that was not an error response
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "token endpoint: HTTP %d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
		if e.Description != "" {
			b.WriteString(": " + e.Description)
		}
		return b.String()
	}
	if e.Reason != "" {
		b.WriteString(": " + e.Reason)
	}
	if e.ContentType != "" {
		fmt.Fprintf(&b, " (content type %q)", e.ContentType)
	}
	if e.Snippet != "" {
		fmt.Fprintf(&b, ": %q", e.Snippet)
	}
	return b.String()
}

// scrub removes every occurrence of the given values from the server's text in e: a server that
// echoes a short client secret or code back must not put it in a log line.
func (e *Error) scrub(values ...string) {
	for _, v := range values {
		if v == "" {
			continue
		}
		for _, f := range []*string{&e.Code, &e.Description, &e.Snippet, &e.Reason} {
			*f = strings.ReplaceAll(*f, v, "[redacted]")
		}
	}
}

// tokenLike matches runs that could be a token, a secret or a code: 16 or more characters of the
// URL-safe base64 alphabet and the other characters token generators use, Doorkeeper's 43-character
// tokens among them.
var tokenLike = regexp.MustCompile(`[A-Za-z0-9_\-\.~+/=]{16,}`)

// Redact returns s, cut to max bytes, with every token-like run replaced by "[redacted]".
// It is applied to any server text that goes into an error or a log line.
func Redact(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	s = strings.ToValidUTF8(s, "")
	return tokenLike.ReplaceAllString(s, "[redacted]")
}
