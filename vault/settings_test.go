package vault

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
	"token-rotator/internal/testenv"
)

// TestRetentionSettings reads the mount's and a secret's KV settings and a version's deletion
// time, and pins down the rules of Vault's that the retention checks rely on: a version is
// deleted after the shorter of the secret's and the mount's delete_version_after, and a secret's
// own max_versions overrides the mount's.
func TestRetentionSettings(t *testing.T) {
	v := testenv.StartVault(t)
	s, err := open(t, v, "secret")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kv := v.Client.KVv2("secret")

	if m, err := s.MountSettings(ctx); err != nil || m != (KVSettings{Mount: "secret"}) {
		t.Errorf("fresh mount: %+v %v, want zero settings", m, err)
	}
	if _, err := kv.Put(ctx, "plain", map[string]any{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Read(ctx, "plain"); err != nil || !got.DeletionTime.IsZero() || got.CreatedTime.IsZero() {
		t.Errorf("plain secret: created %v deletion %v err %v, want a creation time and no deletion", got.CreatedTime, got.DeletionTime, err)
	}

	if _, err := v.Client.Logical().Write("secret/config", map[string]any{"delete_version_after": "3h", "max_versions": 1}); err != nil {
		t.Fatal(err)
	}
	if m, err := s.MountSettings(ctx); err != nil || m.DeleteVersionAfter != 3*time.Hour || m.MaxVersions != 1 {
		t.Errorf("mount settings %+v %v, want 3h and 1", m, err)
	}
	for _, c := range []struct {
		path string
		own  time.Duration
		want time.Duration
	}{
		{"shorter-own", time.Hour, time.Hour},
		{"longer-own", 5 * time.Hour, 3 * time.Hour},
		{"none-own", 0, 3 * time.Hour},
	} {
		if err := kv.PutMetadata(ctx, c.path, api.KVMetadataPutInput{DeleteVersionAfter: c.own, MaxVersions: 5}); err != nil {
			t.Fatal(err)
		}
		if own, err := s.SecretSettings(ctx, c.path); err != nil || own.DeleteVersionAfter != c.own || own.MaxVersions != 5 {
			t.Errorf("%s: settings %+v %v", c.path, own, err)
		}
		for i := 0; i < 3; i++ {
			if _, err := kv.Put(ctx, c.path, map[string]any{"i": i}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Read(ctx, c.path)
		if err != nil {
			t.Fatal(err)
		}
		if after := got.DeletionTime.Sub(got.CreatedTime); after != c.want {
			t.Errorf("%s: deleted %v after writing, want %v", c.path, after, c.want)
		}
		if _, err := kv.GetVersion(ctx, c.path, 1); err != nil {
			t.Errorf("%s: version 1 of 3 gone (%v): the secret's max_versions 5 should override the mount's 1", c.path, err)
		}
	}
	if _, err := s.SecretSettings(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("settings of a missing secret: %v", err)
	}

	// A token that may read the secrets but not their settings: a 403 the caller can tell apart.
	if err := v.Client.Sys().PutPolicy("data-only", `path "secret/data/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	tok, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"data-only"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_TOKEN", tok.Auth.ClientToken)
	limited, err := Open(ctx, config.Vault{Address: v.Addr, KVMount: "secret", Auth: config.Auth{Method: config.AuthToken}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := limited.MountSettings(ctx); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("mount settings without read on secret/config: %v, want ErrPermissionDenied", err)
	}
	if _, err := limited.SecretSettings(ctx, "plain"); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("secret settings without read on its metadata: %v, want ErrPermissionDenied", err)
	}
}
