package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client requests tokens from a token endpoint. The zero value is ready to use; its fields are
// the knobs tests shrink.
type Client struct {
	// HTTP sends the request. Nil means a client with a 30 s timeout that keeps up to 64 idle
	// connections per host. Redirects are never followed,
	// whatever this client's CheckRedirect says: a 3xx is an error.
	HTTP *http.Client
	// MaxBody caps the response body read, in bytes; 0 means 64 KiB. A longer body is an error.
	MaxBody int64
	// Lifetimes bound expires_in; zero fields mean 2 hours (Default) and 24 hours (Max).
	Lifetimes Lifetimes
	// UserAgent is sent as User-Agent when set.
	UserAgent string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Token makes one request to the token endpoint at tokenURL and returns the token it grants.
//
// Errors: a *PartialTokenError for a 2xx response whose access token cannot be used but which
// carried a well-formed new refresh token, which the caller must store; a *Error for any other
// HTTP response that is not a complete token (an RFC 6749 §5.2 error, a non-JSON body, a redirect,
// an oversized body), also reachable with errors.As through a *PartialTokenError; a
// *TransportError when the request failed or the response was cut short, so the server may have
// acted on it; otherwise (an incomplete Request) a plain error, sent nowhere. No error text
// contains a secret, code or token.
func (c *Client) Token(ctx context.Context, tokenURL string, r Request) (*Token, error) {
	tok, err := c.token(ctx, tokenURL, r)
	sent := []string{r.ClientID, r.ClientSecret, r.RefreshToken, r.Code, r.CodeVerifier}
	if r.ClientSecret != "" {
		// what a server might echo of a Basic header: the header, its base64, its encoded secret
		basic := basicAuthorization(r.ClientID, r.ClientSecret)
		sent = append(sent, basic, basic[len("Basic "):], url.QueryEscape(r.ClientSecret))
	}
	var pe *PartialTokenError
	if errors.As(err, &pe) {
		sent = append(sent, pe.RefreshToken)
	}
	var e *Error
	if errors.As(err, &e) { // through a *PartialTokenError too: its Err
		e.clean(sent...)
	}
	return tok, err
}

func (c *Client) token(ctx context.Context, tokenURL string, r Request) (*Token, error) {
	fields, authorization, err := r.body()
	if err != nil {
		return nil, err
	}
	body, contentType, err := r.encode(fields)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("token endpoint request: %w", err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}

	sent := c.now()
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, &TransportError{Err: err}
	}
	defer resp.Body.Close()
	limit := c.MaxBody
	if limit <= 0 {
		limit = 64 << 10
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, &TransportError{Err: fmt.Errorf("HTTP %d: read body: %w", resp.StatusCode, err)}
	}
	e := &Error{Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type")}
	e.RetryAfter, e.RetryAfterFrom = retryAfter(resp.Header, c.now())
	switch {
	case int64(len(data)) > limit:
		e.Reason = fmt.Sprintf("body longer than %d bytes", limit)
		return nil, e
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return c.success(e, data, sent)
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		e.Reason = "redirect not followed"
	}
	err = errorResponse(e, data)
	if r.Encoding != EncodingForm && refusesJSON(e) {
		e.Hint = "the request body was JSON (token_request_encoding: json, Stora's); a server that takes only form bodies needs token_request_encoding: form"
	}
	return nil, err
}

// refusesJSON reports whether an error answer says the server would not take the body's media type:
// 415, or a 400 invalid_request whose description names the content type (oidc-provider's does).
func refusesJSON(e *Error) bool {
	if e.Status == http.StatusUnsupportedMediaType {
		return true
	}
	d := strings.ToLower(e.Description)
	return e.Status == http.StatusBadRequest && e.Code == "invalid_request" && (strings.Contains(d, "content-type") || strings.Contains(d, "content type"))
}

// success reads a 2xx response: a token when the body is a usable token response (RFC 6749 §5.1)
// labelled JSON, and otherwise an error, filled with e's status and headers.
func (c *Client) success(e *Error, data []byte, sent time.Time) (*Token, error) {
	tok, err := parseToken(data, sent, c.lifetimes())
	if !isJSON(e.ContentType) {
		tok, err = notJSON(data, tok, err)
	}
	var oe *Error
	if errors.As(err, &oe) {
		oe.Status, oe.ContentType, oe.RetryAfter, oe.RetryAfterFrom = e.Status, e.ContentType, e.RetryAfter, e.RetryAfterFrom
	}
	return tok, err
}

// notJSON judges a 2xx response whose Content-Type does not say JSON, from what parseToken made of
// its body. The access token is refused; but an error object is still that error, and a new refresh
// token is still kept, because a gateway's label does not change what the server did.
func notJSON(data []byte, tok *Token, err error) (*Token, error) {
	const reason = "success response is not JSON"
	var pe *PartialTokenError
	var oe *Error
	switch {
	case err == nil && tok.RefreshToken != "":
		return nil, &PartialTokenError{Err: &Error{Reason: reason}, RefreshToken: tok.RefreshToken}
	case errors.As(err, &pe):
		pe.Err.Reason = reason
		return nil, pe
	case errors.As(err, &oe) && oe.Code != "":
		return nil, oe
	}
	return nil, &Error{Reason: reason, Snippet: successSnippet(data)}
}

// errorResponse fills e from an RFC 6749 §5.2 error object, whatever the Content-Type said, or
// with a redacted snippet of any other body: of a JSON object, only what objectSnippet keeps.
func errorResponse(e *Error, data []byte) error {
	if code, desc, ok := errorObject(data); ok {
		e.Code, e.Description = code, desc
		return e
	}
	if s, ok := objectSnippet(data); ok {
		e.Snippet = s
		return e
	}
	e.Snippet = string(data)
	return e
}

// messageMembers are the members of a JSON error body that say what went wrong (RFC 6749 §5.2's,
// and what gateways and frameworks use); their text is quoted, redacted.
var messageMembers = map[string]bool{"error": true, "error_description": true, "error_uri": true,
	"message": true, "msg": true, "detail": true, "title": true, "status": true, "code": true, "type": true}

// objectSnippet quotes a body that is one JSON object without the value of any member but the
// messageMembers with a string, number or boolean value: a member such as id_token, or one no RFC
// defines, may hold a secret in any alphabet, which the token-shaped redaction would not catch.
// Each value left out is shown as "[redacted]". It reports false for a body that is not a JSON
// object.
func objectSnippet(body []byte) (string, bool) {
	r, _, err := parseFields(body)
	if err != nil {
		return "", false
	}
	out := make(map[string]any, len(r))
	for k, v := range r {
		var scalar any
		if messageMembers[k] && json.Unmarshal(v, &scalar) == nil {
			switch scalar.(type) {
			case string, float64, bool:
				out[k] = scalar
				continue
			}
		}
		out[k] = "[redacted]"
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// errorObject reads body as an RFC 6749 §5.2 error response: one JSON object (after optional
// whitespace and a byte order mark) with a non-empty string "error" member. error_description is
// read when it is a string. A gateway that relabels the server's answer (text/html, text/plain, no
// Content-Type) does not change what the server said, so the label is not consulted.
func errorObject(body []byte) (code, description string, ok bool) {
	r, twice, err := parseFields(body)
	if err != nil || twice["error"] {
		return "", "", false
	}
	if code, ok = jsonString(r["error"]); !ok || code == "" {
		return "", "", false
	}
	if !twice["error_description"] {
		description, _ = jsonString(r["error_description"])
	}
	return code, description, true
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || (len(mt) > 5 && mt[len(mt)-5:] == "+json"))
}

func (c *Client) httpClient() *http.Client {
	hc := http.Client{Timeout: 30 * time.Second, Transport: defaultTransport}
	if c.HTTP != nil {
		hc = *c.HTTP
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &hc
}

// defaultTransport keeps enough idle connections for many rotations at once to one token
// endpoint (net/http's default keeps two per host, and would open a connection per request).
var defaultTransport = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	return t
}()

func (c *Client) lifetimes() Lifetimes {
	l := c.Lifetimes
	if l.Default <= 0 {
		l.Default = 2 * time.Hour
	}
	if l.Max <= 0 {
		l.Max = 24 * time.Hour
	}
	return l
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}
