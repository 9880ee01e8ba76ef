package apptoken

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"token-rotator/internal/testenv"
)

// rotated is a world where the Source cached a token that the token server has since ended (a
// refresh in the revoke-at-once mode), the way an app holds one right after token-rotator's
// refresh. next is the token issued in its place, not yet in Vault.
func rotated(t *testing.T, opts Options) (w *world, s *Source, n *testenv.Requests, old, next string) {
	w = newWorld(t)
	old, rt := w.pair()
	w.store("apps/acme", old, time.Now().Add(2*time.Hour))
	opts.Path = "apps/acme"
	s, n = w.source(opts)
	token(t, s)
	next, _ = w.refresh(rt)
	return w, s, n, old, next
}

// TestRetriesOnceWithTheNewTokenReplayingTheBody: a POST refused with the old token is sent again
// with the token now in Vault, its body replayed through GetBody, after one Vault read; the
// caller's request is left as it was. Bodies: one http.NewRequest gives GetBody for, and one net/http
// cannot rewind by itself, replayable only through a GetBody the app sets.
func TestRetriesOnceWithTheNewTokenReplayingTheBody(t *testing.T) {
	t.Parallel()
	const body = `{"name":"Ada"}`
	for name, newRequest := range map[string]func(url string) *http.Request{
		"bytes.Reader": func(url string) *http.Request {
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte(body)))
			return req
		},
		"own GetBody": func(url string) *http.Request {
			req, _ := http.NewRequest(http.MethodPost, url, struct{ io.Reader }{strings.NewReader(body)})
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
			return req
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w, s, n, _, next := rotated(t, Options{})
			w.store("apps/acme", next, time.Now().Add(2*time.Hour))
			req := newRequest(w.api.URL)
			resp, err := s.Client(nil).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("POST after a rotation: HTTP %d, want 200", resp.StatusCode)
			}
			if resp.Request != req || resp.Request.Header.Get("Authorization") != "" {
				t.Error("resp.Request is not the caller's request: an app logging it would log the token")
			}
			seen := w.api.requests()
			if len(seen) != 2 || seen[0].Status != 401 || seen[1].Status != 200 || seen[0].Body != body || seen[1].Body != body {
				t.Errorf("the API saw %+v, want the body twice: 401, then 200", seen)
			}
			if got := n.KVReads("secret", "apps/acme"); got != 2 {
				t.Errorf("Vault reads: %d, want 2 (the first, one after the 401)", got)
			}
			if req.Header.Get("Authorization") != "" {
				t.Error("the caller's request was changed")
			}
		})
	}
}

// TestUnreplayableBodyReturnsThe401: a body without GetBody cannot be sent again: the 401 comes
// back and nothing more reaches the API; the requests that follow use the new token.
func TestUnreplayableBodyReturnsThe401(t *testing.T) {
	t.Parallel()
	w, s, _, _, next := rotated(t, Options{})
	w.store("apps/acme", next, time.Now().Add(2*time.Hour))
	client := s.Client(nil)
	req, _ := http.NewRequest(http.MethodPost, w.api.URL, io.NopCloser(strings.NewReader("once")))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(string(body), "Unauthorized") {
		t.Errorf("unreplayable POST: HTTP %d %q, want the 401 as it came", resp.StatusCode, body)
	}
	if seen := w.api.requests(); len(seen) != 1 {
		t.Errorf("the API saw %d requests, want 1 (no retry)", len(seen))
	}
	deadline := time.Now().Add(5 * time.Second)
	for token(t, s) != next && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := get(t, client, w.api.URL); got != 200 || len(w.api.requests()) != 2 {
		t.Errorf("the next request: HTTP %d after %d API requests in all, want 200 at once (2)", got, len(w.api.requests()))
	}
}

// TestOneVaultReadForConcurrent401s: many requests refused with the same token at once cost one
// Vault read between them, and each is sent again once.
func TestOneVaultReadForConcurrent401s(t *testing.T) {
	t.Parallel()
	w, s, n, _, next := rotated(t, Options{})
	w.store("apps/acme", next, time.Now().Add(2*time.Hour))
	before := n.KVReads("secret", "apps/acme")
	client := s.Client(nil)
	const N = 50
	start := make(chan struct{})
	statuses := make(chan int, N)
	var wg sync.WaitGroup
	for range N {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			statuses <- get(t, client, w.api.URL)
		}()
	}
	close(start)
	wg.Wait()
	close(statuses)
	for st := range statuses {
		if st != 200 {
			t.Errorf("a request ended with HTTP %d", st)
		}
	}
	reads := n.KVReads("secret", "apps/acme") - before
	refused := 0
	for _, r := range w.api.requests() {
		if r.Status == 401 {
			refused++
		}
	}
	if reads != 1 {
		t.Errorf("%d concurrent requests, %d refused: %d Vault reads, want 1", N, refused, reads)
	}
	if refused == 0 || len(w.api.requests()) != N+refused {
		t.Errorf("the API saw %d requests, %d refused; want each refused one sent again once", len(w.api.requests()), refused)
	}
	t.Logf("%d concurrent requests with a token ended by a rotation: %d refused, %d Vault read(s), all 200", N, refused, reads)
}

// TestWaitsForTheNewToken: a token refused while Vault still holds it (the job's write of the
// next one is a moment late) is followed by reads of Vault until the next token is there; then the
// request is sent again and succeeds. Every request waiting shares the reads.
func TestWaitsForTheNewToken(t *testing.T) {
	t.Parallel()
	w, s, n, _, next := rotated(t, Options{})
	before := n.KVReads("secret", "apps/acme")
	time.AfterFunc(300*time.Millisecond, func() { w.store("apps/acme", next, time.Now().Add(2*time.Hour)) })
	client := s.Client(nil)
	began := time.Now()
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := get(t, client, w.api.URL); got != 200 {
				t.Errorf("HTTP %d, want 200 once the new token is in Vault", got)
			}
		}()
	}
	wg.Wait()
	took := time.Since(began)
	reads := n.KVReads("secret", "apps/acme") - before
	if took < 300*time.Millisecond {
		t.Errorf("succeeded after %v, before the new token was written", took)
	}
	// Reads at 0, 50, 150, 350 ms: 4, or 5 if the write is late; one at a time, for all ten.
	if reads < 3 || reads > 6 {
		t.Errorf("10 requests waiting 300 ms: %d Vault reads, want 3 to 6", reads)
	}
	t.Logf("new token written 300 ms after the refusal: 10 waiting requests succeeded after %v, %d Vault reads", took.Round(time.Millisecond), reads)
}

// TestGivesUpAfterWaitForNewAndRemembers: when Vault holds the refused token past WaitForNew the
// 401 is returned, WaitForNew after it came (within a second more); a later refusal of the same token does not wait again and reads Vault at most
// once per MinReadInterval; once the job writes a new token, the next request uses it.
func TestGivesUpAfterWaitForNewAndRemembers(t *testing.T) {
	t.Parallel()
	w, s, n, _, next := rotated(t, Options{WaitForNew: 400 * time.Millisecond, MinReadInterval: 500 * time.Millisecond})
	client := s.Client(nil)
	began := time.Now()
	if got := get(t, client, w.api.URL); got != 401 {
		t.Fatalf("Vault never got a new token: HTTP %d, want 401", got)
	}
	waited := time.Since(began)
	if waited < 400*time.Millisecond || waited > 1400*time.Millisecond {
		t.Errorf("gave up after %v, want after WaitForNew (400 ms) and within 1 s more", waited)
	}
	afterWait := n.KVReads("secret", "apps/acme")
	began = time.Now()
	for range 5 {
		if got := get(t, client, w.api.URL); got != 401 {
			t.Fatalf("HTTP %d, want 401", got)
		}
	}
	if again := n.KVReads("secret", "apps/acme") - afterWait; again > 1 {
		t.Errorf("5 more refusals of the remembered token: %d Vault reads, want at most 1", again)
	}
	t.Logf("refused token kept in Vault: the first request gave up after %v; 5 more took %v in all", waited.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	w.store("apps/acme", next, time.Now().Add(2*time.Hour))
	time.Sleep(500 * time.Millisecond)
	sent := len(w.api.requests())
	if got := get(t, client, w.api.URL); got != 200 || len(w.api.requests()) > sent+2 {
		t.Errorf("after the job wrote a new token: HTTP %d in %d API requests, want 200 in 1, or 2 (the remembered token refused once more)", got, len(w.api.requests())-sent)
	}
}

// TestRequestContextBoundsTheWait: a request whose context ends while waiting for a new token
// gets the 401 then.
func TestRequestContextBoundsTheWait(t *testing.T) {
	t.Parallel()
	w, s, _, _, _ := rotated(t, Options{})
	client := s.Client(&http.Client{Timeout: 500 * time.Millisecond})
	began := time.Now()
	resp, err := client.Get(w.api.URL)
	took := time.Since(began)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("HTTP %d, want the 401 or the client's timeout", resp.StatusCode)
		}
	}
	if took > 3*time.Second {
		t.Errorf("a request with a 500 ms timeout took %v (WaitForNew is 10 s)", took)
	}
	t.Logf("client timeout 500 ms: returned after %v (%v)", took.Round(time.Millisecond), err)
}

// TestOAuth2ClientLosesThe401Rule: oauth2.NewClient over the Source (or over
// oauth2.ReuseTokenSource) sends the cached token and returns the 401 of a rotation; the
// Source's own Client, on the same Source, sends the request again and succeeds.
func TestOAuth2ClientLosesThe401Rule(t *testing.T) {
	t.Parallel()
	w, s, _, _, next := rotated(t, Options{})
	w.store("apps/acme", next, time.Now().Add(2*time.Hour))
	ctx := context.Background()
	for name, c := range map[string]*http.Client{
		"oauth2.NewClient":                   oauth2.NewClient(ctx, s),
		"oauth2.NewClient(ReuseTokenSource)": oauth2.NewClient(ctx, oauth2.ReuseTokenSource(nil, s)),
	} {
		if got := get(t, c, w.api.URL); got != http.StatusUnauthorized {
			t.Errorf("%s after a rotation: HTTP %d, want the 401", name, got)
		}
	}
	if got := get(t, s.Client(nil), w.api.URL); got != http.StatusOK {
		t.Errorf("Source.Client after a rotation: HTTP %d, want 200", got)
	}
}

// TestRedirectToAnotherHostGetsNoToken: http.Client follows a 302 from the API to another host
// (localhost, where the API is 127.0.0.1) without the token, as net/http does for an
// Authorization header the caller sets; a redirect to the API's own host still carries it.
func TestRedirectToAnotherHostGetsNoToken(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	at, _ := w.pair()
	w.store("apps/acme", at, time.Now().Add(2*time.Hour))
	s, _ := w.source(Options{Path: "apps/acme"})

	var mu sync.Mutex
	got := map[string]string{} // path -> what the server saw in Authorization: token, other, none
	saw := func(r *http.Request) {
		h := r.Header.Get("Authorization")
		what := map[bool]string{true: "token", false: "other"}[h == "Bearer "+at]
		if h == "" {
			what = "none"
		}
		mu.Lock()
		got[r.Host+r.URL.Path] = what
		mu.Unlock()
	}
	other := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		saw(r)
		rw.WriteHeader(http.StatusUnauthorized) // and no retry with a token
	}))
	defer other.Close()
	otherURL := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	api := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		saw(r)
		switch r.URL.Path {
		case "/away":
			http.Redirect(rw, r, otherURL+"/landing", http.StatusFound)
		case "/home":
			http.Redirect(rw, r, "/landing", http.StatusFound)
		}
	}))
	defer api.Close()
	apiHost := strings.TrimPrefix(api.URL, "http://")
	otherHost := strings.TrimPrefix(otherURL, "http://")

	client := s.Client(nil)
	if st := get(t, client, api.URL+"/away"); st != http.StatusUnauthorized {
		t.Errorf("redirect to another host: HTTP %d, want that host's 401 as it came", st)
	}
	get(t, client, api.URL+"/home")
	mu.Lock()
	defer mu.Unlock()
	want := map[string]string{
		apiHost + "/away": "token", otherHost + "/landing": "none",
		apiHost + "/home": "token", apiHost + "/landing": "token",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s saw Authorization: %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("requests seen at %v, want only %v", keys(got), keys(want))
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestRedirectRuleIsNetHTTPs: the hosts a redirect may carry the token to, by net/http's rule for
// the caller's own headers: the first request's host (any port) or a subdomain of it; and none
// when the chain of redirects cannot be followed back.
func TestRedirectRuleIsNetHTTPs(t *testing.T) {
	t.Parallel()
	// chain is the request for the last URL, redirected from each URL before it in turn.
	chain := func(urls ...string) *http.Request {
		var prev *http.Request
		for _, u := range urls {
			r, _ := http.NewRequest(http.MethodGet, u, nil)
			if prev != nil {
				r.Response = &http.Response{Request: prev}
			}
			prev = r
		}
		return prev
	}
	for _, tc := range []struct {
		hops []string
		want bool
	}{
		{[]string{"https://api.stora.co/a", "https://api.stora.co/b"}, true},
		{[]string{"https://api.stora.co/a", "https://API.stora.co:8443/b"}, true},
		{[]string{"https://api.stora.co/a", "https://eu.api.stora.co/b"}, true},
		{[]string{"https://api.stora.co/a", "https://stora.co/b"}, false},
		{[]string{"https://api.stora.co/a", "https://evilapi.stora.co/b"}, false},
		{[]string{"https://api.stora.co/a", "https://api.stora.co.evil.example/b"}, false},
		{[]string{"http://127.0.0.1:1/a", "http://localhost:1/b"}, false},
		{[]string{"http://[::1]:1/a", "http://[::1]:2/b"}, true},
		// Once a chain leaves the domain, no later hop gets the token, even back on the API's host.
		{[]string{"https://api.stora.co/a", "https://other.example/b", "https://api.stora.co/c"}, false},
		{[]string{"https://api.stora.co/a", "https://other.example/b", "https://other.example/c"}, false},
		{[]string{"https://api.stora.co/a", "https://eu.api.stora.co/b", "https://api.stora.co/c"}, true},
	} {
		if got := tokenMayGo(chain(tc.hops...)); got != tc.want {
			t.Errorf("redirects %v: token sent %v, want %v", tc.hops, got, tc.want)
		}
	}
	lost, _ := http.NewRequest(http.MethodGet, "https://api.stora.co/b", nil)
	lost.Response = &http.Response{}
	if tokenMayGo(lost) {
		t.Error("a redirect whose first request is unknown: token sent")
	}
}

// TestA401ThatIsNotARotationKeepsTheCache: an API that refuses a token Vault keeps holding, for a
// reason other than a rotation, costs the first 401 for that token a wait of WaitForNew, and
// nothing more: Token answers from the cache again, and later 401s for that token come back at
// once.
func TestA401ThatIsNotARotationKeepsTheCache(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	at, _ := w.pair()
	w.store("apps/acme", at, time.Now().Add(2*time.Hour))
	s, n := w.source(Options{Path: "apps/acme", WaitForNew: 300 * time.Millisecond, MinReadInterval: 10 * time.Millisecond})
	deny := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.WriteHeader(http.StatusUnauthorized) // whatever the token
	}))
	defer deny.Close()
	client := s.Client(nil)
	began := time.Now()
	if st := get(t, client, deny.URL); st != 401 {
		t.Fatalf("HTTP %d, want 401", st)
	}
	waited := time.Since(began)
	if waited < 300*time.Millisecond {
		t.Errorf("the first 401 came back after %v, before WaitForNew (300 ms)", waited)
	}
	afterWait := n.KVReads("secret", "apps/acme")
	for range 50 {
		if token(t, s) != at {
			t.Fatal("want the token Vault holds")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cached := n.KVReads("secret", "apps/acme") - afterWait
	if cached != 0 {
		t.Errorf("50 Token calls over 500 ms after the refusal: %d Vault reads, want 0 (the cache, MaxAge 1 minute)", cached)
	}
	began = time.Now()
	for range 5 {
		if st := get(t, client, deny.URL); st != 401 {
			t.Fatalf("HTTP %d, want 401", st)
		}
	}
	if took := time.Since(began); took > 300*time.Millisecond {
		t.Errorf("5 more 401s for the same token took %v, want no wait", took)
	}
	t.Logf("a 401 that no new token followed: the first took %v; then 50 Token calls, %d Vault reads; 5 more 401s took %v",
		waited.Round(time.Millisecond), cached, time.Since(began).Round(time.Millisecond))
}

// TestRequestsDuringAWaitAreNotSentWithTheRefusedToken: requests that start while the Transport
// waits for a token other than the one just refused wait for it too, and are sent once with the
// new token: of 20 requests started during a 1-second wait, the API sees none with the refused
// token. One whose context ends first is not sent, and its error names the path.
func TestRequestsDuringAWaitAreNotSentWithTheRefusedToken(t *testing.T) {
	t.Parallel()
	w, s, _, _, next := rotated(t, Options{})
	time.AfterFunc(time.Second, func() { w.store("apps/acme", next, time.Now().Add(2*time.Hour)) })
	client := s.Client(nil)
	var wg sync.WaitGroup
	send := func() {
		defer wg.Done()
		if st := get(t, client, w.api.URL); st != 200 {
			t.Errorf("HTTP %d, want 200 once the new token is in Vault", st)
		}
	}
	wg.Add(1)
	go send()
	for len(w.api.requests()) == 0 { // the first request's 401 starts the wait
		time.Sleep(time.Millisecond)
	}
	// The API records the request before its 401 reaches the Transport: a request started in
	// between is sent with the old token (and sent again), which is not what this test is about.
	// Let the answer arrive and the wait begin first (CI, with the cores busy, once sent one early).
	time.Sleep(100 * time.Millisecond)
	for range 20 {
		wg.Add(1)
		go send()
		time.Sleep(25 * time.Millisecond) // 20 over 500 ms, inside the wait
	}
	short := s.Client(&http.Client{Timeout: 100 * time.Millisecond})
	if _, err := short.Get(w.api.URL); err == nil || !strings.Contains(err.Error(), "secret/apps/acme") {
		t.Errorf("a request with a 100 ms timeout during the wait: %v, want its timeout naming secret/apps/acme", err)
	}
	wg.Wait()
	seen := w.api.requests()
	refused := 0
	for _, r := range seen {
		if r.Status == 401 {
			refused++
		}
	}
	if refused != 1 || len(seen) != 22 {
		t.Errorf("21 requests, 20 started during the wait: the API saw %d, %d of them refused; want 22 (the first twice), 1 refused", len(seen), refused)
	}
}

// TestRetriesExactlyOnce: when the token Vault holds after a 401 is refused too, that second
// answer is what the caller gets, at once: the API saw the request twice, not more.
func TestRetriesExactlyOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	old, rt := w.pair()
	w.store("apps/acme", old, time.Now().Add(2*time.Hour))
	s, _ := w.source(Options{Path: "apps/acme"})
	token(t, s)
	mid, rt2 := w.refresh(rt) // ends old
	w.refresh(rt2)            // ends mid
	w.store("apps/acme", mid, time.Now().Add(2*time.Hour))
	began := time.Now()
	if st := get(t, s.Client(nil), w.api.URL); st != http.StatusUnauthorized {
		t.Errorf("both tokens refused: HTTP %d, want the second 401", st)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("both tokens refused: the 401 came after %v, want at once (no second wait; WaitForNew is 10 s)", took)
	}
	if seen := w.api.requests(); len(seen) != 2 || seen[0].Status != 401 || seen[1].Status != 401 {
		t.Errorf("the API saw %+v, want 2 requests, both refused", seen)
	}
}

// TestStaggered401sShareOneWait: requests sent together with a token a rotation ended, whose
// 401s come back spread over 700 ms while the job's write is a second late, share one search:
// Vault is read on the schedule of one wait (0, 50, 150, 350, 750 ms, then 1.55 s, when the new
// token is there), not once more for each 401.
func TestStaggered401sShareOneWait(t *testing.T) {
	t.Parallel()
	w, s, n, _, next := rotated(t, Options{})
	before := n.KVReads("secret", "apps/acme")
	time.AfterFunc(time.Second, func() { w.store("apps/acme", next, time.Now().Add(2*time.Hour)) })
	client := s.Client(nil)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st := get(t, client, fmt.Sprintf("%s?delay=%dms", w.api.URL, 80*i)); st != 200 {
				t.Errorf("HTTP %d, want 200 once the new token is in Vault", st)
			}
		}()
	}
	wg.Wait()
	reads := n.KVReads("secret", "apps/acme") - before
	refused := 0
	for _, r := range w.api.requests() {
		if r.Status == 401 {
			refused++
		}
	}
	if refused != 10 || reads < 5 || reads > 7 {
		t.Errorf("10 401s spread over 720 ms: %d refused, %d Vault reads; want 10, and 5 to 7 reads (one wait's)", refused, reads)
	}
	t.Logf("10 401s spread over 720 ms, new token a second late: %d Vault reads", reads)
}

// TestPollSchedule: while Vault keeps holding the refused token, it is read after 50 ms, then
// after twice as long each time up to every second: a 3-second wait reads Vault 8 times (0, 50,
// 150, 350, 750 ms, 1.55, 2.55, 3 s); 6 to 10 allows for timing.
func TestPollSchedule(t *testing.T) {
	t.Parallel()
	w, s, n, _, _ := rotated(t, Options{WaitForNew: 3 * time.Second})
	before := n.KVReads("secret", "apps/acme")
	if st := get(t, s.Client(nil), w.api.URL); st != 401 {
		t.Fatalf("HTTP %d, want 401", st)
	}
	reads := n.KVReads("secret", "apps/acme") - before
	if reads < 6 || reads > 10 {
		t.Errorf("a 3-second wait with no new token: %d Vault reads, want 6 to 10", reads)
	}
	t.Logf("a 3-second wait with no new token: %d Vault reads", reads)
}

// TestUnreplayableBodiesDuringARotation: 4 callers sending POSTs whose bodies cannot be replayed
// (an io.MultiReader, no GetBody), without pause, while the job's write of the next token is
// 300 ms late: the requests in flight with the old token get its 401; those that start after the
// first 401 wait for the new token and are not refused. So at most 4 callers see a 401.
func TestUnreplayableBodiesDuringARotation(t *testing.T) {
	t.Parallel()
	w, s, _, _, next := rotated(t, Options{})
	time.AfterFunc(300*time.Millisecond, func() { w.store("apps/acme", next, time.Now().Add(2*time.Hour)) })
	client := s.Client(nil)
	var refused, ok atomic.Int64
	end := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				body := io.MultiReader(strings.NewReader(`{"name":`), strings.NewReader(`"Ada"}`))
				req, _ := http.NewRequest(http.MethodPost, w.api.URL, body)
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					ok.Add(1)
				case 401:
					refused.Add(1)
				default:
					t.Errorf("HTTP %d", resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	if refused.Load() > 4 || ok.Load() == 0 {
		t.Errorf("4 callers without pause across a rotation: %d refused, %d succeeded; want at most 4 refused", refused.Load(), ok.Load())
	}
	t.Logf("4 callers with unreplayable bodies across a rotation (write 300 ms late): %d refused, %d succeeded", refused.Load(), ok.Load())
}
