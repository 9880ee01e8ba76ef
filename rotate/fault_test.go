package rotate

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
	"token-rotator/internal/faultproxy"
	"token-rotator/internal/storafake"
	"token-rotator/oauth"
	"token-rotator/vault"
)

// faultWorld is a real Vault and the fake token endpoint, each behind a fault-injecting proxy.
type faultWorld struct {
	*world
	stora      *storafake.Server
	storaProxy *faultproxy.Proxy
	vaultProxy *faultproxy.Proxy
	store      *vault.Store // through vaultProxy
	tokenURL   string       // through storaProxy
}

func newFaultWorld(t *testing.T, immediate bool) *faultWorld {
	w := newWorld(t)
	s := storafake.New()
	s.RevokeImmediately = immediate
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	f := &faultWorld{world: w, stora: s}
	f.storaProxy = faultproxy.Start(t, strings.TrimPrefix(ts.URL, "http://"))
	u, _ := url.Parse(w.vault.Addr)
	f.vaultProxy = faultproxy.Start(t, u.Host)
	f.tokenURL = "http://" + f.storaProxy.Addr + "/oauth2/token"
	f.store = openStore(t, "http://"+f.vaultProxy.Addr, w.vault.Token)
	return f
}

// rotator returns a Rotator with short timeouts and retries, as a test can afford.
func (f *faultWorld) rotator(clients ...config.Client) *Rotator {
	for i := range clients {
		clients[i].TokenURL = f.tokenURL
	}
	return &Rotator{
		Store:         f.store,
		Tokens:        &oauth.Client{HTTP: &http.Client{Timeout: 500 * time.Millisecond}},
		Clients:       clients,
		RenewBefore:   30 * time.Minute,
		GrantRetry:    8 * time.Second,
		GrantBackoff:  50 * time.Millisecond,
		WriteDeadline: 20 * time.Second,
		WriteBackoff:  50 * time.Millisecond,
	}
}

// partnerSecret seeds a credential secret with a live refresh token and returns the client.
func (f *faultWorld) partnerSecret(t *testing.T, name string) (config.Client, string) {
	id, secret := f.stora.AddClient()
	rt := f.stora.IssueRefreshToken(id, "public.contact:read")
	f.put("stora/"+name, map[string]any{"client_id": id, "client_secret": secret, "refresh_token": rt})
	return config.Client{Name: name, Grant: config.GrantAuthorizationCode, Secret: "stora/" + name, Output: "apps/" + name}, rt
}

// assertStoredPairWorks checks the pair in Vault is live at the server, and differs from old.
func (f *faultWorld) assertStoredPairWorks(t *testing.T, c config.Client, old string) {
	t.Helper()
	rt, _ := f.data(c.Secret)["refresh_token"].(string)
	if rt == old || !f.stora.RefreshTokenValid(rt) {
		t.Errorf("refresh token in Vault: new %v, valid at the server %v", rt != old, f.stora.RefreshTokenValid(rt))
	}
	if _, ok := f.data(c.Secret)[keyClaim]; ok {
		t.Errorf("the claim was left on the secret")
	}
	at, _ := f.data(c.Output)["access_token"].(string)
	if at == "" {
		t.Errorf("no access token in %s", c.Output)
	}
}

func TestTokenEndpointTransientFaultsAreRetried(t *testing.T) {
	t.Parallel()
	f := newFaultWorld(t, true)
	// Without a Retry-After the wait is the job's own backoff: two of them, from GrantBackoff with
	// the backoff library's defaults (±50% jitter, ×1.5 each time), are at least
	// 50%·GrantBackoff + 50%·1.5·GrantBackoff. Retries sent back to back take a few milliseconds.
	backoff := f.rotator().GrantBackoff
	ownBackoff := backoff/2 + backoff*3/4
	for _, tc := range []struct {
		name    string
		respond func(w http.ResponseWriter)
		minWait time.Duration
		cc      bool // a client_credentials client: a 5xx cannot have spent anything
	}{
		{"500", func(w http.ResponseWriter) { w.WriteHeader(500) }, ownBackoff, true},
		{"503 HTML", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(503)
			fmt.Fprint(w, "<html>maintenance</html>")
		}, ownBackoff, true},
		{"429 Retry-After: 1", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
		}, time.Second, false},
		{"429 Retry-After: an HTTP date 2 s ahead", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", time.Now().Add(2*time.Second).UTC().Format(http.TimeFormat))
			w.WriteHeader(429)
		}, time.Second, false}, // an HTTP date has one-second resolution: 1 to 2 s
		{"429 RateLimit-Reset: epoch seconds 2 s ahead", func(w http.ResponseWriter) {
			w.Header().Set("RateLimit-Limit", "10")
			w.Header().Set("RateLimit-Reset", fmt.Sprint(time.Now().Add(2*time.Second).Unix()))
			w.WriteHeader(429)
			fmt.Fprint(w, `{"error":"rate_limited"}`)
		}, time.Second, false}, // epoch seconds: 1 to 2 s
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, old := f.partnerSecret(t, fmt.Sprintf("transient-%d", len(f.stora.Requests())))
			if tc.cc {
				id, secret := f.stora.AddClient()
				f.put(c.Secret, map[string]any{"client_id": id, "client_secret": secret})
				c.Grant, c.Scope, old = config.GrantClientCredentials, "public.contact:read", ""
			}
			var faults atomic.Int32
			var firstFault, retried time.Time
			f.stora.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
				if faults.Add(1) <= 2 {
					if firstFault.IsZero() {
						firstFault = time.Now()
					}
					tc.respond(w)
					return true
				}
				retried = time.Now()
				return false
			}
			defer func() { f.stora.Intercept = nil }()
			before := len(f.stora.Requests())
			res := f.rotator(c).Pass(context.Background())[0]
			if res.Outcome != Rotated {
				t.Fatalf("outcome %s: %v", res.Outcome, res.Err)
			}
			if n := len(f.stora.Requests()) - before; n != 3 {
				t.Errorf("server saw %d requests, want 3 (two faults, then success)", n)
			}
			if wait := retried.Sub(firstFault); wait < tc.minWait {
				t.Errorf("retried %v after the first fault, want at least %v", wait, tc.minWait)
			}
			if tc.cc {
				if at, _ := f.data(c.Output)["access_token"].(string); at == "" {
					t.Errorf("no access token stored")
				}
			} else {
				f.assertStoredPairWorks(t, c, old)
			}
			t.Logf("RELIABILITY fault | token endpoint answers %s, twice | rotated on the 3rd request, %v after the first fault (at least %v) | token in Vault works",
				tc.name, retried.Sub(firstFault).Round(10*time.Millisecond), tc.minWait)
		})
	}
}

func TestRefresh5xxIsRetriedOnce(t *testing.T) {
	t.Parallel()
	f := newFaultWorld(t, true)
	for _, faults := range []int{1, 2} {
		c, old := f.partnerSecret(t, fmt.Sprintf("r5xx-%d", faults))
		var n atomic.Int32
		f.stora.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
			if n.Add(1) <= int32(faults) {
				w.WriteHeader(502)
				return true
			}
			return false
		}
		before := len(f.stora.Requests())
		res := f.rotator(c).Pass(context.Background())[0]
		f.stora.Intercept = nil
		switch faults {
		case 1:
			if res.Outcome != Rotated || len(f.stora.Requests())-before != 2 {
				t.Errorf("one 502: %s after %d requests, want rotated after 2", res.Outcome, len(f.stora.Requests())-before)
			}
			f.assertStoredPairWorks(t, c, old)
		case 2:
			if res.Outcome != Failed || res.Status != StatusRetrying || len(f.stora.Requests())-before != 2 || !f.stora.RefreshTokenValid(old) {
				t.Errorf("two 502s: %s/%s after %d requests, want failed/retrying after 2 with the stored token still live", res.Outcome, res.Status, len(f.stora.Requests())-before)
			}
		}
	}
	t.Logf("RELIABILITY fault | a 502 on a refresh (a gateway may answer after the server acted) | retried once only: rotated after one 502; after two, retrying next pass with the stored token untouched | no refresh token spent twice")
}

func TestTokenEndpointStallAndCutConnection(t *testing.T) {
	t.Parallel()
	t.Run("client credentials: stalls past the timeout, retried until it answers", func(t *testing.T) {
		f := newFaultWorld(t, true)
		id, secret := f.stora.AddClient()
		f.put("stora/cc", map[string]any{"client_id": id, "client_secret": secret})
		c := config.Client{Name: "cc", Grant: config.GrantClientCredentials, Scope: "public.contact:read", Secret: "stora/cc", Output: "apps/cc"}
		f.storaProxy.SetNext(faultproxy.Stall, 3)
		res := f.rotator(c).Pass(context.Background())[0]
		if res.Outcome != Rotated || len(f.stora.Requests()) != 1 || f.storaProxy.Connections() < 4 {
			t.Fatalf("outcome %s (%v), %d requests reached the server over %d connections; want rotated, 1 over 4",
				res.Outcome, res.Err, len(f.stora.Requests()), f.storaProxy.Connections())
		}
		t.Logf("RELIABILITY fault | token endpoint stalls past the 500 ms timeout, 3 times (client credentials) | rotated on the 4th attempt | token in Vault")
	})
	t.Run("refresh: one stall past the timeout, one retry", func(t *testing.T) {
		f := newFaultWorld(t, true)
		c, old := f.partnerSecret(t, "stall")
		f.storaProxy.SetNext(faultproxy.Stall, 1)
		res := f.rotator(c).Pass(context.Background())[0]
		if res.Outcome != Rotated {
			t.Fatalf("outcome %s: %v", res.Outcome, res.Err)
		}
		f.assertStoredPairWorks(t, c, old)
		t.Logf("RELIABILITY fault | token endpoint stalls past the timeout on a refresh, once | rotated on the one retry allowed | pair in Vault works")
	})
	t.Run("refresh: two stalls, no third request", func(t *testing.T) {
		f := newFaultWorld(t, true)
		c, old := f.partnerSecret(t, "stall2")
		f.storaProxy.SetNext(faultproxy.Stall, 2)
		res := f.rotator(c).Pass(context.Background())[0]
		if res.Outcome != Failed || res.Status != StatusRetrying || f.storaProxy.Connections() != 2 {
			t.Fatalf("outcome %s status %s over %d connections (%v); want failed, retrying, 2", res.Outcome, res.Status, f.storaProxy.Connections(), res.Err)
		}
		if rt := f.data(c.Secret)["refresh_token"]; rt != old || !f.stora.RefreshTokenValid(old) {
			t.Errorf("after two stalls: refresh token in Vault changed (%v) or no longer works at the server (%v)", rt != old, !f.stora.RefreshTokenValid(old))
		}
		t.Logf("RELIABILITY fault | token endpoint stalls past the timeout on a refresh, twice | no third request; status retrying, refresh token untouched (the server never saw it) | stored pair still works")
	})
	t.Run("refresh response cut short, revoke immediately: rotation_lost", func(t *testing.T) {
		f := newFaultWorld(t, true)
		c, old := f.partnerSecret(t, "cut")
		f.storaProxy.SetNext(faultproxy.CutResponse, 1)
		res := f.rotator(c).Pass(context.Background())[0]
		if res.Outcome != Failed || res.Status != StatusRotationLost {
			t.Fatalf("outcome %s status %q (%v), want failed rotation_lost", res.Outcome, res.Status, res.Err)
		}
		if n := len(f.stora.Requests()); n != 2 {
			t.Errorf("server saw %d refresh requests, want 2 (one retry at most)", n)
		}
		got, _ := f.store.Read(context.Background(), c.Secret)
		if got.Data["refresh_token"] != old || got.Metadata[metaStatus] != StatusRotationLost {
			t.Errorf("secret after a lost rotation: refresh token kept %v, status %q", got.Data["refresh_token"] == old, got.Metadata[metaStatus])
		}
		// The client now waits for a human: no request on the next pass.
		res = f.rotator(c).Pass(context.Background())[0]
		if res.Outcome != Failed || len(f.stora.Requests()) != 2 {
			t.Errorf("next pass: outcome %s after %d requests, want failed without a request", res.Outcome, len(f.stora.Requests()))
		}
		t.Logf("RELIABILITY fault | connection closed mid-response on a refresh (server revokes at once) | one retry, refused: reported rotation_lost, not retried until the secret changes | lost by the server's own doing: counted, not hidden")
	})
	t.Run("refresh response cut short, revoke on use: the retry succeeds", func(t *testing.T) {
		f := newFaultWorld(t, false)
		c, old := f.partnerSecret(t, "cut-on-use")
		f.storaProxy.SetNext(faultproxy.CutResponse, 1)
		res := f.rotator(c).Pass(context.Background())[0]
		if res.Outcome != Rotated {
			t.Fatalf("outcome %s: %v", res.Outcome, res.Err)
		}
		f.assertStoredPairWorks(t, c, old)
		t.Logf("RELIABILITY fault | connection closed mid-response on a refresh (server revokes on use, Doorkeeper's default) | rotated on the one retry | pair in Vault works")
	})
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	t.Parallel()
	f := newFaultWorld(t, true)
	id, _ := f.stora.AddClient()
	for _, tc := range []struct{ scope, secret, want string }{
		{"public.contact:read", "wrong-secret", "invalid_client"},
		{"public.nothing:read", "", "invalid_scope"},
	} {
		_, secret := f.stora.AddClient()
		if tc.secret != "" {
			secret = tc.secret
		} else {
			id2, s2 := f.stora.AddClient()
			id, secret = id2, s2
		}
		f.put("stora/perm", map[string]any{"client_id": id, "client_secret": secret})
		before := len(f.stora.Requests())
		c := config.Client{Name: "perm", Grant: config.GrantClientCredentials, Scope: tc.scope, Secret: "stora/perm", Output: "apps/perm"}
		res := f.rotator(c).Pass(context.Background())[0]
		if res.Outcome != Failed || !strings.Contains(res.Err.Error(), tc.want) || len(f.stora.Requests())-before != 1 {
			t.Errorf("outcome %s err %v after %d requests, want one %s", res.Outcome, res.Err, len(f.stora.Requests())-before, tc.want)
		}
	}
}

func TestClientCredentialsInvalidGrantIsNotStuck(t *testing.T) {
	t.Parallel()
	f := newFaultWorld(t, true)
	id, secret := f.stora.AddClient()
	f.put("stora/ccig", map[string]any{"client_id": id, "client_secret": secret})
	c := config.Client{Name: "ccig", Grant: config.GrantClientCredentials, Scope: "public.contact:read", Secret: "stora/ccig", Output: "apps/ccig"}
	f.stora.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		fmt.Fprint(w, `{"error":"invalid_grant"}`)
		return true
	}
	res := f.rotator(c).Pass(context.Background())[0]
	f.stora.Intercept = nil
	if res.Status != StatusRetrying {
		t.Errorf("status %q, want retrying: nothing was spent", res.Status)
	}
	if res := f.rotator(c).Pass(context.Background())[0]; res.Outcome != Rotated {
		t.Errorf("next pass: %s %v, want rotated", res.Outcome, res.Err)
	}
}

func TestInvalidGrantWaitsForANewSecret(t *testing.T) {
	t.Parallel()
	f := newFaultWorld(t, true)
	c, old := f.partnerSecret(t, "reauth")
	f.stora.RevokeRefreshToken(old)
	r := f.rotator(c)
	res := r.Pass(context.Background())[0]
	if res.Outcome != Failed || res.Status != StatusReauthorizationRequired {
		t.Fatalf("outcome %s status %q: %v", res.Outcome, res.Status, res.Err)
	}
	got, _ := f.store.Read(context.Background(), c.Secret)
	if got.Metadata[metaStatus] != StatusReauthorizationRequired || got.Metadata[metaFailures] != "1" || got.Metadata[metaLastAttempt] == "" {
		t.Errorf("metadata %v", got.Metadata)
	}
	if strings.Contains(fmt.Sprint(got.Metadata), old) {
		t.Errorf("metadata holds the refresh token")
	}
	if _, inData := got.Data[metaStatus]; inData {
		t.Errorf("status written to the data apps read")
	}
	for i := 0; i < 2; i++ {
		if res := r.Pass(context.Background())[0]; res.Outcome != Failed || len(f.stora.Requests()) != 1 {
			t.Fatalf("pass %d: outcome %s after %d requests, want failed with no new request", i+2, res.Outcome, len(f.stora.Requests()))
		}
	}
	// An operator authorizes again: a new code goes into the secret, and the next pass uses it.
	id, _ := got.Data["client_id"].(string)
	code := f.stora.IssueCode(id, "https://partner.test/cb", "public.contact:read", "")
	d := clone(got.Data)
	d["code"], d["redirect_uri"] = code, "https://partner.test/cb"
	f.put(c.Secret, d)
	if res := r.Pass(context.Background())[0]; res.Outcome != Rotated {
		t.Fatalf("after re-authorization: %s %v", res.Outcome, res.Err)
	}
	got, _ = f.store.Read(context.Background(), c.Secret)
	if got.Metadata[metaStatus] != StatusOK || got.Metadata[metaFailures] != "0" || got.Metadata[metaLastSuccess] == "" {
		t.Errorf("metadata after success %v", got.Metadata)
	}
	t.Logf("RELIABILITY fault | refresh token revoked by the operator (invalid_grant) | reauthorization_required in metadata; 2 later passes sent nothing; a new code in the secret was exchanged | status back to ok")
}

// TestVaultFaultsDuringWriteBack proves the job's own write-back retries: the Vault client's
// retries are off (VAULT_MAX_RETRIES=0), so an outage the pair outlives is outlived by the job.
func TestVaultFaultsDuringWriteBack(t *testing.T) {
	t.Setenv("VAULT_MAX_RETRIES", "0")
	for _, mode := range []struct {
		name string
		m    faultproxy.Mode
	}{{"connections dropped", faultproxy.Refuse}, {"503", faultproxy.HTTP503}, {"stalled", faultproxy.Stall}} {
		t.Run(mode.name, func(t *testing.T) {
			f := newFaultWorld(t, true)
			c, old := f.partnerSecret(t, "wb")
			// Vault goes bad the moment the server has issued the new pair, and comes back 1.5 s later.
			f.stora.Issued = func(string, string) {
				f.vaultProxy.Set(mode.m)
				time.AfterFunc(1500*time.Millisecond, func() { f.vaultProxy.Set(faultproxy.Pass) })
			}
			var writes atomic.Int32 // the job's own attempts to store the new refresh token
			h := &hookedStore{Store: f.store}
			h.update = func(ctx context.Context, path string, changes map[string]any, version int) (int, error) {
				if path == c.Secret && changes[keyRefreshToken] != nil {
					writes.Add(1)
				}
				return f.store.Update(ctx, path, changes, version)
			}
			r := f.rotator(c)
			r.Store = h
			start := time.Now()
			res := r.Pass(context.Background())[0]
			if res.Outcome != Rotated {
				t.Fatalf("outcome %s: %v", res.Outcome, res.Err)
			}
			f.assertStoredPairWorks(t, c, old)
			if n := writes.Load(); n < 2 {
				t.Errorf("the refresh token was written in %d attempt(s) through a 1.5 s outage with the Vault client's retries off: the job did not retry", n)
			}
			t.Logf("RELIABILITY fault | Vault %s for 1.5 s from the moment the server issued the pair | write-back retried by the job (%d attempts, the Vault client's own retries off); pair landed %v after the pass began | pair in Vault works",
				mode.name, writes.Load(), time.Since(start).Round(100*time.Millisecond))
		})
	}
}

func TestReadOnlyPolicyMakesNoTokenRequest(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	c := w.vault.Client
	if err := c.Sys().PutPolicy("read-only", `path "secret/data/*" { capabilities = ["read"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	tok, err := c.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"read-only"}})
	if err != nil {
		t.Fatal(err)
	}
	s := storafake.New()
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	id, secret := s.AddClient()
	w.put("stora/ro-partner", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": s.IssueRefreshToken(id, "public.contact:read")})
	w.put("stora/ro-acme", map[string]any{"client_id": id, "client_secret": secret})
	store := openStore(t, w.vault.Addr, tok.Auth.ClientToken)
	r := &Rotator{Store: store, Tokens: &oauth.Client{}, RenewBefore: 30 * time.Minute, Clients: []config.Client{
		{Name: "partner", Grant: config.GrantAuthorizationCode, Secret: "stora/ro-partner", Output: "stora/ro-partner", TokenURL: ts.URL + "/oauth2/token"},
		{Name: "acme", Grant: config.GrantClientCredentials, Scope: "public.contact:read", Secret: "stora/ro-acme", Output: "apps/ro-acme", TokenURL: ts.URL + "/oauth2/token"},
	}, WriteDeadline: 2 * time.Second} // were the pre-flight skipped, the refused write-back ends soon
	for _, res := range r.Pass(context.Background()) {
		if res.Outcome != Failed || !strings.Contains(res.Err.Error(), "policy does not allow") {
			t.Errorf("%s: outcome %s err %v, want failed on the policy", res.Client, res.Outcome, res.Err)
		}
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("token endpoint saw %d requests, want 0", n)
	}
	t.Logf("RELIABILITY fault | Vault policy allows read but not update (refresh and client credentials clients) | both failed before any request | %d token requests", len(s.Requests()))
}
