package discovery

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// server serves docs by request path on a loopback port (404 for any other path) and records the
// paths asked for. A doc may use {issuer} and {base} for the test's own URLs.
type server struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string
}

func serve(t *testing.T, docs map[string]string) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.seen = append(s.seen, r.URL.Path)
		s.mu.Unlock()
		doc, ok := docs[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(strings.ReplaceAll(doc, "{base}", s.URL)))
	}))
	t.Cleanup(s.Close)
	return s
}

func TestURLs(t *testing.T) {
	for _, tc := range []struct{ issuer, rfc8414, oidc string }{
		{"https://as.example", "https://as.example/.well-known/oauth-authorization-server", "https://as.example/.well-known/openid-configuration"},
		{"https://as.example/", "https://as.example/.well-known/oauth-authorization-server", "https://as.example/.well-known/openid-configuration"},
		// RFC 8414 §3: the well-known part goes between the host and the issuer's path.
		{"https://as.example/tenant/1", "https://as.example/.well-known/oauth-authorization-server/tenant/1", "https://as.example/tenant/1/.well-known/openid-configuration"},
		{"https://as.example:8443/realms/x/", "https://as.example:8443/.well-known/oauth-authorization-server/realms/x", "https://as.example:8443/realms/x/.well-known/openid-configuration"},
	} {
		a, o, err := URLs(tc.issuer)
		if err != nil || a != tc.rfc8414 || o != tc.oidc {
			t.Errorf("URLs(%q) = %q, %q, %v; want %q, %q", tc.issuer, a, o, err, tc.rfc8414, tc.oidc)
		}
	}
}

func TestDiscoverRFC8414(t *testing.T) {
	s := serve(t, map[string]string{
		"/.well-known/oauth-authorization-server": `{"issuer":"{base}","token_endpoint":"{base}/oauth2/token","authorization_endpoint":"{base}/oauth2/authorize"}`,
		"/.well-known/openid-configuration":       `{"issuer":"{base}","token_endpoint":"{base}/wrong"}`,
	})
	md, err := (&Client{}).Discover(context.Background(), s.URL)
	if err != nil {
		t.Fatal(err)
	}
	if md.TokenEndpoint != s.URL+"/oauth2/token" || md.AuthorizationEndpoint != s.URL+"/oauth2/authorize" {
		t.Errorf("got %+v", md)
	}
	if len(s.seen) != 1 {
		t.Errorf("requests %v, want RFC 8414's document only", s.seen)
	}
}

func TestDiscoverFallsBackToOpenIDConfiguration(t *testing.T) {
	s := serve(t, map[string]string{
		"/tenant/.well-known/openid-configuration": `{"issuer":"{base}/tenant","token_endpoint":"{base}/tenant/token"}`,
	})
	md, err := (&Client{}).Discover(context.Background(), s.URL+"/tenant")
	if err != nil {
		t.Fatal(err)
	}
	if md.TokenEndpoint != s.URL+"/tenant/token" {
		t.Errorf("token_endpoint %q", md.TokenEndpoint)
	}
	want := []string{"/.well-known/oauth-authorization-server/tenant", "/tenant/.well-known/openid-configuration"}
	if strings.Join(s.seen, " ") != strings.Join(want, " ") {
		t.Errorf("requests %v, want %v", s.seen, want)
	}
}

func TestDiscoverPathInsertion(t *testing.T) {
	s := serve(t, map[string]string{
		"/.well-known/oauth-authorization-server/tenant": `{"issuer":"{base}/tenant","token_endpoint":"{base}/tenant/token"}`,
		"/tenant/.well-known/oauth-authorization-server": `{"issuer":"{base}/tenant","token_endpoint":"{base}/wrong"}`,
	})
	md, err := (&Client{}).Discover(context.Background(), s.URL+"/tenant")
	if err != nil || md.TokenEndpoint != s.URL+"/tenant/token" {
		t.Fatalf("got %+v, %v; want the document at the inserted path", md, err)
	}
}

func TestDiscoverErrors(t *testing.T) {
	const wk = "/.well-known/oauth-authorization-server"
	for _, tc := range []struct {
		name, doc, issuerPath, want string
	}{
		{"absent", "", "", "no authorization server metadata for issuer {base}: 404 Not Found at both {base}/.well-known/oauth-authorization-server and {base}/.well-known/openid-configuration"},
		{"not JSON", "<html>sign in</html>", "", "metadata at {base}" + wk + ` is not a JSON object (Content-Type "application/json")`},
		{"other issuer", `{"issuer":"https://evil.example","token_endpoint":"{base}/token"}`, "", `metadata at {base}` + wk + ` names issuer "https://evil.example", not the configured "{base}" (RFC 8414 §3.3: they must be equal)`},
		{"issuer with a trailing slash", `{"issuer":"{base}/","token_endpoint":"{base}/token"}`, "", `names issuer "{base}/", not the configured "{base}"`},
		{"no token_endpoint", `{"issuer":"{base}","authorization_endpoint":"{base}/authorize"}`, "", "metadata at {base}" + wk + " has no token_endpoint"},
		{"http token_endpoint", `{"issuer":"{base}","token_endpoint":"http://as.example/token"}`, "", `metadata at {base}` + wk + `: token_endpoint "http://as.example/token": http is allowed only to a loopback address; use https`},
		{"relative token_endpoint", `{"issuer":"{base}","token_endpoint":"/token"}`, "", `token_endpoint "/token" is not an absolute URL`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			docs := map[string]string{}
			if tc.doc != "" {
				docs[wk] = tc.doc
			}
			s := serve(t, docs)
			_, err := (&Client{}).Discover(context.Background(), s.URL)
			want := strings.ReplaceAll(tc.want, "{base}", s.URL)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v, want it to say %q", err, want)
			}
			if err != nil && strings.Contains(err.Error(), "sign in") {
				t.Errorf("the error quotes the document: %v", err)
			}
		})
	}
}

func TestDiscoverServerErrorIsNotAbsent(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer s.Close()
	_, err := (&Client{}).Discover(context.Background(), s.URL)
	if want := "HTTP 503 Service Unavailable"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want %q", err, want)
	}
}

func TestDiscoverDoesNotFollowRedirects(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://as.example/.well-known/oauth-authorization-server", http.StatusFound)
	}))
	defer s.Close()
	_, err := (&Client{}).Discover(context.Background(), s.URL)
	if err == nil || !strings.Contains(err.Error(), "HTTP 302 Found") {
		t.Errorf("error %v, want the redirect refused", err)
	}
}

// TestHTTPSIssuerNamesOnlyHTTPSEndpoints: the loopback exception for http is for an issuer that is
// itself local; a document served over TLS naming an http endpoint, even a loopback one, is refused.
func TestHTTPSIssuerNamesOnlyHTTPSEndpoints(t *testing.T) {
	const wk = "/.well-known/oauth-authorization-server"
	for _, tc := range []struct{ name, doc, want string }{
		{"https endpoints", `{"issuer":"{base}","token_endpoint":"{base}/token","authorization_endpoint":"{base}/authorize"}`, ""},
		{"http token_endpoint", `{"issuer":"{base}","token_endpoint":"http://127.0.0.1:1/token"}`, `token_endpoint "http://127.0.0.1:1/token" is http, but the issuer is https`},
		{"http authorization_endpoint", `{"issuer":"{base}","token_endpoint":"{base}/token","authorization_endpoint":"http://localhost:1/authorize"}`, `authorization_endpoint "http://localhost:1/authorize" is http, but the issuer is https`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s *httptest.Server
			s = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != wk {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(strings.ReplaceAll(tc.doc, "{base}", s.URL)))
			}))
			defer s.Close()
			md, err := (&Client{HTTP: s.Client()}).Discover(context.Background(), s.URL)
			switch {
			case tc.want == "" && (err != nil || md.TokenEndpoint != s.URL+"/token"):
				t.Errorf("got %+v, %v; want the https token endpoint", md, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want it to say %q", err, tc.want)
			}
		})
	}
}
