package rotate

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
	"token-rotator/internal/testenv"
	"token-rotator/oauth"
	"token-rotator/vault"
)

// settingsCounter is a real store that counts the retention checks' own requests.
type settingsCounter struct {
	*vault.Store
	mount, secret atomic.Int32
}

func (c *settingsCounter) MountSettings(ctx context.Context) (vault.KVSettings, error) {
	c.mount.Add(1)
	return c.Store.MountSettings(ctx)
}

func (c *settingsCounter) SecretSettings(ctx context.Context, path string) (vault.KVSettings, error) {
	c.secret.Add(1)
	return c.Store.SecretSettings(ctx, path)
}

// warning is one retention warning as logged.
type warning struct{ Path, Setting, Value, SetOn string }

// retentionWarnings returns the retention warnings in JSON log lines.
func retentionWarnings(t *testing.T, logs string) []warning {
	t.Helper()
	var out []warning
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var l struct {
			Msg, Level, Path, Setting, Value string
			SetOn                            string `json:"set_on"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if l.Msg == "KV retention can delete the refresh token" {
			if l.Level != "WARN" {
				t.Errorf("retention logged at %s, want WARN", l.Level)
			}
			out = append(out, warning{l.Path, l.Setting, l.Value, l.SetOn})
		}
	}
	return out
}

func jsonLogger(buf *testenv.SyncBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fixes returns the vault commands a Validate problem gives as its fix.
func fixes(problem string) [][]string {
	var out [][]string
	for _, m := range regexp.MustCompile(`\(fix: ([^)]*)\)`).FindAllStringSubmatch(problem, -1) {
		for _, cmd := range strings.Split(m[1], " and ") {
			if strings.HasPrefix(cmd, "vault ") {
				out = append(out, strings.Fields(cmd)[1:])
			}
		}
	}
	return out
}

func TestRetentionSettingsThatCanDeleteARefreshToken(t *testing.T) {
	t.Parallel()
	acme := config.Client{Name: "acme", Grant: config.GrantClientCredentials, Scope: "public.contact:read", Secret: "stora/acme", Output: "stora/acme"}
	secretMeta := func(in api.KVMetadataPutInput) func(*world) {
		return func(w *world) {
			if err := w.vault.Client.KVv2("secret").PutMetadata(context.Background(), "stora/partner", in); err != nil {
				w.t.Fatal(err)
			}
		}
	}
	mountConfig := func(data map[string]any) func(*world) {
		return func(w *world) {
			if _, err := w.vault.Client.Logical().Write("secret/config", data); err != nil {
				w.t.Fatal(err)
			}
		}
	}
	for _, c := range []struct {
		name   string
		client config.Client
		setup  []func(*world)
		// want: in Validate's problem for the client, all of them; none for no problem.
		want []string
		// warnings: what two passes of one Rotator log, each once.
		warnings []warning
	}{
		{
			name: "delete_version_after on the secret", client: partner,
			setup: []func(*world){secretMeta(api.KVMetadataPutInput{DeleteVersionAfter: time.Hour})},
			want: []string{"credential secret stora/partner: delete_version_after=1h0m0s set on the secret soft-deletes",
				"(fix: vault kv metadata put -mount=secret -delete-version-after=0s stora/partner)"},
			warnings: []warning{{"stora/partner", "delete_version_after", "1h0m0s", "the secret"}},
		},
		{
			name: "delete_version_after on the mount", client: partner,
			setup: []func(*world){mountConfig(map[string]any{"delete_version_after": "2h"})},
			want: []string{"delete_version_after=2h0m0s set on the mount (secret/config) soft-deletes",
				"(fix: vault write secret/config delete_version_after=0s)"},
			// Once for the mount; the secret's version, deleted by the mount's setting, adds nothing.
			warnings: []warning{{"secret/config", "delete_version_after", "2h0m0s", "the mount (secret/config)"}},
		},
		{
			name: "delete_version_after on both: the shorter applies", client: partner,
			setup: []func(*world){mountConfig(map[string]any{"delete_version_after": "3h"}), secretMeta(api.KVMetadataPutInput{DeleteVersionAfter: time.Hour})},
			want:  []string{"delete_version_after=1h0m0s and 3h0m0s set on the secret and the mount (secret/config)"},
			warnings: []warning{{"secret/config", "delete_version_after", "3h0m0s", "the mount (secret/config)"},
				{"stora/partner", "delete_version_after", "1h0m0s", "the secret"}},
		},
		{
			// The pass cannot see a secret's own max_versions without a request per target.
			name: "max_versions 1 on the secret", client: partner,
			setup: []func(*world){secretMeta(api.KVMetadataPutInput{MaxVersions: 1})},
			want: []string{"max_versions=1 set on the secret keeps no older version",
				"(fix: vault kv metadata put -mount=secret -max-versions=0 stora/partner)"},
		},
		{
			name: "max_versions 1 on the mount", client: partner,
			setup:    []func(*world){mountConfig(map[string]any{"max_versions": 1})},
			want:     []string{"max_versions=1 set on the mount (secret/config)", "(fix: vault write secret/config max_versions=10)"},
			warnings: []warning{{"secret/config", "max_versions", "1", "the mount (secret/config)"}},
		},
		{
			name: "the secret's max_versions overrides the mount's 1", client: partner,
			setup:    []func(*world){mountConfig(map[string]any{"max_versions": 1}), secretMeta(api.KVMetadataPutInput{MaxVersions: 5})},
			warnings: []warning{{"secret/config", "max_versions", "1", "the mount (secret/config)"}},
		},
		{name: "clean", client: partner},
		{
			// client credentials hold no refresh token: nothing to lose.
			name: "client credentials are not checked", client: acme,
			setup: []func(*world){mountConfig(map[string]any{"delete_version_after": "2h"})},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			for _, f := range c.setup {
				f(w)
			}
			w.put(c.client.Secret, map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt"})
			ctx := context.Background()

			validate := func() string {
				checks := w.rotator(&tokens{fn: issued("x")}, c.client).Validate(ctx)
				if len(checks) != 1 {
					t.Fatalf("checks %+v", checks)
				}
				return checks[0].Problem
			}
			problem := validate()
			t.Logf("validate: %s", problem)
			for _, want := range c.want {
				if !strings.Contains(problem, want) {
					t.Errorf("validate: %q\nwant it to contain %q", problem, want)
				}
			}
			if len(c.want) == 0 && problem != "" {
				t.Errorf("validate: %q, want no problem", problem)
			}

			// Two passes of one Rotator, as a daemon runs them: each finding is logged once, and
			// the only request of the check is one read of the mount's settings.
			var logs testenv.SyncBuffer
			store := &settingsCounter{Store: w.store}
			ts := &tokens{fn: func(ctx context.Context, r oauth.Request) (*oauth.Token, error) {
				tok, err := issued("rt-"+randomID())(ctx, r) // a new pair each time, as a server issues
				tok.AccessToken = "at-" + randomID()
				return tok, err
			}}
			r := &Rotator{Store: store, Tokens: ts, Clients: []config.Client{c.client}, RenewBefore: 30 * time.Minute, Logger: jsonLogger(&logs)}
			for i, want := range []Outcome{Rotated, NotDue} {
				if res := r.Pass(ctx); res[0].Outcome != want {
					t.Fatalf("pass %d: %s %v, want %s", i+1, res[0].Outcome, res[0].Err, want)
				}
			}
			got := retentionWarnings(t, logs.String())
			if !sameElements(got, c.warnings) {
				t.Errorf("warnings over two passes: %+v\nwant %+v", got, c.warnings)
			}
			wantMountReads := int32(1)
			if c.client.Grant == config.GrantClientCredentials {
				wantMountReads = 0
			}
			if store.mount.Load() != wantMountReads || store.secret.Load() != 0 {
				t.Errorf("two passes read the mount's settings %d times and secrets' %d times, want %d and 0",
					store.mount.Load(), store.secret.Load(), wantMountReads)
			}
			if problem == "" {
				return
			}

			// The fix validate prints works: run it with the vault CLI, let a rotation write a
			// version under the new settings, and validate has nothing left to say.
			for _, args := range fixes(problem) {
				cmd := exec.Command(testenv.RequireVault(t), args...)
				cmd.Env = append(os.Environ(), "VAULT_ADDR="+w.vault.Addr, "VAULT_TOKEN="+w.vault.Token, "HOME="+t.TempDir())
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("vault %s: %v\n%s", strings.Join(args, " "), err, out)
				}
			}
			if p := validate(); strings.Contains(c.want[0], "delete_version_after") &&
				!strings.Contains(p, "set on the secret or mount when the latest version was written (Vault still deletes it at") {
				// The version read was written under the old setting: Vault still deletes it.
				t.Errorf("validate after the fix, before a new version: %q, want the earlier setting named", p)
			}
			forced := w.rotator(ts, c.client)
			forced.Force = true
			if res := forced.Pass(ctx); res[0].Outcome != Rotated {
				t.Fatalf("forced pass: %s %v", res[0].Outcome, res[0].Err)
			}
			if p := validate(); p != "" {
				t.Errorf("validate after the fix and a new version: %q, want ok", p)
			}
		})
	}
}

// TestRetentionWithoutPermission runs the checks with the policy the job had before they existed:
// no read on the mount's settings or the secrets' metadata. Nothing fails; validate and the pass
// fall back to the deletion time the read of the secret shows, and validate asks for metadata
// only until Vault first refuses.
func TestRetentionWithoutPermission(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	if err := w.vault.Client.Sys().PutPolicy("old-job", `
path "secret/data/stora/*"     { capabilities = ["read", "patch"] }
path "secret/metadata/stora/*" { capabilities = ["patch", "list"] }
path "sys/capabilities-self"   { capabilities = ["update"] }
path "auth/token/lookup-self"  { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	tok, err := w.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"old-job"}, NoDefaultPolicy: true})
	if err != nil {
		t.Fatal(err)
	}
	second := config.Client{Name: "second", Grant: config.GrantAuthorizationCode, Secret: "stora/second", Output: "stora/second"}
	for _, p := range []string{"stora/partner", "stora/second"} {
		if err := w.vault.Client.KVv2("secret").PutMetadata(ctx, p, api.KVMetadataPutInput{DeleteVersionAfter: time.Hour}); err != nil {
			t.Fatal(err)
		}
		w.put(p, map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt"})
	}
	var logs testenv.SyncBuffer
	store := &settingsCounter{Store: openStore(t, w.vault.Addr, tok.Auth.ClientToken)}
	r := &Rotator{Store: store, Tokens: &tokens{fn: issued("rt-new")}, Clients: []config.Client{partner, second},
		RenewBefore: 30 * time.Minute, Logger: jsonLogger(&logs)}

	checks := r.Validate(ctx)
	for _, c := range checks {
		if !strings.Contains(c.Problem, "delete_version_after=1h0m0s set on the mount (secret/config) or the secret") {
			t.Errorf("validate %s: %q", c.Name, c.Problem)
		}
	}
	if n := store.secret.Load(); n != 1 {
		t.Errorf("validate asked for %d secrets' metadata, want 1: the first refusal stands for all", n)
	}
	for _, res := range r.Pass(ctx) {
		if res.Outcome != Rotated {
			t.Errorf("%s: %s %v", res.Client, res.Outcome, res.Err)
		}
	}
	want := []warning{{"stora/partner", "delete_version_after", "1h0m0s", "the mount (secret/config) or the secret"},
		{"stora/second", "delete_version_after", "1h0m0s", "the mount (secret/config) or the secret"}}
	if got := retentionWarnings(t, logs.String()); !sameElements(got, want) {
		t.Errorf("warnings %+v, want %+v", got, want)
	}
	if !strings.Contains(logs.String(), `"level":"DEBUG","msg":"KV mount settings not readable`) {
		t.Errorf("no debug line for the refused mount settings:\n%s", logs.String())
	}
	if store.mount.Load() != 1 {
		t.Errorf("mount settings asked %d times, want 1", store.mount.Load())
	}
}

func sameElements[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
