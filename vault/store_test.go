package vault

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
	"token-rotator/internal/testenv"
)

func open(t *testing.T, v *testenv.Vault, mount string) (*Store, error) {
	t.Setenv("VAULT_TOKEN", v.Token)
	return Open(context.Background(), config.Vault{Address: v.Addr, KVMount: mount, Auth: config.Auth{Method: config.AuthToken}})
}

func TestStoreKV2(t *testing.T) {
	v := testenv.StartVault(t)
	s, err := open(t, v, "secret")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if s.KVVersion() != 2 {
		t.Fatalf("KV version %d, want 2", s.KVVersion())
	}
	if _, err := s.Read(ctx, "nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "secret/nope") {
		t.Errorf("missing secret: %v", err)
	}
	ver, err := s.Write(ctx, "a", map[string]any{"k": "v1"}, 0)
	if err != nil || ver != 1 {
		t.Fatalf("create: version %d err %v", ver, err)
	}
	if _, err := s.Write(ctx, "a", map[string]any{"k": "v2"}, 0); !errors.Is(err, ErrVersionMismatch) {
		t.Errorf("create over an existing secret: %v, want ErrVersionMismatch", err)
	}
	if ver, err = s.Write(ctx, "a", map[string]any{"k": "v2"}, 1); err != nil || ver != 2 {
		t.Fatalf("update at version 1: version %d err %v", ver, err)
	}
	got, err := s.Read(ctx, "a")
	if err != nil || got.Version != 2 || got.Data["k"] != "v2" {
		t.Fatalf("read %+v %v", got, err)
	}
	if err := v.Client.KVv2("secret").Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(ctx, "a"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("deleted latest version: %v", err)
	}
}

func TestStoreKV1AndBadMounts(t *testing.T) {
	v := testenv.StartVault(t)
	if err := v.Client.Sys().Mount("kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	s, err := open(t, v, "kv1")
	if err != nil || s.KVVersion() != 1 {
		t.Fatalf("kv1: version %v err %v", s, err)
	}
	ctx := context.Background()
	if _, err := s.Write(ctx, "a", map[string]any{"k": "v"}, 7); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Read(ctx, "a"); err != nil || got.Data["k"] != "v" || got.Version != 0 {
		t.Errorf("kv1 read %+v %v", got, err)
	}
	if _, err := s.Read(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("kv1 missing: %v", err)
	}
	if _, err := open(t, v, "no-such-mount"); err == nil || !strings.Contains(err.Error(), "no-such-mount") {
		t.Errorf("missing mount: %v", err)
	}
	if _, err := open(t, v, "sys"); err == nil {
		t.Errorf("a non-KV mount was accepted")
	}
}

func TestLoginFailures(t *testing.T) {
	v := testenv.StartVault(t)
	t.Setenv("VAULT_TOKEN", "")
	_, err := Open(context.Background(), config.Vault{Address: v.Addr, KVMount: "secret", Auth: config.Auth{Method: config.AuthToken}})
	if err == nil || !strings.Contains(err.Error(), "no token") {
		t.Errorf("no token: %v", err)
	}
	t.Setenv("VAULT_TOKEN", "wrong-token-value-123456")
	_, err = Open(context.Background(), config.Vault{Address: v.Addr, KVMount: "secret", Auth: config.Auth{Method: config.AuthToken}})
	if err == nil || strings.Contains(err.Error(), "wrong-token-value-123456") {
		t.Errorf("wrong token: %v (must fail without echoing the token)", err)
	}
}

func TestSealedAndUnreachableVault(t *testing.T) {
	v := testenv.StartVault(t)
	if err := v.Client.Sys().Seal(); err != nil {
		t.Fatal(err)
	}
	if _, err := open(t, v, "secret"); err == nil || !strings.Contains(err.Error(), "sealed") || !strings.Contains(err.Error(), v.Addr) {
		t.Errorf("sealed Vault: %v, want an error saying sealed and naming %s", err, v.Addr)
	}
	t.Setenv("VAULT_TOKEN", "x")
	_, err := Open(context.Background(), config.Vault{Address: "http://127.0.0.1:1", KVMount: "secret", Auth: config.Auth{Method: config.AuthToken}})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), "refused") {
		t.Errorf("unreachable Vault: %v", err)
	}
}

func TestDestroyedAndWrongTypeSecrets(t *testing.T) {
	v := testenv.StartVault(t)
	s, err := open(t, v, "secret")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kv := v.Client.KVv2("secret")
	if _, err := kv.Put(ctx, "d", map[string]any{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	if err := kv.Destroy(ctx, "d", []int{1}); err != nil {
		t.Fatal(err)
	}
	var deleted *DeletedError
	if _, err := s.Read(ctx, "d"); !errors.As(err, &deleted) || deleted.Version != 1 || !strings.Contains(err.Error(), "secret/d") {
		t.Errorf("destroyed latest version: %v", err)
	}
	// A secret written by hand with non-string values reads back as it is; the rotation judges types.
	if _, err := kv.Put(ctx, "typed", map[string]any{"client_id": 42, "nested": map[string]any{"a": 1}}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Read(ctx, "typed"); err != nil || got.Data["nested"] == nil {
		t.Errorf("typed secret: %+v %v", got, err)
	}
}

// TestCleanError: Vault's multi-error texts become one line of its messages.
func TestCleanError(t *testing.T) {
	for _, tc := range []struct {
		errors []string
		want   string
	}{
		{[]string{"1 error occurred:\n\t* permission denied\n\n"}, "vault said 403: permission denied"},
		{[]string{"2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"}, "vault said 403: permission denied, invalid token"},
		{[]string{"Vault is sealed"}, "vault said 403: Vault is sealed"},
		{nil, "vault said 403: Forbidden"},
	} {
		if got := cleanError(&api.ResponseError{StatusCode: 403, Errors: tc.errors}).Error(); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.errors, got, tc.want)
		}
	}
}

// TestRefusalOfATokenAnotherWorkerReplaced: a 403 for a token that another worker's login has
// replaced meanwhile is the old token's, not the policy's: the operation is sent again with the
// new token (before, the lookup of the new token made it look like the policy's refusal).
func TestRefusalOfATokenAnotherWorkerReplaced(t *testing.T) {
	v := testenv.StartVault(t)
	newToken := func() string {
		s, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{TTL: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		return s.Auth.ClientToken
	}
	t1, t2 := newToken(), newToken()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(t1), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := Open(ctx, config.Vault{Address: v.Addr, KVMount: "secret", Auth: config.Auth{Method: config.AuthToken, TokenFile: file}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Client.Auth().Token().RevokeTree(t1); err != nil {
		t.Fatal(err)
	}
	calls := 0
	err = s.withLogin(ctx, func() error {
		calls++
		_, err := s.client.Logical().ReadWithContext(ctx, "secret/data/x")
		if calls == 1 {
			s.client.SetToken(t2) // another worker logged in while this request was refused
		}
		return err
	})
	if err != nil || calls != 2 {
		t.Errorf("refused with a token replaced meanwhile: %d calls, %v; want it sent again with the new token", calls, err)
	}
}
