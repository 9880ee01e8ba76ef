package rotate

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
	"token-rotator/oauth"
)

// A version keeps the deletion time it was written with: once the setting is removed (what
// validate tells the operator to do) or changed, the version Vault deletes on schedule is still
// the retention's doing, never an operator's offboarding, and the client fails, naming it.
func TestRetentionDeletionAfterTheSettingWasRemoved(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	kv := w.vault.Client.KVv2("secret")
	w.put("stora/fleet", map[string]any{"client_id": "id", "client_secret": "s"})
	if err := kv.PutMetadata(ctx, "stora/fleet/connections/op-1", api.KVMetadataPutInput{DeleteVersionAfter: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	w.put("stora/fleet/connections/op-1", map[string]any{"refresh_token": "rt-only-copy"})
	// The operator follows validate's fix before the version's scheduled deletion.
	if err := kv.PutMetadata(ctx, "stora/fleet/connections/op-1", api.KVMetadataPutInput{DeleteVersionAfter: 0}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // Vault deletes the version on the schedule it was written with
	m, _ := kv.GetMetadata(ctx, "stora/fleet/connections/op-1")
	if v := m.Versions["1"]; true {
		t.Logf("version 1: created %s, deletion %s, gap %v", v.CreatedTime.Format(time.RFC3339Nano), v.DeletionTime.Format(time.RFC3339Nano), v.DeletionTime.Sub(v.CreatedTime))
	}
	fleet := config.Client{Name: "fleet", Grant: config.GrantAuthorizationCode, Secret: "stora/fleet", Connections: "stora/fleet/connections", OutputPrefix: "apps/fleet"}
	r := w.rotator(&tokens{fn: issued("rt-new")}, fleet)
	res := r.Pass(ctx)
	checks := w.rotator(&tokens{fn: issued("rt-new")}, fleet).Validate(ctx)
	if res[0].Outcome != Failed || res[0].Gone || checks[0].Problem == "" {
		t.Errorf("version deleted by delete_version_after (setting since removed): pass %s (gone %v), validate %q; want failed with the undelete command", res[0].Outcome, res[0].Gone, checks[0].Problem)
	}
}

// The write-back's last attempt before its deadline is the last: a Vault that fails fast (sealed,
// 503, connection refused) never gets a burst of writes in the final second.
func TestWriteBackLastSecondIsNotABusyLoop(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	var writes atomic.Int64
	h := &hookedStore{Store: w.store}
	h.update = func(ctx context.Context, path string, changes map[string]any, version int) (int, error) {
		if _, writeBack := changes[keyRefreshToken]; writeBack {
			writes.Add(1)
			return 0, errors.New("vault said 503: sealed")
		}
		return w.store.Update(ctx, path, changes, version)
	}
	ts := &tokens{fn: issued("rt-new")}
	r := w.rotator(ts, config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"})
	r.Store, r.WriteDeadline, r.WriteBackoff = h, 3*time.Second, 2*time.Second
	res := r.Pass(context.Background())[0]
	if n := writes.Load(); n > 10 {
		t.Errorf("%d write-back attempts in a 3 s deadline with a 2 s backoff (outcome %s/%s); want a handful", n, res.Outcome, res.Status)
	}
}

// The same with real Vault answers: the job's policy loses patch on the credential secret after
// the pre-flight (a 403, which the Vault client does not retry and the store answers with a new
// login): no burst of PATCH, 403 and login in the last second.
func TestWriteBackLastSecondAgainstVault(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	if err := w.vault.Client.Sys().PutPolicy("ro", `path "secret/data/stora/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	tok, err := w.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"ro"}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	readOnly := openStore(t, w.vault.Addr, tok.Auth.ClientToken)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	var writes atomic.Int64
	var last time.Time
	h := &hookedStore{Store: w.store}
	h.update = func(ctx context.Context, path string, changes map[string]any, version int) (int, error) {
		if _, writeBack := changes[keyRefreshToken]; writeBack {
			writes.Add(1)
			last = time.Now()
			return readOnly.Update(ctx, path, changes, version)
		}
		return w.store.Update(ctx, path, changes, version)
	}
	r := w.rotator(&tokens{fn: issued("rt-new")}, config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"})
	r.Store, r.WriteDeadline, r.WriteBackoff = h, 3*time.Second, 2*time.Second
	start := time.Now()
	res := r.Pass(context.Background())[0]
	t.Logf("%d write attempts, last at %v (outcome %s/%s)", writes.Load(), last.Sub(start).Round(time.Millisecond), res.Outcome, res.Status)
	if n := writes.Load(); n > 10 {
		t.Errorf("%d PATCH attempts (each a 403 and a new login) in a 3 s deadline with a 2 s backoff; want a handful", n)
	}
}

// A configured client's secret is never gone (gone.go): one deleted during its rotation is not
// Result.Gone, so its metrics series stay while its output still holds a live access token and
// every later pass fails.
func TestConfiguredClientIsNeverGone(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.put("stora/cc", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old"})
	ts := &tokens{}
	ts.fn = func(ctx context.Context, r oauth.Request) (*oauth.Token, error) {
		if err := w.vault.Client.KVv2("secret").Delete(ctx, "stora/cc"); err != nil {
			t.Error(err)
		}
		return issued("rt-new")(ctx, r)
	}
	c := config.Client{Name: "cc", Grant: config.GrantAuthorizationCode, Secret: "stora/cc", Output: "apps/cc"}
	res := w.rotator(ts, c).Pass(context.Background())[0]
	if res.Gone {
		t.Errorf("configured client %s: outcome %s with Gone set; its metrics series are dropped though it stays configured", c.Name, res.Outcome)
	}
}

var _ = oauth.ErrInvalidGrant
var _ = strings.Contains
