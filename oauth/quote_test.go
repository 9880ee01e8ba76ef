package oauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A 2xx body that is malformed JSON (a trailing comma, a cut-off brace, NaN) is still a token
// response: not a byte of it is quoted, whatever alphabet its access token uses.
func TestMalformedJSONSuccessBodyIsNotQuoted(t *testing.T) {
	const at = "Zm9vYmFy!c2VjcmV0!dG9rZW4x!QUJDRA"
	for _, tc := range []struct{ name, body string }{
		{"trailing comma", `{"access_token":"` + at + `","token_type":"Bearer","expires_in":7200,}`},
		{"NaN", `{"access_token":"` + at + `","token_type":"Bearer","expires_in":NaN}`},
		{"two objects", `{"access_token":"` + at + `","token_type":"Bearer"}{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			_, err := (&Client{}).Token(context.Background(), srv.URL, Request{GrantType: GrantClientCredentials, ClientID: "client-id", ClientSecret: "client-secret"})
			if err == nil {
				t.Fatal("accepted")
			}
			for _, piece := range strings.Split(at, "!") {
				if strings.Contains(err.Error(), piece) {
					t.Errorf("error text quotes the access token (%q): %v", piece, err)
					break
				}
			}
		})
	}
}

// A sent value echoed HTML-escaped as other servers escape it (&quot; from Rails ERB, Python's
// html.escape and PHP's htmlspecialchars; &#x27; from Python) is removed too.
func TestHTMLEscapedEchoWithNamedEntities(t *testing.T) {
	const secret = `Pa55"w'rd-x-long-enough`
	for _, echoed := range []string{`Pa55&quot;w&#39;rd-x-long-enough`, `Pa55&quot;w&#x27;rd-x-long-enough`} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`<p>bad secret ` + echoed + `</p>`))
		}))
		_, err := (&Client{}).Token(context.Background(), srv.URL, Request{GrantType: GrantClientCredentials, ClientID: "client-id", ClientSecret: secret})
		srv.Close()
		if err == nil || strings.Contains(err.Error(), "Pa55") {
			t.Errorf("echo %s: error text %v holds the HTML-escaped client secret", echoed, err)
		}
	}
}
