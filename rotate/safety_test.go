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

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
	"token-rotator/oauth"
	"token-rotator/vault"
)

// hookedStore is a real store whose writes and reads a test can intercept.
type hookedStore struct {
	*vault.Store
	write  func(ctx context.Context, path string, data map[string]any, version int) (int, error)
	update func(ctx context.Context, path string, changes map[string]any, version int) (int, error)
	read   func(ctx context.Context, path string) (*vault.Secret, error)
	list   func(ctx context.Context, prefix string) ([]string, error)
}

func (h *hookedStore) Update(ctx context.Context, path string, changes map[string]any, version int) (int, error) {
	if h.update != nil {
		return h.update(ctx, path, changes, version)
	}
	return h.Store.Update(ctx, path, changes, version)
}

func (h *hookedStore) List(ctx context.Context, prefix string) ([]string, error) {
	if h.list != nil {
		return h.list(ctx, prefix)
	}
	return h.Store.List(ctx, prefix)
}

func (h *hookedStore) Write(ctx context.Context, path string, data map[string]any, version int) (int, error) {
	if h.write != nil {
		return h.write(ctx, path, data, version)
	}
	return h.Store.Write(ctx, path, data, version)
}

func (h *hookedStore) Read(ctx context.Context, path string) (*vault.Secret, error) {
	if h.read != nil {
		return h.read(ctx, path)
	}
	return h.Store.Read(ctx, path)
}

func TestShortLivedVaultTokenSpendsNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	tok, err := w.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{TTL: "60s", Renewable: new(bool), Policies: []string{"root"}})
	if err != nil {
		t.Fatal(err)
	}
	store := openStore(t, w.vault.Addr, tok.Auth.ClientToken)
	w.put("stora/short", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt"})
	ts := &tokens{fn: issued("new")}
	r := &Rotator{Store: store, Tokens: ts, RenewBefore: 30 * time.Minute,
		Clients: []config.Client{{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/short", Output: "stora/short"}}}
	res := r.Pass(context.Background())[0]
	if res.Outcome != Failed || res.Status != StatusRetrying || ts.calls.Load() != 0 || !strings.Contains(res.Err.Error(), "vault token") {
		t.Errorf("outcome %s/%s after %d token requests (%v); want failed/retrying after none", res.Outcome, res.Status, ts.calls.Load(), res.Err)
	}
}

func TestNewerOutputIsNotOverwritten(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	later := time.Now().Add(3 * time.Hour).UTC().Format(time.RFC3339)
	ts := &tokens{fn: func(ctx context.Context, r oauth.Request) (*oauth.Token, error) {
		// Another run stores a later pair in the output while this grant is in flight.
		w.put("apps/out", map[string]any{"access_token": "at-later", "token_type": "Bearer", "expires_at": later})
		return issued("rt-new")(ctx, r)
	}}
	c := config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"}
	res := w.rotator(ts, c).Pass(context.Background())[0]
	if res.Outcome != RotatedElsewhere || res.ExpiresAt.UTC().Format(time.RFC3339) != later {
		t.Fatalf("outcome %s expiring %v (%v); want rotated_elsewhere with the stored token's expiry %s", res.Outcome, res.ExpiresAt, res.Err, later)
	}
	if d := w.data("apps/out"); d["access_token"] != "at-later" || d["expires_at"] != later {
		t.Errorf("the later access token was overwritten by an earlier one: %v", d["access_token"])
	}
	if w.data("stora/cred")["refresh_token"] != "rt-new" {
		t.Errorf("the new refresh token was not stored")
	}
}

func TestNewerRefreshTokenIsNotOverwritten(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	ts := &tokens{fn: func(ctx context.Context, r oauth.Request) (*oauth.Token, error) {
		// An operator re-authorizes meanwhile, or a run whose claim lapsed stores its own pair.
		w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-theirs"})
		return issued("rt-ours")(ctx, r)
	}}
	c := config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"}
	res := w.rotator(ts, c).Pass(context.Background())[0]
	if got := w.data("stora/cred")["refresh_token"]; got != "rt-theirs" {
		t.Errorf("refresh token %v, want the one stored meanwhile kept", got)
	}
	if res.Outcome != RotatedElsewhere {
		t.Errorf("outcome %s (%v), want rotated_elsewhere: Vault holds the other pair", res.Outcome, res.Err)
	}
	if _, err := w.vault.Client.KVv2("secret").Get(context.Background(), "apps/out"); err == nil {
		t.Errorf("an access token issued with the refresh token that lost was written to the output")
	}
}

func TestClaimWhoseAnswerWasLost(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	var first atomic.Bool
	h := &hookedStore{Store: w.store}
	h.update = func(ctx context.Context, path string, changes map[string]any, version int) (int, error) {
		v, err := w.store.Update(ctx, path, changes, version)
		if err == nil && first.CompareAndSwap(false, true) {
			// The claim landed, its answer was lost, the client's retry met check-and-set.
			return 0, vault.ErrVersionMismatch
		}
		return v, err
	}
	ts := &tokens{fn: issued("rt-new")}
	r := w.rotator(ts, config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "stora/cred"})
	r.Store = h
	if res := r.Pass(context.Background())[0]; res.Outcome != Rotated {
		t.Fatalf("%s %v: a claim of our own was taken for another's", res.Outcome, res.Err)
	}
	if d := w.data("stora/cred"); d["refresh_token"] != "rt-new" || d[keyClaim] != nil {
		t.Errorf("after the lost answer: refresh token %v, claim left %v", d["refresh_token"], d[keyClaim] != nil)
	}
}

func TestOutputWriteFailureIsNotALostRotation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	h := &hookedStore{Store: w.store}
	h.write = func(ctx context.Context, path string, data map[string]any, version int) (int, error) {
		if path == "apps/out" {
			return 0, errors.New("vault said 503: unavailable")
		}
		return w.store.Write(ctx, path, data, version)
	}
	r := w.rotator(&tokens{fn: issued("rt-new")}, config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"})
	r.Store, r.WriteDeadline, r.WriteBackoff = h, 300*time.Millisecond, 50*time.Millisecond
	res := r.Pass(context.Background())[0]
	if res.Outcome != Failed || res.Status != StatusRetrying {
		t.Errorf("outcome %s/%s, want failed/retrying: the refresh token was stored", res.Outcome, res.Status)
	}
	if d := w.data("stora/cred"); d["refresh_token"] != "rt-new" || d[keyClaim] != nil {
		t.Errorf("refresh token in Vault %v, claim left %v; want rt-new and the claim released", d["refresh_token"], d[keyClaim] != nil)
	}
}

// TestClaimHeldUntilTheOutputIsWritten: with the access token in an output secret of its own, the
// credential secret keeps the claim until the output is written, so that no other process finds
// the new refresh token unclaimed beside the old access token and spends it a second time. The
// claim is gone after.
func TestClaimHeldUntilTheOutputIsWritten(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	h := &hookedStore{Store: w.store}
	var atOutputWrite map[string]any
	h.write = func(ctx context.Context, path string, data map[string]any, version int) (int, error) {
		if path == "apps/out" {
			atOutputWrite = w.data("stora/cred")
		}
		return w.store.Write(ctx, path, data, version)
	}
	r := w.rotator(&tokens{fn: issued("rt-new")}, config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"})
	r.Store = h
	if res := r.Pass(context.Background())[0]; res.Outcome != Rotated {
		t.Fatalf("outcome %s: %v", res.Outcome, res.Err)
	}
	if atOutputWrite["refresh_token"] != "rt-new" || atOutputWrite[keyClaim] == nil {
		t.Errorf("when the output was written the credential secret held refresh token %v and claim %v; want rt-new, still claimed",
			atOutputWrite["refresh_token"], atOutputWrite[keyClaim] != nil)
	}
	if d := w.data("stora/cred"); d[keyClaim] != nil {
		t.Errorf("the claim was left after the rotation")
	}
}

func TestShutdownBeforeTheClaimSkips(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	ctx, cancel := context.WithCancel(context.Background())
	h := &hookedStore{Store: w.store}
	h.read = func(c context.Context, path string) (*vault.Secret, error) {
		cancel() // SIGTERM while Vault is being read
		return w.store.Read(c, path)
	}
	ts := &tokens{fn: issued("rt-new")}
	r := w.rotator(ts, config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "stora/cred"})
	r.Store = h
	res := r.Pass(ctx)
	if res[0].Outcome != Skipped || AnyFailed(res) || ts.calls.Load() != 0 {
		t.Errorf("outcome %s after %d token requests, want skipped after none", res[0].Outcome, ts.calls.Load())
	}
}

func TestNoMetadataPatchFailsBeforeAnyRequest(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	c := w.vault.Client
	if err := c.Sys().PutPolicy("no-patch", `path "secret/data/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/*" { capabilities = ["read"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	tok, err := c.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"no-patch"}})
	if err != nil {
		t.Fatal(err)
	}
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	store := openStore(t, w.vault.Addr, tok.Auth.ClientToken)
	ts := &tokens{fn: issued("rt-new")}
	r := w.rotator(ts, config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "stora/cred"})
	r.Store, r.WriteDeadline = store, 2*time.Second // were the pre-flight skipped, the refused write-back ends soon
	res := r.Pass(context.Background())[0]
	if res.Outcome != Failed || ts.calls.Load() != 0 || !strings.Contains(res.Err.Error(), "does not allow patch on secret/data/stora/cred") {
		t.Errorf("outcome %s after %d requests: %v; want failed on the metadata policy before any request", res.Outcome, ts.calls.Load(), res.Err)
	}
}

func TestShortVaultTokenIsRenewedOrReadAgain(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/short", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt"})
	c := []config.Client{{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/short", Output: "stora/short"}}
	short := func(renewable bool) string {
		tok, err := w.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{TTL: "60s", Renewable: &renewable, Policies: []string{"root"}})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Auth.ClientToken
	}
	t.Run("renewable", func(t *testing.T) {
		ts := &tokens{fn: issued("rt-renewed")}
		r := &Rotator{Store: openStore(t, w.vault.Addr, short(true)), Tokens: ts, RenewBefore: 30 * time.Minute, Clients: c, Force: true}
		if res := r.Pass(context.Background())[0]; res.Outcome != Rotated || ts.calls.Load() != 1 {
			t.Errorf("a renewable 60 s Vault token: %s after %d requests (%v), want rotated", res.Outcome, ts.calls.Load(), res.Err)
		}
	})
	t.Run("token_file read again", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "vault-token")
		if err := os.WriteFile(file, []byte(short(false)), 0o600); err != nil {
			t.Fatal(err)
		}
		store, err := vault.Open(context.Background(), config.Vault{Address: w.vault.Addr, KVMount: "secret", Auth: config.Auth{Method: config.AuthToken, TokenFile: file}})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(w.vault.Token), 0o600); err != nil { // Vault Agent refreshed the sink
			t.Fatal(err)
		}
		ts := &tokens{fn: func(ctx context.Context, r oauth.Request) (*oauth.Token, error) {
			tok, err := issued("rt-reread")(ctx, r)
			tok.AccessToken = "at-after-reread"
			return tok, err
		}}
		r := &Rotator{Store: store, Tokens: ts, RenewBefore: 30 * time.Minute, Clients: c, Force: true}
		if res := r.Pass(context.Background())[0]; res.Outcome != Rotated || ts.calls.Load() != 1 {
			t.Errorf("a short token, token_file rewritten: %s after %d requests (%v), want rotated", res.Outcome, ts.calls.Load(), res.Err)
		}
	})
}
