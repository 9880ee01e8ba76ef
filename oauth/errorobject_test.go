package oauth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestErrorObjectDecidesWhateverTheWrapping sends an RFC 6749 §5.2 error object under every label
// and status a server or a gateway in front of it might put on it: the client reads the same error
// code from each, keeps the HTTP status, and calls it temporary by the status alone.
func TestErrorObjectDecidesWhateverTheWrapping(t *testing.T) {
	const object = `{"error":"invalid_grant","error_description":"The provided authorization grant is invalid"}`
	wrappings := []struct{ name, contentType, body string }{
		{"JSON", "application/json", object},
		{"JSON, charset UTF-8", "application/json; charset=UTF-8", object},
		{"JSON, charset without a space", "application/json;charset=utf-8", object},
		{"problem+json", "application/problem+json", object},
		{"text/plain", "text/plain", object},
		{"text/html relabelled by a gateway", "text/html; charset=utf-8", object},
		{"no Content-Type", "", object},
		{"byte order mark, JSON", "application/json", "\uFEFF" + object},
		{"byte order mark, text/html", "text/html", "\uFEFF" + object},
		{"whitespace around", "application/json", "\r\n  " + object + "\n\t "},
		{"whitespace around, text/plain", "text/plain", " \n" + object + "\n"},
	}
	for _, status := range []int{200, 201, 400, 401, 403, 429, 500, 503} {
		for _, w := range wrappings {
			t.Run(fmt.Sprintf("%d %s", status, w.name), func(t *testing.T) {
				e := &endpoint{status: status, contentType: w.contentType, body: w.body}
				tok, err := client().Token(context.Background(), e.start(t), refresh)
				var oe *Error
				if tok != nil || !errors.As(err, &oe) {
					t.Fatalf("token %v, error %v (%T); want a *Error", tok != nil, err, err)
				}
				temporary := status >= 500 || status == 429
				if oe.Code != ErrInvalidGrant || oe.Status != status || oe.Temporary() != temporary {
					t.Errorf("code %q status %d temporary %v; want %q %d %v", oe.Code, oe.Status, oe.Temporary(), ErrInvalidGrant, status, temporary)
				}
				if oe.Description != "The provided authorization grant is invalid" {
					t.Errorf("description %q", oe.Description)
				}
				if want := fmt.Sprintf("HTTP %d invalid_grant", status); !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			})
		}
	}
}

// TestNotAnErrorObject sends bodies that mention an error but are not an RFC 6749 §5.2 error
// object: none gets an error code, and what the server sent is shown redacted.
func TestNotAnErrorObject(t *testing.T) {
	for _, body := range []string{
		`[{"error":"invalid_grant","token":"` + marker + `"}]`,
		`{"error":{"code":"invalid_grant"},"token":"` + marker + `"}`,
		`{"error":"","token":"` + marker + `"}`,
		`{"error":7,"token":"` + marker + `"}`,
		`{"message":"invalid_grant","token":"` + marker + `"}`,
		`{"error":"invalid_grant","error":"invalid_client","token":"` + marker + `"}`,
		`{"error":"invalid_grant"}{"token":"` + marker + `"}`,
		`"invalid_grant ` + marker + `"`,
	} {
		for _, contentType := range []string{"application/json", "text/html"} {
			for _, status := range []int{200, 400, 503} {
				t.Run(fmt.Sprintf("%d %s %s", status, contentType, body), func(t *testing.T) {
					e := &endpoint{status: status, contentType: contentType, body: body}
					_, err := client().Token(context.Background(), e.start(t), refresh)
					var oe *Error
					if !errors.As(err, &oe) {
						t.Fatalf("error %v (%T), want *Error", err, err)
					}
					if oe.Code != "" || oe.Status != status {
						t.Errorf("code %q status %d; want no code, status %d", oe.Code, oe.Status, status)
					}
					if strings.Contains(err.Error(), marker) {
						t.Errorf("error %q keeps the token", err)
					}
					if status != 200 && !strings.Contains(oe.Snippet, "[redacted]") {
						t.Errorf("snippet %q, want the body, redacted", oe.Snippet)
					}
				})
			}
		}
	}
}
