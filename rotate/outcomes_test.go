package rotate

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
	"token-rotator/oauth"
	"token-rotator/vault"
)

// Each test here is one of the inputs under which the job used to report one thing while Vault
// held another; each asserts what Vault holds and the outcome that names it.

func TestEmptyStoredRefreshTokenIsNotNewer(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	ts := &tokens{fn: func(ctx context.Context, r oauth.Request) (*oauth.Token, error) {
		// The credential secret is rewritten without its refresh token while the refresh is in flight.
		w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s"})
		return issued("rt-new")(ctx, r)
	}}
	c := config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"}
	res := w.rotator(ts, c).Pass(context.Background())[0]
	if got := w.data("stora/cred")["refresh_token"]; got != "rt-new" {
		t.Errorf("refresh token in Vault %v, want the one just granted", got)
	}
	if res.Outcome != Rotated || w.data("apps/out")["access_token"] != "at-new" {
		t.Errorf("outcome %s (%v), output %v; want rotated with the new access token", res.Outcome, res.Err, w.data("apps/out")["access_token"])
	}
	t.Logf("RELIABILITY outcome | credential secret rewritten without refresh_token while a refresh is in flight | %s | refresh token in Vault is the one just granted: %v; %d token request(s)",
		res.Outcome, w.data("stora/cred")["refresh_token"] == "rt-new", ts.calls.Load())
}

func TestSecretDeletedMidRotationStaysDeleted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		delete func(c *api.Client, path string) error
	}{
		{"kv delete", func(c *api.Client, p string) error { return c.KVv2("secret").Delete(context.Background(), p) }},
		{"kv metadata delete", func(c *api.Client, p string) error {
			return c.KVv2("secret").DeleteMetadata(context.Background(), p)
		}},
	} {
		for _, output := range []string{"", "apps/out"} {
			t.Run(tc.name+"/output "+output, func(t *testing.T) {
				t.Parallel()
				w := newWorld(t)
				w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
				ts := &tokens{fn: func(ctx context.Context, r oauth.Request) (*oauth.Token, error) {
					if err := tc.delete(w.vault.Client, "stora/cred"); err != nil { // an operator offboards it
						t.Error(err)
					}
					return issued("rt-new")(ctx, r)
				}}
				c := config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: output}
				c.Output = cmp.Or(output, c.Secret)
				res := w.rotator(ts, c).Pass(context.Background())
				if res[0].Outcome != Deleted || AnyFailed(res) {
					t.Errorf("outcome %s (%v), want deleted", res[0].Outcome, res[0].Err)
				}
				if _, err := w.store.Read(context.Background(), "stora/cred"); !errors.Is(err, vault.ErrNotFound) {
					t.Errorf("the deleted secret is back: read error %v", err)
				}
				if output != "" {
					if _, err := w.store.Read(context.Background(), output); !errors.Is(err, vault.ErrNotFound) {
						t.Errorf("an access token was written for a deleted secret: %v", err)
					}
				}
				_, rerr := w.store.Read(context.Background(), "stora/cred")
				t.Logf("RELIABILITY outcome | credential secret deleted (%s) while its refresh is in flight, output %s | %s | secret still deleted: %v; %d token request(s)",
					tc.name, cmp.Or(output, "the same secret"), res[0].Outcome, errors.Is(rerr, vault.ErrNotFound), ts.calls.Load())
			})
		}
	}
}

func TestClaimNamesTheTarget(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	ts := &tokens{fn: func(ctx context.Context, r oauth.Request) (*oauth.Token, error) {
		time.Sleep(300 * time.Millisecond) // both targets are under way at once
		return issued("rt-new-"+randomID())(ctx, r)
	}}
	// Two targets of one process on one credential secret (config refuses this; the claim must hold
	// even so): only one of them may spend its refresh token.
	a := config.Client{Name: "a", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/a"}
	b := config.Client{Name: "b", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/b"}
	r := w.rotator(ts, a, b)
	r.Concurrency = 2
	res := r.Pass(context.Background())
	if n := ts.calls.Load(); n != 1 {
		t.Errorf("%d token requests spent one refresh token; want 1 (outcomes %s, %s)", n, res[0].Outcome, res[1].Outcome)
	}
	if res[0].Outcome != ClaimedElsewhere && res[1].Outcome != ClaimedElsewhere {
		t.Errorf("outcomes %s, %s: want one claimed_elsewhere", res[0].Outcome, res[1].Outcome)
	}
	t.Logf("RELIABILITY outcome | two targets of one process on one credential secret, concurrency 2 | %s, %s | one refresh token spent by %d token request(s)", res[0].Outcome, res[1].Outcome, ts.calls.Load())
}

func TestShutdownDuringABackoffSkips(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cc", map[string]any{"client_id": "id", "client_secret": "s"})
	w.put("stora/rt", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	for _, tc := range []struct {
		name   string
		client config.Client
		status int
	}{
		{"client_credentials 503", config.Client{Name: "cc", Grant: config.GrantClientCredentials, Scope: "s", Secret: "stora/cc", Output: "apps/cc"}, 503},
		{"client_credentials 429", config.Client{Name: "cc", Grant: config.GrantClientCredentials, Scope: "s", Secret: "stora/cc", Output: "apps/cc"}, 429},
		{"refresh 429", config.Client{Name: "rt", Grant: config.GrantAuthorizationCode, Secret: "stora/rt", Output: "apps/rt"}, 429},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ts := &tokens{fn: func(context.Context, oauth.Request) (*oauth.Token, error) {
				cancel() // SIGTERM while the server asks the job to wait a minute
				return nil, &oauth.Error{Status: tc.status, RetryAfter: time.Minute}
			}}
			r := w.rotator(ts, tc.client)
			res := r.Pass(ctx)
			if res[0].Outcome != Skipped || AnyFailed(res) || ts.calls.Load() != 1 {
				t.Errorf("outcome %s (%v) after %d requests; want skipped after 1", res[0].Outcome, res[0].Err, ts.calls.Load())
			}
			if d := w.data(tc.client.Secret); d[keyClaim] != nil || (tc.client.Grant != config.GrantClientCredentials && d["refresh_token"] != "rt-old") {
				t.Errorf("secret after the skip: claim left %v, refresh token %v", d[keyClaim] != nil, d["refresh_token"])
			}
			t.Logf("RELIABILITY outcome | SIGTERM while a %s asks for a minute's wait | %s, failed: %v | nothing spent, no claim left: %v; %d token request(s)",
				tc.name, res[0].Outcome, AnyFailed(res), w.data(tc.client.Secret)[keyClaim] == nil, ts.calls.Load())
		})
	}
}

func TestShutdownDuringTheListingSkips(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	h := &hookedStore{Store: w.store}
	h.list = func(c context.Context, prefix string) ([]string, error) {
		cancel() // SIGTERM while the connections are listed
		return nil, c.Err()
	}
	r := w.rotator(&tokens{fn: issued("rt")}, config.Client{Name: "fleet", Grant: config.GrantAuthorizationCode, Secret: "stora/fleet", Connections: "stora/fleet/connections"})
	r.Store = h
	res := r.Pass(ctx)
	if len(res) != 1 || res[0].Outcome != Skipped || AnyFailed(res) {
		t.Errorf("results %+v; want one skipped, none failed", res)
	}
	t.Logf("RELIABILITY outcome | SIGTERM while a connections prefix is listed | %s, failed: %v | nothing read or written", res[0].Outcome, AnyFailed(res))
}

func TestConnectionGoneIsSkippedEverywhere(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/fleet", map[string]any{"client_id": "id", "client_secret": "s"})
	for _, op := range []string{"op-1", "op-2", "op-3"} {
		w.put("stora/fleet/connections/"+op, map[string]any{"refresh_token": "rt-" + op})
		w.put("apps/fleet/"+op, map[string]any{"access_token": "at", "expires_at": time.Now().Add(90 * time.Minute).UTC().Format(time.RFC3339)})
	}
	ctx := context.Background()
	kv := w.vault.Client.KVv2("secret")
	if err := kv.Delete(ctx, "stora/fleet/connections/op-2"); err != nil { // offboarded: soft-deleted
		t.Fatal(err)
	}
	fleet := config.Client{Name: "fleet", Grant: config.GrantAuthorizationCode, Secret: "stora/fleet", Connections: "stora/fleet/connections", OutputPrefix: "apps/fleet"}
	h := &hookedStore{Store: w.store}
	h.list = func(c context.Context, prefix string) ([]string, error) {
		paths, err := w.store.List(c, prefix)
		// Between the listing and the read, op-3's metadata goes too.
		_ = kv.DeleteMetadata(ctx, "stora/fleet/connections/op-3")
		return paths, err
	}
	r := w.rotator(&tokens{fn: issued("rt")}, fleet)
	r.Store = h
	res := r.Pass(ctx)
	if AnyFailed(res) || len(res) != 3 || res[1].Outcome != Skipped || res[2].Outcome != Skipped {
		t.Fatalf("pass: %+v; want op-2 and op-3 skipped, none failed", res)
	}

	// status and validate apply the same rule to the soft-deleted op-2 (op-3 is no longer listed).
	r = w.rotator(&tokens{fn: issued("rt")}, fleet)
	for _, st := range r.Report(ctx, time.Now().Add(10*time.Minute)) {
		if st.Problem != "" || st.ExpiresBeforeNextRun {
			t.Errorf("status of %s: problem %q, expires before next run %v", st.Name, st.Problem, st.ExpiresBeforeNextRun)
		}
		if st.Name == "fleet/op-2" && st.Status != StatusDeleted {
			t.Errorf("status of the deleted connection: %q, want %q", st.Status, StatusDeleted)
		}
	}
	for _, c := range r.Validate(ctx) {
		if c.Problem != "" {
			t.Errorf("validate %s: %s", c.Name, c.Problem)
		}
	}
	t.Logf("RELIABILITY outcome | connections deleted (kv delete; kv metadata delete between listing and read) | %s, %s; failed: %v | status and validate: not a problem", res[1].Outcome, res[2].Outcome, AnyFailed(res))
}

func TestRetryAfterASpendIsBounded(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	var first atomic.Bool
	var retryAfter atomic.Int64
	start := time.Now()
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if first.CompareAndSwap(false, true) {
			rw.Header().Set("Retry-After", "600") // a gateway that asks for ten minutes
			rw.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		retryAfter.Store(int64(time.Since(start)))
		rw.Header().Set("Content-Type", "application/json")
		rw.Write([]byte(`{"access_token":"at-new","token_type":"Bearer","expires_in":7200,"refresh_token":"rt-new"}`))
	}))
	t.Cleanup(srv.Close)
	c := config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out", TokenURL: srv.URL}
	r := w.rotator(&oauth.Client{}, c)
	r.SpentWait = 2 * time.Second
	done := make(chan Result, 1)
	go func() { done <- r.Pass(context.Background())[0] }()
	var res Result
	select {
	case res = <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("no result 20 s after a 503 with Retry-After: 600: the wait before the one retry is not bounded")
	}
	if res.Outcome != Rotated || w.data("stora/cred")["refresh_token"] != "rt-new" {
		t.Fatalf("outcome %s (%v)", res.Outcome, res.Err)
	}
	if got := time.Duration(retryAfter.Load()); got > 2*time.Second {
		t.Errorf("the retry after a possible spend went out after %v; want within the %v bound, whatever Retry-After says", got, r.SpentWait)
	}
	t.Logf("RELIABILITY outcome | 503 Retry-After: 600 on a refresh (maybe spent) | %s | the one retry went out after %v (bound %v in the test, %v in production)", res.Outcome, time.Duration(retryAfter.Load()).Round(10*time.Millisecond), r.SpentWait, MaxSpentWait)
}

func TestValidateAppliesThePassChecks(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/ok", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt"})
	w.put("stora/refused", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-dead"})
	ok := config.Client{Name: "ok", Grant: config.GrantAuthorizationCode, Secret: "stora/ok", Output: "stora/ok"}
	refused := config.Client{Name: "refused", Grant: config.GrantAuthorizationCode, Secret: "stora/refused", Output: "stora/refused"}
	invalid := &tokens{fn: func(context.Context, oauth.Request) (*oauth.Token, error) {
		return nil, &oauth.Error{Status: 400, Code: oauth.ErrInvalidGrant}
	}}
	if res := w.rotator(invalid, refused).Pass(context.Background())[0]; res.Status != StatusReauthorizationRequired {
		t.Fatalf("set-up: %s/%s", res.Outcome, res.Status)
	}
	checks := w.rotator(invalid, ok, refused).Validate(context.Background())
	problems := map[string]string{}
	for _, c := range checks {
		problems[c.Name] = c.Problem
	}
	if problems["ok"] != "" || !strings.Contains(problems["refused"], StatusReauthorizationRequired) {
		t.Errorf("validate: %q", problems)
	}

	// A Vault token that will not last a rotation fails every client in a pass: validate says so.
	tok, err := w.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{TTL: "2m", Renewable: new(bool), Policies: []string{"root"}})
	if err != nil {
		t.Fatal(err)
	}
	r := w.rotator(invalid, ok)
	r.Store = openStore(t, w.vault.Addr, tok.Auth.ClientToken)
	found := false
	for _, c := range r.Validate(context.Background()) {
		found = found || (c.Name == "vault token" && strings.Contains(c.Problem, "would not last"))
	}
	if !found {
		t.Errorf("validate with a Vault token that expires in 2 minutes: %+v", r.Validate(context.Background()))
	}

	// A new refresh token stored for the refused client: status, validate and the pass agree that
	// it is tried again.
	w.put("stora/refused", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-fresh"})
	r = w.rotator(invalid, refused)
	for _, st := range r.Report(context.Background(), time.Now().Add(time.Hour)) {
		if st.Stuck() || st.Status != StatusRetrying {
			t.Errorf("status after a new refresh token: %q (%s)", st.Status, st.Error)
		}
	}
	for _, c := range r.Validate(context.Background()) {
		if c.Problem != "" {
			t.Errorf("validate after a new refresh token: %s", c.Problem)
		}
	}
}

func TestWriteBackWhoseAnswerWasLostIsARotation(t *testing.T) {
	t.Parallel()
	for _, output := range []string{"apps/out", "stora/cred"} {
		t.Run("output "+output, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
			var writes atomic.Int32
			lose := func(path string) bool { // the write-back's write to the output lands; its answer is lost
				return path == output && writes.Add(1) == map[bool]int32{true: 2, false: 1}[output == "stora/cred"]
			}
			h := &hookedStore{Store: w.store}
			h.write = func(ctx context.Context, path string, data map[string]any, version int) (int, error) {
				v, err := w.store.Write(ctx, path, data, version)
				if err == nil && lose(path) {
					return 0, vault.ErrVersionMismatch // the client's retry met its own write
				}
				return v, err
			}
			h.update = func(ctx context.Context, path string, changes map[string]any, version int) (int, error) {
				v, err := w.store.Update(ctx, path, changes, version)
				if err == nil && lose(path) {
					return 0, vault.ErrVersionMismatch
				}
				return v, err
			}
			ts := &tokens{fn: issued("rt-new")}
			r := w.rotator(ts, config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: output})
			r.Store = h
			res := r.Pass(context.Background())[0]
			if res.Outcome != Rotated || w.data(output)["access_token"] != "at-new" || w.data("stora/cred")["refresh_token"] != "rt-new" {
				t.Errorf("outcome %s (%v); want rotated: Vault holds the pair just granted", res.Outcome, res.Err)
			}
			t.Logf("RELIABILITY outcome | the write-back's write to output %s lands, its answer is lost | %s | the pair just granted: %v", output, res.Outcome, w.data(output)["access_token"] == "at-new")
		})
	}
}

func TestConnectionDeletedByVaultRetentionIsNotAnOffboarding(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	kv := w.vault.Client.KVv2("secret")
	w.put("stora/fleet", map[string]any{"client_id": "id", "client_secret": "s"})
	if err := kv.PutMetadata(ctx, "stora/fleet/connections/op-1", api.KVMetadataPutInput{DeleteVersionAfter: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	w.put("stora/fleet/connections/op-1", map[string]any{"refresh_token": "rt-only-copy"})
	w.put("stora/fleet/connections/op-2", map[string]any{"refresh_token": "rt-2"})
	if err := kv.Delete(ctx, "stora/fleet/connections/op-2"); err != nil { // an operator offboards op-2
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // Vault's retention deletes op-1's only version
	fleet := config.Client{Name: "fleet", Grant: config.GrantAuthorizationCode, Secret: "stora/fleet", Connections: "stora/fleet/connections", OutputPrefix: "apps/fleet"}
	ts := &tokens{fn: issued("rt-new")}
	res := w.rotator(ts, fleet).Pass(ctx)
	if len(res) != 2 || res[0].Outcome != Failed || !strings.Contains(res[0].Err.Error(), "delete_version_after") || !strings.Contains(res[0].Err.Error(), "vault kv undelete") {
		t.Fatalf("pass: %+v; want op-1 failed, naming delete_version_after and how to undelete it", res)
	}
	if res[1].Outcome != Skipped || !res[1].Gone {
		t.Errorf("op-2, deleted by an operator: %s, want skipped as gone", res[1].Outcome)
	}
	r := w.rotator(ts, fleet)
	states := r.Report(ctx, time.Now().Add(10*time.Minute))
	checks := r.Validate(ctx)
	if states[0].Problem == "" || states[1].Problem != "" || states[1].Status != StatusDeleted {
		t.Errorf("status: %+v", states)
	}
	if checks[0].Problem == "" || checks[1].Problem != "" {
		t.Errorf("validate: %+v", checks)
	}
	// The operator follows the error's advice: the refresh token is back, and so is the client.
	if err := kv.Undelete(ctx, "stora/fleet/connections/op-1", []int{1}); err != nil {
		t.Fatal(err)
	}
	if err := kv.PutMetadata(ctx, "stora/fleet/connections/op-1", api.KVMetadataPutInput{DeleteVersionAfter: 0}); err != nil {
		t.Fatal(err)
	}
	if res := w.rotator(ts, fleet).Pass(ctx); res[0].Outcome != Rotated {
		t.Errorf("after undelete: %s (%v)", res[0].Outcome, res[0].Err)
	}
	t.Logf("RELIABILITY outcome | a connection's only version deleted by Vault's delete_version_after; another by an operator | %s; %s | the first named with its undelete command, the second skipped; after the undelete: rotated", res[0].Outcome, res[1].Outcome)
}

func TestAClaimFarInTheFutureIsNotHonoured(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	far := `{"holder":"otherhost/1/abc","target":"p","expires":"2099-01-01T00:00:00Z"}`
	near := `{"holder":"otherhost/1/abc","target":"p","expires":"` + time.Now().Add(10*time.Minute).UTC().Format(time.RFC3339) + `"}`
	lapsed := `{"holder":"otherhost/1/abc","target":"p","expires":"` + time.Now().Add(-time.Minute).UTC().Format(time.RFC3339) + `"}`
	for _, tc := range []struct {
		name, claim string
		want        Outcome
	}{
		{"expiring 2099", far, Rotated},
		{"expiring in 10 minutes", near, ClaimedElsewhere},
		{"lapsed a minute ago (left by a killed run)", lapsed, Rotated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "stora/" + strings.ReplaceAll(tc.name, " ", "-")
			w.put(path, map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old", keyClaim: tc.claim})
			ts := &tokens{fn: issued("rt-new")}
			res := w.rotator(ts, config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: path, Output: path}).Pass(context.Background())[0]
			if res.Outcome != tc.want {
				t.Errorf("claim %s: outcome %s (%v), want %s", tc.name, res.Outcome, res.Err, tc.want)
			}
			t.Logf("RELIABILITY outcome | another process's claim %s | %s | %d token request(s)", tc.name, res.Outcome, ts.calls.Load())
		})
	}
}

func TestReusedTokenWithAWrongExpiryIsPutRight(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cc", map[string]any{"client_id": "id", "client_secret": "s"})
	w.put("apps/cc", map[string]any{"access_token": "at-same", "token_type": "Bearer", "expires_at": "2099-01-01T00:00:00Z"})
	expires := time.Now().Add(40 * time.Minute).UTC().Truncate(time.Second)
	ts := &tokens{fn: func(context.Context, oauth.Request) (*oauth.Token, error) {
		return &oauth.Token{AccessToken: "at-same", TokenType: "Bearer", ExpiresAt: expires}, nil // handed back
	}}
	c := config.Client{Name: "cc", Grant: config.GrantClientCredentials, Scope: "s", Secret: "stora/cc", Output: "apps/cc"}
	res := w.rotator(ts, c).Pass(context.Background())[0]
	if res.Outcome != Reused || w.data("apps/cc")["expires_at"] != expires.Format(time.RFC3339) || !res.ExpiresAt.Equal(expires) {
		t.Errorf("outcome %s, expires_at in Vault %v, result's %v; want reused, with the server's expiry %v stored", res.Outcome, w.data("apps/cc")["expires_at"], res.ExpiresAt, expires)
	}
}

func TestInvalidGrantAfterAnotherProcessRotatedIsRotatedElsewhere(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	ts := &tokens{fn: func(ctx context.Context, r oauth.Request) (*oauth.Token, error) {
		// Another process (its claim lapsed) spent rt-old first and stored its pair.
		w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-theirs"})
		return nil, &oauth.Error{Status: 400, Code: oauth.ErrInvalidGrant}
	}}
	c := config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"}
	res := w.rotator(ts, c).Pass(context.Background())
	if res[0].Outcome != RotatedElsewhere || AnyFailed(res) {
		t.Errorf("outcome %s/%s (%v), want rotated_elsewhere, not a failure", res[0].Outcome, res[0].Status, res[0].Err)
	}
	m, err := w.vault.Client.KVv2("secret").GetMetadata(context.Background(), "stora/cred")
	if err != nil {
		t.Fatal(err)
	}
	if w.data("stora/cred")["refresh_token"] != "rt-theirs" || m.CustomMetadata[metaRefused] != nil {
		t.Errorf("refresh token %v, refused fingerprint %v: want theirs kept and nothing marked refused", w.data("stora/cred")["refresh_token"], m.CustomMetadata[metaRefused])
	}
}

func TestAnImplausibleNewerOutputIsOverwritten(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	ts := &tokens{fn: func(ctx context.Context, r oauth.Request) (*oauth.Token, error) {
		w.put("apps/out", map[string]any{"access_token": "at-2099", "token_type": "Bearer", "expires_at": "2099-01-01T00:00:00Z"})
		return issued("rt-new")(ctx, r)
	}}
	c := config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"}
	if res := w.rotator(ts, c).Pass(context.Background())[0]; res.Outcome != Rotated || w.data("apps/out")["access_token"] != "at-new" {
		t.Errorf("outcome %s, output %v: an output written meanwhile expiring in 2099 is no newer pair", res.Outcome, w.data("apps/out")["access_token"])
	}
}

func TestTransientRetriesStopAtTheBudget(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cc", map[string]any{"client_id": "id", "client_secret": "s"})
	ts := &tokens{fn: func(context.Context, oauth.Request) (*oauth.Token, error) {
		return nil, &oauth.Error{Status: 503}
	}}
	c := config.Client{Name: "cc", Grant: config.GrantClientCredentials, Scope: "s", Secret: "stora/cc", Output: "apps/cc"}
	r := w.rotator(ts, c)
	r.GrantRetry, r.GrantBackoff = time.Second, 100*time.Millisecond
	start := time.Now()
	res := r.Pass(context.Background())[0]
	if took := time.Since(start); res.Outcome != Failed || took > 2*time.Second || ts.calls.Load() < 2 {
		t.Errorf("outcome %s after %v and %d requests; want failed after retries within the 1 s budget", res.Outcome, took, ts.calls.Load())
	}
}
