package rotate

// Edges a review found: each test asserts what the documents or the code promise, and failed
// before the fix it names.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
	"token-rotator/oauth"
)

// After a possible spend (a 5xx), a 429 or 408 answer to the one retry is retried again, and
// again, with no bound: "retried exactly once, never twice" does not hold, every wait after
// SpentWait is zero, and neither the claim nor shutdown stops the loop.
func TestRetryAfterASpendNeverTwiceEvenOn429(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	ts := &tokens{}
	ts.fn = func(ctx context.Context, r oauth.Request) (*oauth.Token, error) {
		switch n := ts.calls.Load(); {
		case n == 1:
			return nil, &oauth.Error{Status: 502} // a gateway after the server may have acted
		case n < 50:
			return nil, &oauth.Error{Status: 429, RetryAfter: time.Minute}
		default: // end the test's loop
			return issued("rt-new")(ctx, r)
		}
	}
	c := config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"}
	r := w.rotator(ts, c)
	r.SpentWait = 200 * time.Millisecond
	start := time.Now()
	res := r.Pass(context.Background())[0]
	if n := ts.calls.Load(); n > 2 {
		t.Errorf("%d token requests spending refresh token rt-old after a possible spend (outcome %s, %v after the first); want at most 2",
			n, res.Outcome, time.Since(start).Round(time.Millisecond))
	}
}

// An RFC 6749 error object is "that error whatever the status" (docs/safety.md), and oauth.Error says
// "a caller that must not repeat a refused grant branches on Code first". grant does not: a 5xx
// whose body says invalid_grant is retried (the refused token sent a second time) and the client
// reported rotation_lost instead of reauthorization_required.
func TestInvalidGrantUnderA5xxIsNotRetried(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-dead"})
	ts := &tokens{fn: func(context.Context, oauth.Request) (*oauth.Token, error) {
		return nil, &oauth.Error{Status: 503, Code: oauth.ErrInvalidGrant, Description: "The provided authorization grant is invalid"}
	}}
	c := config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"}
	r := w.rotator(ts, c)
	r.SpentWait = 100 * time.Millisecond
	res := r.Pass(context.Background())[0]
	if n := ts.calls.Load(); n != 1 || res.Status != StatusReauthorizationRequired {
		t.Errorf("503 invalid_grant: %d requests, status %s; want 1 request and %s", n, res.Status, StatusReauthorizationRequired)
	}
}

// A code exchange lost in transit whose one retry is refused: failedGrant records the *stored*
// refresh token (never sent, never refused) as refused, and the error says "a refresh request was
// lost". Once the operator removes the waiting code, the client is stuck as
// reauthorization_required though its refresh token works.
func TestLostCodeExchangeDoesNotCondemnTheRefreshToken(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-live",
		"code": "code-1", "redirect_uri": "https://p.example/cb"})
	ts := &tokens{}
	ts.fn = func(ctx context.Context, r oauth.Request) (*oauth.Token, error) {
		if r.GrantType == oauth.GrantAuthorizationCode {
			if ts.calls.Load() == 1 {
				return nil, &oauth.TransportError{Err: errors.New("connection reset")}
			}
			return nil, &oauth.Error{Status: 400, Code: oauth.ErrInvalidGrant}
		}
		return issued("rt-new")(ctx, r) // rt-live works
	}
	c := config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"}
	r := w.rotator(ts, c)
	r.SpentWait = 100 * time.Millisecond
	res := r.Pass(context.Background())[0]
	t.Logf("first pass: %s/%s: %v", res.Outcome, res.Status, res.Err)
	if res.Err != nil && strings.Contains(res.Err.Error(), "a refresh request was lost") {
		t.Errorf("a code exchange is reported as %q", "a refresh request was lost")
	}
	m, err := w.vault.Client.KVv2("secret").GetMetadata(context.Background(), "stora/cred")
	if err != nil {
		t.Fatal(err)
	}
	if m.CustomMetadata[metaRefused] == fingerprint("rt-live") {
		t.Errorf("%s holds the fingerprint of rt-live, a refresh token never sent", metaRefused)
	}
	// The operator drops the code (no new one to give): the stored refresh token should be used.
	if _, err := w.vault.Client.KVv2("secret").Patch(context.Background(), "stora/cred", map[string]any{"code": nil}); err != nil {
		t.Fatal(err)
	}
	res = r.Pass(context.Background())[0]
	if res.Outcome != Rotated {
		t.Errorf("second pass with the working refresh token: %s/%s (%v); want rotated", res.Outcome, res.Status, res.Err)
	}
}

// docs/safety.md: "A refresh that failed in transit ... is retried once; if that is refused, the
// client is reported rotation_lost" and "a connection cut after the server rotated (reported
// rotation_lost)". If the retry fails in transit too, the status is `retrying`, and the next pass,
// refused, reports reauthorization_required: a lost rotation is never reported as one.
func TestTwiceLostRefreshIsReportedLost(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	// The server rotates rt-old (Doorkeeper without previous_refresh_token revokes it at once)
	// and both answers are lost.
	ts := &tokens{fn: func(context.Context, oauth.Request) (*oauth.Token, error) {
		return nil, &oauth.TransportError{Err: errors.New("connection reset")}
	}}
	c := config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"}
	r := w.rotator(ts, c)
	r.SpentWait = 100 * time.Millisecond
	res1 := r.Pass(context.Background())[0]
	ts.fn = func(context.Context, oauth.Request) (*oauth.Token, error) {
		return nil, &oauth.Error{Status: 400, Code: oauth.ErrInvalidGrant}
	}
	res2 := r.Pass(context.Background())[0]
	t.Logf("pass 1: %s/%s; pass 2: %s/%s", res1.Outcome, res1.Status, res2.Outcome, res2.Status)
	if res1.Status != StatusRotationLost && res2.Status != StatusRotationLost {
		t.Errorf("a refresh lost in transit twice, then refused, was never reported %s", StatusRotationLost)
	}
}

// budget.go's AfterSpend counts one DefaultWriteDeadline, and ShutdownWait (so the manifests'
// grace period) is built on it; but with output != secret, writeBack runs update twice, each with
// its own WriteDeadline: the output write starts a fresh one after the credential write used
// most of the first.
func TestWriteBackFitsOneWriteDeadline(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	const deadline = 2 * time.Second
	var granted time.Time
	h := &hookedStore{Store: w.store}
	h.update = func(ctx context.Context, path string, changes map[string]any, version int) (int, error) {
		if _, writeBack := changes[keyRefreshToken]; writeBack && time.Since(granted) < deadline/2 {
			return 0, errors.New("vault said 503: unavailable") // Vault back just in time
		}
		return w.store.Update(ctx, path, changes, version)
	}
	h.write = func(ctx context.Context, path string, data map[string]any, version int) (int, error) {
		return 0, errors.New("vault said 503: unavailable")
	}
	ts := &tokens{fn: func(ctx context.Context, r oauth.Request) (*oauth.Token, error) {
		granted = time.Now()
		return issued("rt-new")(ctx, r)
	}}
	r := w.rotator(ts, config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"})
	r.Store, r.WriteDeadline, r.WriteBackoff = h, deadline, 20*time.Millisecond
	res := r.Pass(context.Background())[0]
	if took := time.Since(granted); took > deadline*12/10 {
		t.Errorf("write-back ran %v after the grant (outcome %s/%s); the budget allows one WriteDeadline (%v)", took.Round(10*time.Millisecond), res.Outcome, res.Status, deadline)
	}
}

// Store.Writable answers from what PrefetchCapabilities learnt, and a pass prefetches only
// with 2 targets or more (and keeps the old answers when the prefetch fails): a daemon whose
// targets dropped to one keeps a previous pass's answers for ever. A policy tightened since then
// passes the pre-flight, and the refresh token is spent for a write Vault then refuses ("a
// read-only policy fails the client with zero token requests").
func TestPreflightAsksAfterThePolicyChanged(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	sys := w.vault.Client.Sys()
	writable := `
path "secret/data/stora/*" { capabilities = ["read", "patch"] }
path "secret/metadata/stora/*" { capabilities = ["read", "patch", "list"] }
path "secret/data/apps/*" { capabilities = ["create", "read", "update"] }`
	if err := sys.PutPolicy("job", writable); err != nil {
		t.Fatal(err)
	}
	tok, err := w.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"job"}, TTL: "2h"})
	if err != nil {
		t.Fatal(err)
	}
	w.put("stora/fleet", map[string]any{"client_id": "id", "client_secret": "s"})
	fresh := time.Now().Add(90 * time.Minute).UTC().Format(time.RFC3339)
	for _, op := range []string{"op-1", "op-2"} {
		w.put("stora/fleet/connections/"+op, map[string]any{"refresh_token": "rt-" + op})
		w.put("apps/fleet/"+op, map[string]any{"access_token": "at", "expires_at": fresh})
	}
	fleet := config.Client{Name: "fleet", Grant: config.GrantAuthorizationCode, Secret: "stora/fleet", Connections: "stora/fleet/connections", OutputPrefix: "apps/fleet"}
	ts := &tokens{fn: issued("rt-new")}
	r := w.rotator(ts, fleet) // one Rotator for every pass, as the daemon has
	r.Store = openStore(t, w.vault.Addr, tok.Auth.ClientToken)
	r.Pass(ctx)                                                                                               // not due: nothing requested, but the capabilities are learnt
	if err := w.vault.Client.KVv2("secret").DeleteMetadata(ctx, "stora/fleet/connections/op-2"); err != nil { // offboarded for good
		t.Fatal(err)
	}
	if err := sys.PutPolicy("job", strings.Replace(writable, `["create", "read", "update"]`, `["read"]`, 1)); err != nil {
		t.Fatal(err)
	}
	r.Force, r.WriteDeadline = true, time.Second // a 403 on the write-back is retried for the whole deadline
	res := r.Pass(ctx)
	t.Logf("pass 2: %s/%s: %v", res[0].Outcome, res[0].Status, res[0].Err)
	if n := ts.calls.Load(); n != 0 {
		t.Errorf("%d token request(s) spent with a policy that may not write the output", n)
	}
}
