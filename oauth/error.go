package oauth

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
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

// Error is a response from the token endpoint that did not carry a usable token.
//
// The body decides Code: a body that is an RFC 6749 §5.2 error object (one JSON object with a
// non-empty string "error" member) sets Code and Description whatever its Content-Type (a gateway
// may relabel it text/html, or drop the header) and whatever the HTTP status, 2xx included. Any
// other body leaves Code empty and is kept, redacted, in Snippet; Reason says what else was wrong.
// Status stays the HTTP status and Temporary looks at it alone, so a 503 whose body says
// invalid_grant is both Temporary and Code == ErrInvalidGrant: a caller that must not repeat a
// refused grant branches on Code first.
//
// It never holds a token, a secret or a code: the server's text passes through Redact, and the
// values the request sent are removed from it.
type Error struct {
	Status      int    // HTTP status code
	Code        string // RFC 6749 §5.2 "error", e.g. "invalid_grant"; empty when the body had none; redacted unless shaped like a registered code
	Description string // RFC 6749 §5.2 "error_description", redacted
	ContentType string // the response's Content-Type header: media type as sent, parameters redacted, at most 100 bytes
	Snippet     string // the start of a body that was not an RFC 6749 error, redacted
	Reason      string // what was wrong with a response that was not an error response
	Hint        string // what the operator may change, when the answer suggests it; never server text
	// RetryAfter is how long the server asked the client to wait (Retry-After, or Stora's
	// RateLimit-Reset), capped at 10 minutes; 0 when it did not say.
	RetryAfter time.Duration
	// RetryAfterFrom names the header RetryAfter was read from, "Retry-After" or
	// "RateLimit-Reset"; empty when RetryAfter is 0.
	RetryAfterFrom string
}

// Temporary reports whether the same request may succeed later: 5xx, 429 and 408 responses.
// Any other response is the server's considered answer. It reads Status only, not Code.
func (e *Error) Temporary() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// TransportError is a token request that failed in transit: not sent, timed out, or its response
// cut short. The server may or may not have acted on it: a refresh token sent this way may
// already be spent.
type TransportError struct{ Err error }

func (e *TransportError) Error() string { return "token endpoint: " + e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

// maxRetryAfter caps what a server may ask the client to wait.
const maxRetryAfter = 10 * time.Minute

// retryAfter reads Retry-After (delta-seconds or an HTTP date, RFC 9110 §10.2.3) and, failing
// that, RateLimit-Reset (Stora sends epoch seconds; the IETF draft's delta-seconds are accepted
// too: a value under 10^9 is a delta). from names the header read, when the wait is not 0.
func retryAfter(h http.Header, now time.Time) (wait time.Duration, from string) {
	var d time.Duration
	from = "Retry-After"
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
			d = time.Duration(secs) * time.Second
		} else if at, err := http.ParseTime(v); err == nil {
			d = at.Sub(now)
		}
	} else if v := strings.TrimSpace(h.Get("RateLimit-Reset")); v != "" {
		from = "RateLimit-Reset"
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			if n >= 1e9 {
				d = time.Unix(n, 0).Sub(now)
			} else {
				d = time.Duration(n) * time.Second
			}
		}
	}
	if wait = min(max(d, 0), maxRetryAfter); wait == 0 {
		from = ""
	}
	return wait, from
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "token endpoint: HTTP %d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
		if e.Description != "" {
			b.WriteString(": " + e.Description)
		}
		if e.Hint != "" {
			b.WriteString(" (" + e.Hint + ")")
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
	if e.Hint != "" {
		b.WriteString(" (" + e.Hint + ")")
	}
	return b.String()
}

// clean makes the server's text in e safe to log: every value the request sent is removed, as
// sent and as a server would echo it (JSON-escaped, URL-encoded, HTML-escaped), before anything is cut, so no
// prefix of a secret survives a cut; then token-like runs go, and each field is cut to size. Values
// under 4 characters are left alone: no real credential is that short, and removing them would
// shred the message.
func (e *Error) clean(values ...string) {
	var forms []string
	for _, v := range values {
		if len(v) < 4 {
			continue
		}
		quoted, _ := json.Marshal(v)
		forms = append(forms, v, string(quoted[1:len(quoted)-1]), url.QueryEscape(v), url.PathEscape(v),
			html.EscapeString(v), namedEntities.Replace(v), hexEntities.Replace(v))
	}
	// The longest forms first, so that no form leaves a piece of a longer one.
	sort.Slice(forms, func(i, j int) bool { return len(forms[i]) > len(forms[j]) })
	for _, f := range []*string{&e.Code, &e.Description, &e.Snippet, &e.Reason, &e.ContentType} {
		for _, v := range forms {
			*f = strings.ReplaceAll(*f, v, "[redacted]")
		}
	}
	if !errorCode.MatchString(e.Code) {
		e.Code = Redact(e.Code, 64)
	}
	e.Description = Redact(e.Description, 200)
	e.Snippet = Redact(e.Snippet, 120)
	e.Reason = Redact(e.Reason, 300) // the job's own words, quoting server text already redacted
	e.ContentType = cleanContentType(e.ContentType)
}

// namedEntities and hexEntities escape HTML as servers other than Go's do (Rails and PHP: &quot;
// and &#39;; Python: &quot; and &#x27;), so that an echo in an HTML error page is found too.
var (
	namedEntities = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#39;")
	hexEntities   = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#x27;")
)

// errorCode is the shape of the error codes RFC 6749 §5.2 and the IANA OAuth Extensions Error
// registry define: lower-case words joined by underscores, at most 64 bytes. No word reaches the 16
// characters of a token-like run, so a code of this shape is kept as sent, and
// "unsupported_grant_type" stays comparable with ErrUnsupportedGrantType.
var errorCode = regexp.MustCompile(`^[a-z]{1,15}(_[a-z]{1,15}){0,5}$`)

// mediaType is a type/subtype pair as RFC 6838 §4.2 names them.
var mediaType = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}$`)

// cleanContentType keeps a Content-Type's media type, which names a format (and whose
// "application/json" would itself look like a token), and redacts the parameters after it like
// other server text; the whole is cut to 100 bytes.
func cleanContentType(ct string) string {
	mt, params, found := strings.Cut(ct, ";")
	if !mediaType.MatchString(strings.TrimSpace(mt)) {
		return Redact(ct, 100)
	}
	if found {
		mt += ";" + Redact(params, 100)
	}
	return cut(mt, 100)
}

// tokenLike matches runs that could be a token, a secret or a code: 16 or more characters of the
// URL-safe base64 alphabet and the other characters token generators use, Doorkeeper's 43-character
// tokens among them.
var tokenLike = regexp.MustCompile(`[A-Za-z0-9_\-\.~+/=]{16,}`)

// Redact returns s with every token-like run replaced by "[redacted]", then cut to at most max
// bytes of valid UTF-8. Redacting first matters: a token cut before it is matched would leave up to
// 15 of its characters, too few to look like a token. It is applied to any server text that goes
// into an error or a log line.
func Redact(s string, max int) string {
	return cut(tokenLike.ReplaceAllString(strings.ToValidUTF8(s, ""), "[redacted]"), max)
}

// cut returns s cut to at most max bytes, without the piece of a rune the cut splits. It never
// removes secrets: only text already redacted may be cut.
func cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "")
}
