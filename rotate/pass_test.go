package rotate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"token-rotator/config"
	"token-rotator/internal/testenv"
	"token-rotator/oauth"
	"token-rotator/vault"
)

// tokens is a hand-written TokenSource: each call runs fn and is counted.
type tokens struct {
	calls atomic.Int32
	fn    func(ctx context.Context, r oauth.Request) (*oauth.Token, error)
}

func (t *tokens) Token(ctx context.Context, _ string, r oauth.Request) (*oauth.Token, error) {
	t.calls.Add(1)
	return t.fn(ctx, r)
}

func issued(refresh string) func(context.Context, oauth.Request) (*oauth.Token, error) {
	return func(context.Context, oauth.Request) (*oauth.Token, error) {
		return &oauth.Token{AccessToken: "at-new", TokenType: "Bearer", RefreshToken: refresh,
			ExpiresAt: time.Now().Add(2 * time.Hour).UTC()}, nil
	}
}

// world is a real Vault dev server and a Store on its secret/ mount.
type world struct {
	t     *testing.T
	vault *testenv.Vault
	store *vault.Store
}

func newWorld(t *testing.T) *world {
	v := testenv.StartVault(t)
	return &world{t: t, vault: v, store: openStore(t, v.Addr, v.Token)}
}

// openStore opens a store on addr logged in with token, read from a file so that tests need no
// environment variable and can run in parallel.
func openStore(t *testing.T, addr, token string) *vault.Store {
	t.Helper()
	f := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(f, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := vault.Open(context.Background(), config.Vault{Address: addr, KVMount: "secret", Auth: config.Auth{Method: config.AuthToken, TokenFile: f}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (w *world) put(path string, data map[string]any) {
	w.t.Helper()
	if _, err := w.vault.Client.KVv2("secret").Put(context.Background(), path, data); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) data(path string) map[string]any {
	w.t.Helper()
	s, err := w.vault.Client.KVv2("secret").Get(context.Background(), path)
	if err != nil {
		w.t.Fatalf("read %s: %v", path, err)
	}
	return s.Data
}

func (w *world) rotator(ts TokenSource, clients ...config.Client) *Rotator {
	return &Rotator{Store: w.store, Tokens: ts, Clients: clients, RenewBefore: 30 * time.Minute}
}

var partner = config.Client{Name: "partner", Grant: config.GrantAuthorizationCode, Secret: "stora/partner", Output: "stora/partner"}

func TestRefreshWithoutRefreshTokenKeepsStoredOne(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/partner", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-stored", "scope": "public.contact:read"})
	ts := &tokens{fn: issued("")}
	res := w.rotator(ts, partner).Pass(context.Background())
	if res[0].Outcome != Rotated {
		t.Fatalf("outcome %s: %v", res[0].Outcome, res[0].Err)
	}
	d := w.data("stora/partner")
	if d["refresh_token"] != "rt-stored" || d["access_token"] != "at-new" {
		t.Errorf("refresh_token %v access_token %v, want the stored refresh token kept", d["refresh_token"], d["access_token"])
	}
	if d["scope"] != "public.contact:read" {
		t.Errorf("a response without scope replaced the stored scope with %v", d["scope"])
	}
}

func TestWriteLosingCheckAndSetKeepsBothChanges(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/partner", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	ts := &tokens{fn: func(ctx context.Context, r oauth.Request) (*oauth.Token, error) {
		// Someone edits the secret while the grant is in flight.
		w.put("stora/partner", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old", "note": "added by hand"})
		return issued("rt-new")(ctx, r)
	}}
	res := w.rotator(ts, partner).Pass(context.Background())
	if res[0].Outcome != Rotated {
		t.Fatalf("outcome %s: %v", res[0].Outcome, res[0].Err)
	}
	d := w.data("stora/partner")
	if d["refresh_token"] != "rt-new" || d["note"] != "added by hand" {
		t.Errorf("after a check-and-set conflict: refresh_token %v note %v", d["refresh_token"], d["note"])
	}
}

func TestBadSecretsFailBeforeAnyTokenRequest(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/typed", map[string]any{"client_id": 12345, "client_secret": "s", "refresh_token": "r"})
	w.put("stora/empty", map[string]any{"client_id": "id", "client_secret": "s"})
	ts := &tokens{fn: issued("x")}
	clients := []config.Client{
		{Name: "missing", Grant: config.GrantAuthorizationCode, Secret: "stora/none", Output: "stora/none"},
		{Name: "typed", Grant: config.GrantAuthorizationCode, Secret: "stora/typed", Output: "stora/typed"},
		{Name: "empty", Grant: config.GrantAuthorizationCode, Secret: "stora/empty", Output: "stora/empty"},
	}
	res := w.rotator(ts, clients...).Pass(context.Background())
	if len(res) != len(clients) {
		t.Fatalf("%d results for %d clients", len(res), len(clients))
	}
	want := []string{"secret/stora/none", "client_id", "authorize the client first"}
	for i, r := range res { // scripts/reliability counts these
		t.Run(r.Client, func(t *testing.T) {
			if r.Outcome != Failed || r.Err == nil || !strings.Contains(r.Err.Error(), want[i]) {
				t.Errorf("outcome %s err %v, want failed mentioning %q", r.Outcome, r.Err, want[i])
			}
		})
	}
	if n := ts.calls.Load(); n != 0 {
		t.Errorf("%d token requests, want 0", n)
	}
}

func TestTokenErrorWritesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/partner", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	ts := &tokens{fn: func(context.Context, oauth.Request) (*oauth.Token, error) {
		return nil, &oauth.Error{Status: 400, Code: oauth.ErrInvalidGrant}
	}}
	res := w.rotator(ts, partner).Pass(context.Background())
	var oe *oauth.Error
	if res[0].Outcome != Failed || !errors.As(res[0].Err, &oe) || oe.Code != oauth.ErrInvalidGrant {
		t.Fatalf("outcome %s err %v", res[0].Outcome, res[0].Err)
	}
	if d := w.data("stora/partner"); d["refresh_token"] != "rt-old" || d["access_token"] != nil {
		t.Errorf("secret changed after a failed grant: %v", d)
	}
}

func TestShutdownDuringGrantStillStoresThePair(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/partner", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	w.put("stora/second", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-2"})
	ctx, cancel := context.WithCancel(context.Background())
	ts := &tokens{fn: func(c context.Context, r oauth.Request) (*oauth.Token, error) {
		cancel() // SIGTERM arrives while the server is answering
		if c.Err() != nil {
			return nil, c.Err()
		}
		return issued("rt-new")(c, r)
	}}
	second := config.Client{Name: "second", Grant: config.GrantAuthorizationCode, Secret: "stora/second", Output: "stora/second"}
	res := w.rotator(ts, partner, second).Pass(ctx)
	// One token request slot: whichever client got it was in flight at the signal and must end
	// with its pair stored; the other must not start.
	inFlight, other := 0, 1
	if res[1].Outcome == Rotated {
		inFlight, other = 1, 0
	}
	paths := []string{"stora/partner", "stora/second"}
	if res[inFlight].Outcome != Rotated || w.data(paths[inFlight])["refresh_token"] != "rt-new" {
		t.Fatalf("rotation in flight at shutdown: outcome %s err %v, stored %v", res[inFlight].Outcome, res[inFlight].Err, w.data(paths[inFlight])["refresh_token"])
	}
	if res[other].Outcome != Skipped || ts.calls.Load() != 1 || w.data(paths[other])["rotation_claim"] != nil {
		t.Errorf("after shutdown the other client was %s with %d token requests (claim left: %v), want skipped, 1 request, no claim",
			res[other].Outcome, ts.calls.Load(), w.data(paths[other])["rotation_claim"] != nil)
	}
}

func TestDryRunAndNotDue(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/fresh", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "r",
		"access_token": "a", "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	w.put("stora/stale", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "r"})
	ts := &tokens{fn: issued("x")}
	r := w.rotator(ts,
		config.Client{Name: "fresh", Grant: config.GrantAuthorizationCode, Secret: "stora/fresh", Output: "stora/fresh"},
		config.Client{Name: "stale", Grant: config.GrantAuthorizationCode, Secret: "stora/stale", Output: "stora/stale"})
	r.DryRun = true
	res := r.Pass(context.Background())
	if res[0].Outcome != NotDue || res[1].Outcome != DryRun || res[1].Grant != oauth.GrantRefreshToken {
		t.Errorf("results %+v", res)
	}
	if ts.calls.Load() != 0 || w.data("stora/stale")["access_token"] != nil {
		t.Errorf("dry run requested or wrote")
	}
}
