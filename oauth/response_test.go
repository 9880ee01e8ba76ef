package oauth

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// marker is a token-like value a server might echo; it must never reach an error text.
const marker = "MARKERtokenLIKEvalue0123456789abcdef"

// TestTokenResponses pins what the client makes of every kind of response the happy path never
// sees, under every status code: the token it accepts (and the values it keeps), or the error.
func TestTokenResponses(t *testing.T) {
	const doc = `"access_token":"at","token_type":"Bearer","expires_in":7200,"refresh_token":"rt","scope":"public.contact:read","created_at":1740235260`
	at2h := sent.Add(2 * time.Hour)
	type want struct {
		ok        bool
		expiresAt time.Time
		refresh   string
		scope     string
		typ       string // Bearer when ok
		code      string // RFC 6749 error code, for errors
		inError   string // substring of the error
		transport bool   // a *TransportError
		temporary bool
	}
	for _, tc := range []struct {
		name        string
		status      int
		contentType string
		body        string
		want        want
	}{
		{"documented", 200, "application/json", `{` + doc + `}`, want{ok: true, expiresAt: at2h, refresh: "rt", scope: "public.contact:read"}},
		{"201 is a success too", 201, "application/json", `{` + doc + `}`, want{ok: true, expiresAt: at2h, refresh: "rt", scope: "public.contact:read"}},
		{"JSON with charset", 200, "application/json; charset=utf-8", `{` + doc + `}`, want{ok: true, expiresAt: at2h, refresh: "rt", scope: "public.contact:read"}},
		{"unknown members ignored", 200, "application/json", `{` + doc + `,"operator":{"id":1},"extra":[1,2]}`, want{ok: true, expiresAt: at2h, refresh: "rt", scope: "public.contact:read"}},
		{"expires_in as a string", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":"7200"}`, want{ok: true, expiresAt: at2h}},
		{"expires_in as a float", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":7200.0}`, want{ok: true, expiresAt: at2h}},
		{"expires_in missing: Stora's documented 2 hours", 200, "application/json", `{"access_token":"at","token_type":"Bearer"}`, want{ok: true, expiresAt: at2h}},
		{"expires_in null", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":null}`, want{ok: true, expiresAt: at2h}},
		{"expires_in 60", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":60}`, want{ok: true, expiresAt: sent.Add(time.Minute)}},
		{"expires_in zero", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":0}`, want{inError: "already expired"}},
		{"expires_in negative", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":-1}`, want{inError: "already expired"}},
		{"expires_in absurd", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":99999999999}`, want{ok: true, expiresAt: at2h}},
		{"expires_in the contract's epoch example", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":1740242460}`, want{ok: true, expiresAt: at2h}},
		{"expires_in a boolean", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":true}`, want{inError: "expires_in is not a number"}},
		{"expires_in an object", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":{"s":1}}`, want{inError: "expires_in is not a number"}},
		{"token_type lower case", 200, "application/json", `{"access_token":"at","token_type":"bearer","expires_in":60}`, want{ok: true, expiresAt: sent.Add(time.Minute)}},
		{"token_type upper case", 200, "application/json", `{"access_token":"at","token_type":"BEARER","expires_in":60}`, want{ok: true, expiresAt: sent.Add(time.Minute)}},
		{"token_type mac", 200, "application/json", `{"access_token":"at","token_type":"mac","expires_in":60}`, want{inError: "token_type"}},
		{"token_type missing", 200, "application/json", `{"access_token":"at","expires_in":60}`, want{inError: "token_type"}},
		{"token_type a number", 200, "application/json", `{"access_token":"at","token_type":1,"expires_in":60}`, want{inError: "token_type"}},
		{"access_token missing", 200, "application/json", `{"token_type":"Bearer","expires_in":60}`, want{inError: "access_token"}},
		{"access_token null", 200, "application/json", `{"access_token":null,"token_type":"Bearer"}`, want{inError: "access_token"}},
		{"access_token a number", 200, "application/json", `{"access_token":12345,"token_type":"Bearer"}`, want{inError: "access_token"}},
		{"access_token empty", 200, "application/json", `{"access_token":"","token_type":"Bearer"}`, want{inError: "access_token"}},
		{"access_token blank", 200, "application/json", `{"access_token":"  ","token_type":"Bearer"}`, want{inError: "access_token"}},
		{"access_token with '~' and a space, the ends of printable ASCII", 200, "application/json", `{"access_token":"a~b c","token_type":"Bearer"}`, want{ok: true, expiresAt: at2h}},
		{"access_token with DEL", 200, "application/json", `{"access_token":"a\u007fb","token_type":"Bearer"}`, want{inError: "access_token"}},
		{"access_token with a control character", 200, "application/json", `{"access_token":"a\u0007b","token_type":"Bearer"}`, want{inError: "access_token"}},
		{"a member twice", 200, "application/json", `{"access_token":"","access_token":"at","token_type":"Bearer"}`, want{inError: "appears twice"}},
		{"expires_in twice", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":60,"expires_in":7200}`, want{inError: "appears twice"}},
		{"expires_in \"Infinity\"", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":"Infinity"}`, want{inError: "expires_in is not a number"}},
		{"expires_in hex", 200, "application/json", `{"access_token":"at","token_type":"Bearer","expires_in":"0x1p30"}`, want{inError: "expires_in is not a number"}},
		{"member names in another case", 200, "application/json", `{"Access_Token":"at","Token_Type":"Bearer"}`, want{inError: "access_token"}},
		{"refresh_token null keeps the stored one", 200, "application/json", `{"access_token":"at","token_type":"Bearer","refresh_token":null}`, want{ok: true, expiresAt: at2h}},
		{"refresh_token empty keeps the stored one", 200, "application/json", `{"access_token":"at","token_type":"Bearer","refresh_token":""}`, want{ok: true, expiresAt: at2h}},
		{"refresh_token a number", 200, "application/json", `{"access_token":"at","token_type":"Bearer","refresh_token":42}`, want{inError: "refresh_token"}},
		{"scope as a list", 200, "application/json", `{"access_token":"at","token_type":"Bearer","scope":["public.contact:read","public.unit:read"]}`, want{ok: true, expiresAt: at2h, scope: "public.contact:read public.unit:read"}},
		{"scope a number", 200, "application/json", `{"access_token":"at","token_type":"Bearer","scope":7}`, want{inError: "scope"}},
		{"scope null", 200, "application/json", `{"access_token":"at","token_type":"Bearer","scope":null}`, want{ok: true, expiresAt: at2h}},
		{"created_at a string is ignored", 200, "application/json", `{"access_token":"at","token_type":"Bearer","created_at":"yesterday"}`, want{ok: true, expiresAt: at2h}},
		{"error member in a 200", 200, "application/json", `{"error":"invalid_grant","error_description":"revoked"}`, want{code: "invalid_grant", inError: "HTTP 200 invalid_grant"}},
		{"error member beside a token", 200, "application/json", `{` + doc + `,"error":"server_error"}`, want{code: "server_error"}},
		{"empty body", 200, "application/json", ``, want{inError: "not a JSON object"}},
		{"JSON null", 200, "application/json", `null`, want{inError: "not a JSON object"}},
		{"JSON array", 200, "application/json", `[{` + doc + `}]`, want{inError: "not a JSON object"}},
		{"JSON string", 200, "application/json", `"` + marker + `"`, want{inError: "not a JSON object"}},
		{"truncated JSON", 200, "application/json", `{"access_token":"at"`, want{inError: "not a JSON object"}},
		{"two JSON objects", 200, "application/json", `{` + doc + `}{"access_token":"other"}`, want{inError: "not a JSON object"}},
		{"HTML maintenance page, 200", 200, "text/html", `<html><body>Down for maintenance ` + marker + `</body></html>`, want{inError: "success response is not JSON"}},
		{"JSON body, a +json media type", 200, "application/vnd.api+json", `{` + doc + `}`, want{ok: true, expiresAt: at2h, refresh: "rt", scope: "public.contact:read"}},
		{"JSON body, a bare +json label", 200, "+json", `{` + doc + `}`, want{inError: "not JSON"}},
		{"JSON body, a label shorter than +json", 200, "json", `{` + doc + `}`, want{inError: "not JSON"}},
		{"JSON body, text/plain", 200, "text/plain", `{` + doc + `}`, want{inError: "not JSON"}},
		{"no content type", 200, "", `{` + doc + `}`, want{inError: "not JSON"}},
		{"204 no content", 204, "", ``, want{inError: "not JSON"}},
		{"400 invalid_grant", 400, "application/json", `{"error":"invalid_grant","error_description":"The provided authorization grant is invalid"}`, want{code: "invalid_grant"}},
		{"400 error with a token echoed", 400, "application/json", `{"error":"invalid_request","error_description":"bad refresh_token ` + marker + `"}`, want{code: "invalid_request"}},
		{"401 invalid_client", 401, "application/json", `{"error":"invalid_client","error_description":"Client authentication failed"}`, want{code: "invalid_client"}},
		{"401 unauthorized_client, Doorkeeper's code kept as sent", 401, "application/json", `{"error":"unauthorized_client","error_description":"You are not authorized to perform this action."}`, want{code: ErrUnauthorizedClient, inError: "unauthorized_client"}},
		{"400 unsupported_grant_type kept as sent", 400, "application/json", `{"error":"unsupported_grant_type"}`, want{code: ErrUnsupportedGrantType}},
		{"503 temporarily_unavailable kept as sent", 503, "application/json", `{"error":"temporarily_unavailable"}`, want{code: "temporarily_unavailable", temporary: true}},
		{"error code with a token in it", 400, "application/json", `{"error":"bad_` + marker + `"}`, want{code: "[redacted]"}},
		{"token in a content type parameter", 502, "text/html; session=" + marker, `<html>Bad Gateway</html>`, want{inError: `(content type "text/html; [redacted]")`, temporary: true}},
		{"content type too long", 502, "text/html; x=" + strings.Repeat("a b ", 2000), `<html>Bad Gateway</html>`, want{inError: "text/html; x=a b", temporary: true}},
		{"401 HTML", 401, "text/html", `<h1>Unauthorized</h1>`, want{inError: "Unauthorized"}},
		{"403 empty", 403, "", ``, want{inError: "HTTP 403"}},
		{"404 JSON without error", 404, "application/json", `{"status":404}`, want{inError: "HTTP 404"}},
		{"error code not a string", 400, "application/json", `{"error":{"code":"x"}}`, want{inError: "HTTP 400"}},
		{"429", 429, "application/json", `{"error":"rate_limited"}`, want{code: "rate_limited", temporary: true}},
		{"500 JSON", 500, "application/json", `{"message":"boom ` + marker + `"}`, want{inError: "HTTP 500", temporary: true}},
		{"502 HTML", 502, "text/html", `<html>Bad Gateway</html>`, want{inError: "Bad Gateway", temporary: true}},
		{"503 plain", 503, "text/plain", `unavailable`, want{inError: "unavailable", temporary: true}},
		{"300 multiple choices is a redirect too", 300, "text/html", `choose`, want{inError: "redirect not followed"}},
		{"400 HTML is not a redirect", 400, "text/html", `<h1>Bad Request</h1>`, want{inError: `HTTP 400 (content type "text/html")`}},
		{"301 redirect", 301, "text/html", `moved`, want{inError: "redirect not followed"}},
		{"307 redirect", 307, "", ``, want{inError: "redirect not followed"}},
		{"oversized 200", 200, "application/json", `{"access_token":"` + strings.Repeat("a", 70<<10) + `","token_type":"Bearer"}`, want{inError: "longer than"}},
		{"oversized 500", 500, "text/html", strings.Repeat("x", 70<<10), want{inError: "longer than", temporary: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &endpoint{status: tc.status, contentType: tc.contentType, body: tc.body}
			if strings.HasPrefix(tc.name, "30") {
				e.header = http.Header{"Location": {"https://elsewhere.test/"}}
			}
			tok, err := client().Token(context.Background(), e.start(t), refresh)
			w := tc.want
			if w.ok {
				if err != nil {
					t.Fatalf("error %v, want a token", err)
				}
				if tok.TokenType != "Bearer" || !tok.ExpiresAt.Equal(w.expiresAt) || tok.RefreshToken != w.refresh || tok.Scope != w.scope {
					t.Errorf("token type %q expires %v refresh %q scope %q; want Bearer %v %q %q", tok.TokenType, tok.ExpiresAt, tok.RefreshToken, tok.Scope, w.expiresAt, w.refresh, w.scope)
				}
				return
			}
			if tok != nil || err == nil {
				t.Fatalf("got a token (%v), want an error", tok != nil)
			}
			var oe *Error
			if !errors.As(err, &oe) {
				t.Fatalf("error %v (%T), want *Error", err, err)
			}
			if oe.Status != tc.status || oe.Code != w.code || oe.Temporary() != w.temporary {
				t.Errorf("status %d code %q temporary %v; want %d %q %v", oe.Status, oe.Code, oe.Temporary(), tc.status, w.code, w.temporary)
			}
			if !strings.Contains(err.Error(), w.inError) {
				t.Errorf("error %q does not mention %q", err, w.inError)
			}
			if strings.Contains(err.Error(), marker) || strings.Contains(err.Error(), "csecret") || strings.Contains(err.Error(), "rt-old") {
				t.Errorf("error text leaks a token or secret: %q", err)
			}
			if len(err.Error()) > 600 {
				t.Errorf("error text is %d bytes long", len(err.Error()))
			}
		})
	}
}

func TestSlowBodyAndTLSFailureAreTransportErrors(t *testing.T) {
	t.Run("body arrives too slowly", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(200)
			io.WriteString(w, `{"access_token":`)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		}))
		defer srv.Close()
		c := &Client{HTTP: &http.Client{Timeout: 200 * time.Millisecond}}
		_, err := c.Token(context.Background(), srv.URL, refresh)
		var te *TransportError
		if !errors.As(err, &te) {
			t.Fatalf("error %v (%T), want *TransportError", err, err)
		}
	})
	t.Run("TLS certificate not trusted", func(t *testing.T) {
		srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		defer srv.Close()
		_, err := client().Token(context.Background(), srv.URL, refresh)
		var te *TransportError
		if !errors.As(err, &te) || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("error %v, want a TransportError about the certificate", err)
		}
	})
}
