package deploy

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
	"token-rotator/internal/testenv"
	"token-rotator/oauth"
	"token-rotator/rotate"
)

// TestShippedPolicyChecksRetention proves the job's policy is enough for the checks of KV settings
// that can delete a refresh token: validate reads the mount's settings and each credential
// secret's own (a secret's max_versions is visible nowhere else), and a full pass of the shipped
// config still rotates everything, warning once for the mount and once for the secret whose own
// setting is shorter.
func TestShippedPolicyChecksRetention(t *testing.T) {
	cfg := shippedConfig(t, loadManifests(t))
	v := testenv.StartVault(t)
	runSetup(t, v)
	stora := testenv.StartStora(t)
	ctx := context.Background()
	kv := v.Client.KVv2("secret")

	// As an admin might have left them: every version deleted after a day; one connection's after
	// an hour; the partner's secret keeping a single version.
	if _, err := v.Client.Logical().Write("secret/config", map[string]any{"delete_version_after": "24h"}); err != nil {
		t.Fatal(err)
	}
	for path, in := range map[string]api.KVMetadataPutInput{
		"stora/partner":                      {MaxVersions: 1},
		"stora/fleet/connections/operator-1": {DeleteVersionAfter: time.Hour},
	} {
		if err := kv.PutMetadata(ctx, path, in); err != nil {
			t.Fatal(err)
		}
	}
	clients := append([]config.Client(nil), cfg.Clients...)
	for i, c := range clients {
		clients[i].TokenURL = stora.TokenURL
		id, secret := stora.AddClient()
		data := map[string]any{"client_id": id, "client_secret": secret}
		if c.Grant == config.GrantAuthorizationCode && c.Connections == "" {
			data["refresh_token"] = stora.IssueRefreshToken(id, "")
		}
		if _, err := kv.Put(ctx, c.Secret, data); err != nil {
			t.Fatal(err)
		}
		for _, op := range []string{"operator-1", "eu/operator-2"} {
			if c.Connections != "" {
				if _, err := kv.Put(ctx, c.Connections+"/"+op, map[string]any{"refresh_token": stora.IssueRefreshToken(id, "")}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	store := openWithToken(t, v, tokenWith(t, v, "token-rotator").Token())
	newRotator := func(logs *testenv.SyncBuffer) *rotate.Rotator {
		return &rotate.Rotator{Store: store, Tokens: &oauth.Client{}, Clients: clients, RenewBefore: cfg.RenewBefore,
			Concurrency: cfg.Concurrency, PassDeadline: cfg.PassDeadline,
			Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	}

	var validateLogs testenv.SyncBuffer
	problems := map[string]string{}
	for _, c := range newRotator(&validateLogs).Validate(ctx) {
		problems[c.Name] = c.Problem
	}
	for name, want := range map[string][]string{
		"acme": nil, // client credentials: no refresh token to lose
		"partner": {"delete_version_after=24h0m0s set on the mount (secret/config)",
			"max_versions=1 set on the secret"},
		"partner-fleet/operator-1":    {"delete_version_after=1h0m0s and 24h0m0s set on the secret and the mount (secret/config)"},
		"partner-fleet/eu/operator-2": {"delete_version_after=24h0m0s set on the mount (secret/config)"},
	} {
		p, ok := problems[name]
		if !ok {
			t.Errorf("validate: no line for %s (%v)", name, problems)
		}
		for _, w := range want {
			if !strings.Contains(p, w) {
				t.Errorf("validate %s: %q\nwant it to contain %q", name, p, w)
			}
		}
		if want == nil && p != "" {
			t.Errorf("validate %s: %q, want ok", name, p)
		}
	}
	if strings.Contains(validateLogs.String(), "not readable") {
		t.Errorf("the job policy could not read the KV settings:\n%s", validateLogs.String())
	}

	var logs testenv.SyncBuffer
	rot := newRotator(&logs)
	for _, r := range rot.Pass(ctx) {
		if r.Outcome != rotate.Rotated {
			t.Errorf("%s: %s %v", r.Client, r.Outcome, r.Err)
		}
	}
	var warned []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var l struct{ Msg, Path, Setting, Value string }
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		if l.Msg == "KV retention can delete the refresh token" {
			warned = append(warned, l.Path+" "+l.Setting+"="+l.Value)
		}
	}
	slices.Sort(warned)
	want := []string{"secret/config delete_version_after=24h0m0s", "stora/fleet/connections/operator-1 delete_version_after=1h0m0s"}
	if !slices.Equal(warned, want) {
		t.Errorf("pass warned %q, want %q", warned, want)
	}
}
