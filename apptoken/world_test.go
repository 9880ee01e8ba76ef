package apptoken

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/internal/testenv"
	"token-rotator/oauth"
)

// The tests run against a real Vault dev server and, for the API, a real token checker: the
// bundled Stora-compatible server's /oauth2/token/info (401 for a revoked or unknown token), or
// the real Doorkeeper's.

// world is a real Vault, the bundled token server with one client, and an API in front of the
// token server's info endpoint that records what it sees.
type world struct {
	t     *testing.T
	vault *testenv.Vault
	stora *testenv.Stora
	id    string
	sec   string
	api   *recordingAPI
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, vault: testenv.StartVault(t), stora: testenv.StartStora(t)}
	w.stora.RevokeImmediately = true // a refresh ends the old access token at once
	w.id, w.sec = w.stora.AddClient()
	w.api = startAPI(t, w.stora.BaseURL+"/oauth2/token/info")
	return w
}

// pair issues an access token with a refresh token, as an operator's authorization would.
func (w *world) pair() (access, refresh string) {
	return w.stora.IssueTokenPair(w.id, "public.contact:read")
}

// refresh does what token-rotator's refresh does at the token server, without writing to Vault:
// the access token issued with rt stops working, and a new one is returned.
func (w *world) refresh(rt string) (access, refresh string) {
	w.t.Helper()
	tok, err := (&oauth.Client{}).Token(context.Background(), w.stora.TokenURL, oauth.Request{
		GrantType: oauth.GrantRefreshToken, ClientID: w.id, ClientSecret: w.sec, RefreshToken: rt})
	if err != nil {
		w.t.Fatalf("refresh: %v", err)
	}
	return tok.AccessToken, tok.RefreshToken
}

// store writes an output secret as token-rotator does, at secret/<path> (KV v2).
func (w *world) store(path, access string, expiresAt time.Time) {
	w.t.Helper()
	putKV(w.t, w.vault.Client, "secret", 2, path, output(access, expiresAt))
}

func output(access string, expiresAt time.Time) map[string]any {
	return map[string]any{"access_token": access, "token_type": "Bearer",
		"expires_at": expiresAt.UTC().Format(time.RFC3339), "scope": "public.contact:read"}
}

func putKV(t *testing.T, c *api.Client, mount string, version int, path string, data map[string]any) {
	t.Helper()
	var err error
	if version == 1 {
		err = c.KVv1(mount).Put(context.Background(), path, data)
	} else {
		_, err = c.KVv2(mount).Put(context.Background(), path, data)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// client is a Vault client logged in with token whose requests are counted.
func (w *world) client(token string) (*api.Client, *testenv.Requests) {
	w.t.Helper()
	c, n := w.vault.CountingClient(w.t, token)
	c.SetMaxRetries(0)
	return c, n
}

// source is New on the world's Vault with the root token, counting Vault's requests.
func (w *world) source(opts Options) (*Source, *testenv.Requests) {
	w.t.Helper()
	c, n := w.client(w.vault.Token)
	s, err := New(c, opts)
	if err != nil {
		w.t.Fatal(err)
	}
	return s, n
}

// recordingAPI stands for the Stora API: it checks the bearer token at the token server's info
// endpoint and answers with its status, recording each request's method, body and status. With
// ?delay=<duration> it waits that long first.
type recordingAPI struct {
	URL  string
	mu   sync.Mutex
	seen []apiRequest
}

type apiRequest struct {
	Method, Body string
	Status       int
}

func startAPI(t *testing.T, infoURL string) *recordingAPI {
	a := &recordingAPI{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil {
			time.Sleep(d) // ?delay=80ms: a slow answer
		}
		check, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, infoURL, nil)
		check.Header.Set("Authorization", r.Header.Get("Authorization"))
		status := http.StatusBadGateway
		if resp, err := http.DefaultClient.Do(check); err == nil {
			status = resp.StatusCode
			resp.Body.Close()
		}
		a.mu.Lock()
		a.seen = append(a.seen, apiRequest{r.Method, string(body), status})
		a.mu.Unlock()
		w.WriteHeader(status)
		io.WriteString(w, http.StatusText(status)+strings.Repeat(".", 100))
	}))
	t.Cleanup(s.Close)
	a.URL = s.URL
	return a
}

func (a *recordingAPI) requests() []apiRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]apiRequest(nil), a.seen...)
}

// get sends GET to the API through client and returns the status.
func get(t *testing.T, client *http.Client, url string) int {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// token is what s gives now, failing the test on an error.
func token(t *testing.T, s *Source) string {
	t.Helper()
	tok, err := s.Token()
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	return tok.AccessToken
}

// readsDone waits (up to 5 s) until n has counted want reads of path (KV v2) and the read s has
// in flight, if any, has ended, and returns the count then: for reads started in the background.
func readsDone(s *Source, n *testenv.Requests, path string, want int) int {
	deadline := time.Now().Add(5 * time.Second)
	for n.KVReads("secret", path) < want && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	for s.busy.Load() && time.Now().Before(deadline) { // set before the request, cleared once the cache holds its answer
		time.Sleep(2 * time.Millisecond)
	}
	return n.KVReads("secret", path)
}

// eventually gives s's token until it is want or 5 s pass, and reports whether it came.
func eventually(t *testing.T, s *Source, want string) bool {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for token(t, s) != want {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}
