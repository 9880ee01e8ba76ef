package oauth

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestSuccessBodiesAreNeverQuoted: a 2xx body that is a JSON object is a token response, whatever
// is wrong with it, and its access token may be in any alphabet (here one with '!', which no
// token-like pattern catches). No error text may quote it.
func TestSuccessBodiesAreNeverQuoted(t *testing.T) {
	const at = "Zm9vYmFy!c2VjcmV0!dG9rZW4x!QUJDRA"
	for _, tc := range []struct{ name, contentType, body string }{
		{"not Bearer", "application/json", `{"access_token":"` + at + `","token_type":"mac","expires_in":7200}`},
		{"labelled text/html", "text/html", `{"access_token":"` + at + `","token_type":"Bearer","expires_in":7200}`},
		{"access_token twice", "application/json", `{"access_token":"` + at + `","access_token":"` + at + `","token_type":"Bearer"}`},
		{"expires_in negative", "application/json", `{"access_token":"` + at + `","token_type":"Bearer","expires_in":-5}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			_, err := (&Client{}).Token(context.Background(), srv.URL, Request{GrantType: GrantClientCredentials, ClientID: "client-id", ClientSecret: "client-secret"})
			if err == nil {
				t.Fatal("a response with an unusable access token was accepted")
			}
			for _, piece := range strings.Split(at, "!") {
				if strings.Contains(err.Error(), piece) {
					t.Errorf("error text quotes the access token (%q): %v", piece, err)
				}
			}
		})
	}
}

// TestHTMLEscapedEchoIsRedacted: a server that echoes the client secret HTML-escaped in an error
// page must not get it into the error text.
func TestHTMLEscapedEchoIsRedacted(t *testing.T) {
	const secret = `Pa55&w<rd>"x-long-enough`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`<p>bad secret Pa55&amp;w&lt;rd&gt;&#34;x-long-enough</p>`))
	}))
	defer srv.Close()
	_, err := (&Client{}).Token(context.Background(), srv.URL, Request{GrantType: GrantClientCredentials, ClientID: "client-id", ClientSecret: secret})
	if err == nil || strings.Contains(err.Error(), "Pa55") {
		t.Errorf("error text %v holds the HTML-escaped client secret", err)
	}
}

// TestDefaultBodyCapAndTemporaryStatuses holds docs/bad-input.md's figures: a body over 64 KiB is refused
// unread, and 5xx, 429 and 408 are the statuses worth a retry.
func TestDefaultBodyCapAndTemporaryStatuses(t *testing.T) {
	for _, n := range []int{64 << 10, 64<<10 + 1} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte(strings.Repeat("x", n)))
		}))
		_, err := (&Client{}).Token(context.Background(), srv.URL, Request{GrantType: GrantClientCredentials, ClientID: "client-id", ClientSecret: "client-secret"})
		srv.Close()
		if capped := err != nil && strings.Contains(err.Error(), "body longer than 65536 bytes"); capped != (n > 64<<10) {
			t.Errorf("a %d-byte body: %v; want refused as too long only above 64 KiB", n, err)
		}
	}
	for status, want := range map[int]bool{408: true, 429: true, 500: true, 503: true, 400: false, 401: false, 404: false} {
		if got := (&Error{Status: status}).Temporary(); got != want {
			t.Errorf("HTTP %d: Temporary() = %v, want %v", status, got, want)
		}
	}
}

// TestUnknownMembersOfErrorBodiesAreNotQuoted: an error response that is a JSON object but no
// RFC 6749 error object is quoted for what it says went wrong, never for the value of id_token or a
// member no RFC defines, in whatever alphabet (here one with '!' and spaces, which the token-like
// redaction does not catch), nor a token response's own members. A successful response's id_token
// and unknown members are never part of the Token.
func TestUnknownMembersOfErrorBodiesAreNotQuoted(t *testing.T) {
	const idToken = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJNSyFpZCJ9.c2ln"
	const odd = "MK! odd hidden !value"
	body := `{"message":"upstream says no","id_token":"` + idToken + `","x_vendor_secret":"` + odd + `","refresh_token":"` + odd + `2"}`
	for _, status := range []int{400, 401, 500, 503} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			w.Write([]byte(body))
		}))
		_, err := client().Token(context.Background(), srv.URL, refresh)
		srv.Close()
		if err == nil {
			t.Fatal("no error")
		}
		for _, piece := range append(strings.Split(odd, " "), "eyJzdWIiOiJNSyFpZCJ9", "c2ln") {
			if strings.Contains(err.Error(), piece) {
				t.Errorf("HTTP %d: error %q quotes %q", status, err, piece)
			}
		}
		if !strings.Contains(err.Error(), "upstream says no") || !strings.Contains(err.Error(), "x_vendor_secret") {
			t.Errorf("HTTP %d: error %q does not say what the server said", status, err)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":"at-1234","token_type":"Bearer","expires_in":7200,"refresh_token":"rt-1234","id_token":"` + idToken + `","x_vendor_secret":"` + odd + `"}`))
	}))
	defer srv.Close()
	tok, err := client().Token(context.Background(), srv.URL, refresh)
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprintf("%#v", *tok); strings.Contains(s, idToken) || strings.Contains(s, odd) {
		t.Errorf("token %s holds id_token or an unknown member", s)
	}
}
