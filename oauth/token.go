package oauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Token is a successful token response (RFC 6749 §5.1), checked and normalised.
type Token struct {
	// AccessToken is the access token; never empty.
	AccessToken string
	// TokenType is always "Bearer": a response of any other type is rejected (RFC 6749 §7.1),
	// and "bearer" in another case is accepted as the same type (RFC 6750 §4 is case-insensitive).
	TokenType string
	// RefreshToken is the new refresh token, or empty when the response carried none
	// (client_credentials never does; a refresh response without one keeps the stored one).
	RefreshToken string
	// Scope is the granted scope, space-separated; empty when the response omitted it, which per
	// RFC 6749 §5.1 means the scope requested.
	Scope string
	// ExpiresAt is the UTC instant the access token stops working, computed from the response's
	// expires_in (RFC 6749 §5.1) counted from when the request was sent, so never later than the
	// server meant.
	ExpiresAt time.Time
	// RefreshExpiresAt is the UTC instant the refresh token stops working, from the response's
	// refresh_token_expires_in (not in RFC 6749, but sent by servers whose refresh tokens expire:
	// GitHub Apps among them) counted from when the request was sent, like ExpiresAt. Zero when
	// the response does not say, or says nothing usable: a value expires_in would be refused for,
	// or one beyond MaxRefreshLifetime that is not a Unix time within it, means unknown, and never
	// refuses the response.
	RefreshExpiresAt time.Time
}

// MaxRefreshLifetime caps refresh_token_expires_in, as Lifetimes.Max caps expires_in: refresh
// tokens that expire live hours to months (GitHub Apps': six months); a larger value that reads
// as a Unix time within it from now is taken as the instant, any other means unknown.
const MaxRefreshLifetime = 10 * 365 * 24 * time.Hour

// fields is a JSON object's members, raw, so that types other than documented can be judged one by
// one. Names match exactly: RFC 6749 parameter names are case-sensitive, and Go's case-folding
// struct decoding would take "Access_Token" for "access_token".
type fields map[string]json.RawMessage

// parseFields reads body as exactly one JSON object, and returns its members with the names of
// those that appear more than once: of two values, which one the server meant is anyone's guess,
// so a caller must not use such a member. A UTF-8 byte order mark before the object is ignored
// (RFC 8259 §8.1), as is whitespace around it.
func parseFields(body []byte) (f fields, twice map[string]bool, err error) {
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	if err := json.Unmarshal(body, &f); err != nil || f == nil {
		return nil, nil, errors.New("body is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.Token() // {
	seen := map[string]bool{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			break
		}
		name, _ := k.(string)
		if seen[name] {
			if twice == nil {
				twice = map[string]bool{}
			}
			twice[name] = true
		}
		seen[name] = true
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			break
		}
	}
	return f, twice, nil
}

// Lifetimes bound what the client believes about expires_in.
type Lifetimes struct {
	// Default is assumed when a response omits expires_in: Stora documents 2 hours.
	Default time.Duration
	// Max caps any expires_in. A larger value that reads as a Unix time within Max from now (the
	// Stora contract's refresh example sends created_at + 7200 there) is taken as the expiry
	// instant; any other larger value is replaced by Default.
	Max time.Duration
}

// parseToken turns a 2xx JSON body into a Token (RFC 6749 §5.1). sent is when the request was
// sent. Errors, with Status left for the caller to fill: a *Error with Code set when the body has an
// error member; a *PartialTokenError when the access token part cannot be used but a well-formed
// new refresh token came with it; otherwise a *Error with Reason and Snippet set.
func parseToken(body []byte, sent time.Time, life Lifetimes) (*Token, error) {
	r, twice, err := parseFields(body)
	if err != nil {
		return nil, &Error{Reason: "malformed token response: " + err.Error(), Snippet: successSnippet(body)}
	}
	if !isNull(r["error"]) || twice["error"] {
		e := &Error{Reason: "error member in a success response"}
		e.Code, e.Description, _ = errorObject(body)
		return nil, e
	}
	t, err := tokenFields(r, twice, sent, life)
	if err == nil {
		return t, nil
	}
	e := &Error{Reason: "malformed token response: " + err.Error()}
	if rt, ok := newRefreshToken(r, twice); ok {
		return nil, &PartialTokenError{Err: e, RefreshToken: rt} // no snippet: the body holds the token
	}
	e.Snippet = successSnippet(body)
	return nil, e
}

// successSnippet is what an error may quote of a 2xx body: a body that is a JSON object is a token
// response, whatever is wrong with it, and may hold a working access token in any alphabet, so only
// its member names are quoted, and a body that starts as JSON but does not parse is not quoted at
// all; any other body (an HTML page from a proxy) is quoted, to be redacted.
func successSnippet(body []byte) string {
	trimmed := bytes.TrimSpace(bytes.TrimPrefix(bytes.TrimSpace(body), []byte("\uFEFF")))
	var members map[string]json.RawMessage
	if json.Unmarshal(trimmed, &members) == nil && members != nil {
		return "a JSON object with members " + strings.Join(slices.Sorted(maps.Keys(members)), ", ")
	}
	if bytes.HasPrefix(trimmed, []byte("{")) || bytes.HasPrefix(trimmed, []byte("[")) {
		// Broken JSON is still most likely a token response: not a byte of it is quoted.
		return fmt.Sprintf("%d bytes of JSON that do not parse", len(body))
	}
	return string(body)
}

// newRefreshToken returns the response's refresh_token when it can be stored even though the rest
// of the response is refused: a JSON string of printable ASCII, not blank, appearing once.
func newRefreshToken(r fields, twice map[string]bool) (string, bool) {
	if twice["refresh_token"] {
		return "", false
	}
	rt, ok := jsonString(r["refresh_token"])
	return rt, ok && validToken(rt)
}

// tokenFields checks a token response's members and normalises them into a Token.
func tokenFields(r fields, twice map[string]bool, sent time.Time, life Lifetimes) (*Token, error) {
	if len(twice) > 0 {
		first := slices.Sorted(maps.Keys(twice))[0]
		return nil, fmt.Errorf("member %q appears twice", Redact(first, 40))
	}
	var t Token
	var ok bool
	if t.AccessToken, ok = jsonString(r["access_token"]); !ok || !validToken(t.AccessToken) {
		return nil, fmt.Errorf("access_token missing, blank or not a string of printable characters")
	}
	tt, ok := jsonString(r["token_type"])
	if !ok || !strings.EqualFold(tt, "bearer") {
		return nil, fmt.Errorf("token_type %q is not Bearer", Redact(tt, 20))
	}
	t.TokenType = "Bearer"
	if !isNull(r["refresh_token"]) {
		if t.RefreshToken, ok = jsonString(r["refresh_token"]); !ok {
			return nil, fmt.Errorf("refresh_token is not a string")
		}
		if strings.TrimSpace(t.RefreshToken) == "" {
			t.RefreshToken = "" // blank: as if omitted, so the stored one is kept
		} else if !validToken(t.RefreshToken) {
			return nil, fmt.Errorf("refresh_token is not a string of printable characters")
		}
	}
	if !isNull(r["scope"]) {
		if t.Scope, ok = jsonScope(r["scope"]); !ok {
			return nil, fmt.Errorf("scope is not a string")
		}
	}
	expiresAt, err := expiry(r["expires_in"], sent, life)
	if err != nil {
		return nil, err
	}
	t.ExpiresAt = expiresAt
	t.RefreshExpiresAt = refreshExpiry(r["refresh_token_expires_in"], sent)
	return &t, nil
}

// expiry computes the UTC expiry instant from a raw expires_in.
func expiry(raw json.RawMessage, sent time.Time, life Lifetimes) (time.Time, error) {
	sent = sent.UTC()
	if isNull(raw) {
		return sent.Add(life.Default), nil
	}
	n, err := seconds(raw)
	if err != nil {
		return time.Time{}, fmt.Errorf("expires_in is not a number")
	}
	switch {
	case n < 1:
		return time.Time{}, fmt.Errorf("expires_in %s: the token is already expired", strconv.FormatFloat(n, 'g', 6, 64))
	case n <= life.Max.Seconds():
		return sent.Add(time.Duration(n) * time.Second), nil // a fraction of a second is dropped
	}
	// Larger than any plausible lifetime: an absolute Unix time in the near future is read as the
	// expiry instant; anything else (up to +Inf) says nothing usable, so the documented default
	// applies.
	if n < float64(sent.Add(life.Max).Unix()+1) {
		if at := time.Unix(int64(n), 0).UTC(); at.After(sent) {
			return at, nil
		}
	}
	return sent.Add(min(life.Default, life.Max)), nil
}

// refreshExpiry computes the UTC instant a refresh token expires from a raw
// refresh_token_expires_in by expiry's rules, with MaxRefreshLifetime for the cap; zero, meaning
// unknown, where expiry would use a default or refuse the value.
func refreshExpiry(raw json.RawMessage, sent time.Time) time.Time {
	sent = sent.UTC()
	n, err := seconds(raw)
	switch {
	case isNull(raw) || err != nil || n < 1:
		return time.Time{}
	case n <= MaxRefreshLifetime.Seconds():
		return sent.Add(time.Duration(n) * time.Second)
	case n < float64(sent.Add(MaxRefreshLifetime).Unix()+1):
		if at := time.Unix(int64(n), 0).UTC(); at.After(sent) {
			return at
		}
	}
	return time.Time{}
}

// seconds reads a raw lifetime member: a JSON number, or a decimal number sent as a string.
func seconds(raw json.RawMessage) (float64, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		s = string(raw) // a JSON number
	} else if !decimal.MatchString(strings.TrimSpace(s)) {
		return 0, errors.New("not a number")
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if (err != nil && !errors.Is(err, strconv.ErrRange)) || math.IsNaN(n) {
		return 0, errors.New("not a number")
	}
	return n, nil
}

// decimal is what a number sent as a string may look like: no hex, no "Infinity".
var decimal = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)

// validToken reports whether s can be a token: not blank, and only printable ASCII (RFC 6749
// Appendix A: VSCHAR).
func validToken(s string) bool {
	if strings.TrimSpace(s) == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// jsonScope accepts the RFC 6749 §3.3 string, and an array of strings, which some servers send.
func jsonScope(raw json.RawMessage) (string, bool) {
	if s, ok := jsonString(raw); ok {
		return strings.Join(strings.Fields(s), " "), true
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", false
	}
	return strings.Join(strings.Fields(strings.Join(list, " ")), " "), true // [""] is no scope, not "  "
}
