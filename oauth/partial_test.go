package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// newRT is a refresh token shaped like the Stora contract's refresh example.
const newRT = "bs51F__fUJgkQg2CjU8MyOHiQGhMupneZBkVfyefJYU"

// TestRefusedSuccessKeepsTheRotatedRefreshToken sends 2xx responses whose access token part cannot
// be used: when a new refresh token came with it, unambiguously, the caller gets it to store (a
// *PartialTokenError); otherwise a plain *Error, as for any refused response.
func TestRefusedSuccessKeepsTheRotatedRefreshToken(t *testing.T) {
	const rt = `"refresh_token":"` + newRT + `"`
	const good = `"access_token":"at","token_type":"Bearer","expires_in":7200`
	type kind int
	const (
		token kind = iota
		partial
		plain
	)
	for _, tc := range []struct {
		name        string
		status      int
		contentType string
		body        string
		want        kind
		inError     string // in the error text, for errors
		code        string // Code, for plain errors
	}{
		{"usable", 200, "application/json", `{` + good + `,` + rt + `}`, token, "", ""},
		{"token_type mac", 200, "application/json", `{"access_token":"at","token_type":"mac","expires_in":7200,` + rt + `}`, partial, `token_type "mac" is not Bearer`, ""},
		{"token_type missing", 200, "application/json", `{"access_token":"at","expires_in":7200,` + rt + `}`, partial, "token_type", ""},
		{"expires_in -5", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":-5,` + rt + `}`, partial, "already expired", ""},
		{"expires_in not a number", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":"soon",` + rt + `}`, partial, "expires_in is not a number", ""},
		{"access_token missing", 200, "application/json", `{"token_type":"Bearer","expires_in":7200,` + rt + `}`, partial, "access_token", ""},
		{"access_token blank", 200, "application/json", `{"access_token":"  ","token_type":"Bearer",` + rt + `}`, partial, "access_token", ""},
		{"access_token not printable", 200, "application/json", `{"access_token":"a\u0007b","token_type":"Bearer",` + rt + `}`, partial, "access_token", ""},
		{"access_token a number", 200, "application/json", `{"access_token":42,"token_type":"Bearer",` + rt + `}`, partial, "access_token", ""},
		{"scope a number", 200, "application/json", `{` + good + `,"scope":7,` + rt + `}`, partial, "scope is not a string", ""},
		{"access_token twice", 200, "application/json", `{` + good + `,"access_token":"other",` + rt + `}`, partial, `"access_token" appears twice`, ""},
		{"unknown member twice", 200, "application/json", `{` + good + `,"created_at":1,"created_at":2,` + rt + `}`, partial, `"created_at" appears twice`, ""},
		{"201", 201, "application/json", `{"access_token":"at","token_type":"mac",` + rt + `}`, partial, "HTTP 201", ""},
		{"byte order mark", 200, "application/json", "\uFEFF" + `{"access_token":"at","token_type":"mac",` + rt + `}`, partial, "token_type", ""},
		{"error member null is no error", 200, "application/json", `{"error":null,"access_token":"at","token_type":"mac",` + rt + `}`, partial, "token_type", ""},
		{"usable token labelled text/html", 200, "text/html", `{` + good + `,` + rt + `}`, partial, "success response is not JSON", ""},
		{"unusable token, no Content-Type", 200, "", `{"access_token":"at","token_type":"mac",` + rt + `}`, partial, "success response is not JSON", ""},
		{"refresh_token twice, same value", 200, "application/json", `{` + good + `,` + rt + `,` + rt + `}`, plain, `"refresh_token" appears twice`, ""},
		{"refresh_token twice, two values", 200, "application/json", `{` + good + `,"refresh_token":"other",` + rt + `}`, plain, `"refresh_token" appears twice`, ""},
		{"refresh_token a number", 200, "application/json", `{"access_token":"at","token_type":"mac","refresh_token":42}`, plain, "token_type", ""},
		{"refresh_token blank", 200, "application/json", `{"access_token":"at","token_type":"mac","refresh_token":"  "}`, plain, "token_type", ""},
		{"refresh_token null", 200, "application/json", `{"access_token":"at","token_type":"mac","refresh_token":null}`, plain, "token_type", ""},
		{"refresh_token not printable", 200, "application/json", `{"access_token":"at","token_type":"mac","refresh_token":"r\u0000t"}`, plain, "token_type", ""},
		{"refresh_token not ASCII", 200, "application/json", `{"access_token":"at","token_type":"mac","refresh_token":"rét"}`, plain, "token_type", ""},
		{"no refresh_token", 200, "application/json", `{"access_token":"at","token_type":"mac"}`, plain, "token_type", ""},
		{"error member beside a refresh token", 200, "application/json", `{` + good + `,` + rt + `,"error":"server_error"}`, plain, "server_error", "server_error"},
		{"error member beside a refresh token, text/html", 200, "text/html", `{"error":"invalid_grant",` + rt + `}`, plain, "invalid_grant", ErrInvalidGrant},
		{"error member twice", 200, "application/json", `{"error":"server_error","error":null,` + rt + `}`, plain, "error member", ""},
		{"two JSON objects", 200, "application/json", `{` + good + `,` + rt + `}{` + rt + `}`, plain, "not a JSON object", ""},
		{"array", 200, "application/json", `[{` + good + `,` + rt + `}]`, plain, "not a JSON object", ""},
		{"usable token without refresh_token labelled text/html", 200, "text/html", `{` + good + `}`, plain, "success response is not JSON", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &endpoint{status: tc.status, contentType: tc.contentType, body: tc.body}
			tok, err := client().Token(context.Background(), e.start(t), refresh)
			if tc.want == token {
				if err != nil || tok.RefreshToken != newRT {
					t.Fatalf("token %+v, error %v; want a token with the new refresh token", tok, err)
				}
				return
			}
			if tok != nil {
				t.Fatalf("got a token, want an error")
			}
			var pe *PartialTokenError
			if got := errors.As(err, &pe); got != (tc.want == partial) {
				t.Fatalf("error %v (%T): partial %v, want %v", err, err, got, tc.want == partial)
			}
			if pe != nil && pe.RefreshToken != newRT {
				t.Errorf("RefreshToken %q, want %q", pe.RefreshToken, newRT)
			}
			var oe *Error
			if !errors.As(err, &oe) {
				t.Fatalf("error %v (%T): errors.As finds no *Error", err, err)
			}
			if oe.Status != tc.status || oe.Code != tc.code || oe.Temporary() {
				t.Errorf("status %d code %q temporary %v; want %d %q false", oe.Status, oe.Code, oe.Temporary(), tc.status, tc.code)
			}
			if !strings.Contains(err.Error(), tc.inError) {
				t.Errorf("error %q does not mention %q", err, tc.inError)
			}
			if strings.Contains(err.Error(), newRT[:8]) || strings.Contains(fmt.Sprintf("%#v", err), newRT[:8]) {
				t.Errorf("error %q shows the new refresh token", err)
			}
			if e.requests.Load() != 1 {
				t.Errorf("%d requests, want 1", e.requests.Load())
			}
		})
	}
}

// TestPartialTokenErrorNeverPrintsTheRefreshToken formats a partial response with every verb, as
// a pointer, a value and wrapped, through both slog handlers and through encoding/json.
func TestPartialTokenErrorNeverPrintsTheRefreshToken(t *testing.T) {
	e := &endpoint{status: 200, contentType: "application/json",
		body: `{"access_token":"at","token_type":"mac","refresh_token":"` + newRT + `"}`}
	_, err := client().Token(context.Background(), e.start(t), refresh)
	var pe *PartialTokenError
	if !errors.As(err, &pe) || pe.RefreshToken != newRT {
		t.Fatalf("error %v (%T), want a *PartialTokenError", err, err)
	}
	wrapped := fmt.Errorf("rotate acme: %w", err)
	var out []string
	for _, v := range []any{pe, *pe, wrapped, []error{pe}, struct{ Err error }{pe}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T", "%60v", "%-8s", "%+q", "%#q"} {
			out = append(out, fmt.Sprintf(verb, v))
		}
	}
	out = append(out, err.Error(), wrapped.Error(), fmt.Sprint(pe), fmt.Sprintln(pe))
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Error("rotation failed", "err", err, "any", slog.AnyValue(pe))
	slog.New(slog.NewJSONHandler(&logs, nil)).Error("rotation failed", "err", err, "any", slog.AnyValue(*pe))
	for _, v := range []any{pe, *pe, struct{ Err error }{pe}, map[string]any{"err": *pe}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	out = append(out, logs.String())
	hexRT := fmt.Sprintf("%x", newRT[:8])
	for _, s := range out {
		if piece := keepsPieceOf(s, newRT); piece != "" || strings.Contains(strings.ToLower(s), hexRT) {
			t.Errorf("%q shows the refresh token", s)
		}
	}
	if s := fmt.Sprintf("%v", pe); !strings.HasPrefix(s, "refresh token rotated, access token refused: token endpoint: HTTP 200") {
		t.Errorf("%%v = %q", s)
	}
	if s := fmt.Sprintf("%#v", pe); !strings.Contains(s, `RefreshToken:"[redacted]"`) || !strings.Contains(s, "Status:200") {
		t.Errorf("%%#v = %q", s)
	}
}

// TestPartialTokenErrorIsScrubbed checks that the values the request sent, and the new refresh
// token itself, are removed from a partial response's error even where the server echoed them.
func TestPartialTokenErrorIsScrubbed(t *testing.T) {
	for _, echoed := range []string{"csecret", "rt-old", "rt-new-1"} {
		e := &endpoint{status: 200, contentType: "application/json",
			body: `{"access_token":"at","token_type":"` + echoed + `","refresh_token":"rt-new-1"}`}
		_, err := client().Token(context.Background(), e.start(t), refresh)
		var pe *PartialTokenError
		if !errors.As(err, &pe) || pe.RefreshToken != "rt-new-1" {
			t.Fatalf("error %v (%T), want a *PartialTokenError keeping rt-new-1", err, err)
		}
		if !strings.Contains(err.Error(), `token_type "[redacted]" is not Bearer`) {
			t.Errorf("token_type %s: error %q", echoed, err)
		}
		for _, secret := range []string{"csecret", "rt-old", "rt-new-1"} {
			if strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%#v", err), secret) {
				t.Errorf("token_type %s: error %q keeps %q", echoed, err, secret)
			}
		}
	}
}
