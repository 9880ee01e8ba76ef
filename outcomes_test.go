package main

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"token-rotator/rotate"
)

func TestDryRunWritesNothing(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	// Neither refresh_token nor code: a real pass would fail and record it in the metadata.
	e.put("stora/partner", map[string]any{"client_id": id, "client_secret": secret})
	e.put("stora/cc", map[string]any{"client_id": id, "client_secret": secret})
	cfg := e.config("  - name: partner\n    grant: authorization_code\n    secret: stora/partner\n" +
		"  - name: cc\n    grant: client_credentials\n    scope: public\n    secret: stora/cc\n    output: apps/cc\n")
	type snapshot struct {
		data map[string]any
		meta any
	}
	take := func() map[string]snapshot {
		out := map[string]snapshot{}
		for _, p := range []string{"stora/partner", "stora/cc"} {
			m, err := e.vault.Client.KVv2("secret").GetMetadata(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			out[p] = snapshot{e.get(p).Data, m}
		}
		return out
	}
	before := take()
	exit, out := e.run("--config", cfg, "--dry-run")
	if exit != 1 || !strings.Contains(out, "neither refresh_token nor code") {
		t.Errorf("dry run: exit %d, want 1 naming the missing refresh token:\n%s", exit, out)
	}
	if after := take(); !reflect.DeepEqual(before, after) {
		t.Errorf("a dry run changed Vault:\nbefore %+v\nafter  %+v", before, after)
	}
	if _, err := e.vault.Client.KVv2("secret").Get(context.Background(), "apps/cc"); err == nil {
		t.Errorf("a dry run created the output secret")
	}
	if n := len(e.stora.Requests()); n != 0 {
		t.Errorf("a dry run sent %d token requests", n)
	}
	t.Logf("RELIABILITY outcome | --dry-run over a secret with neither refresh_token nor code | exit %d | data and metadata unchanged: %v; %d token requests", exit, reflect.DeepEqual(before, take()), len(e.stora.Requests()))
}

func TestValidateFailsWhereThePassWould(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	rt := e.stora.IssueRefreshToken(id, "public")
	e.stora.RevokeRefreshToken(rt)
	e.put("stora/partner", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": rt})
	cfg := e.config("  - name: partner\n    grant: authorization_code\n    secret: stora/partner\n")
	if exit, out := e.run("--config", cfg, "--once"); exit != 1 {
		t.Fatalf("--once with a revoked refresh token: exit %d\n%s", exit, out)
	}
	exit, out := e.run("validate", "--config", cfg)
	if exit != 1 || !strings.Contains(out, "partner: "+rotate.StatusReauthorizationRequired) {
		t.Errorf("validate of a client waiting for re-authorization: exit %d, want 1 naming it:\n%s", exit, out)
	}
	exit, out = e.run("status", "--config", cfg)
	if exit != 1 || !strings.Contains(out, rotate.StatusReauthorizationRequired) {
		t.Errorf("status: exit %d:\n%s", exit, out)
	}
}
