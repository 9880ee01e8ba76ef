package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"token-rotator/internal/testenv"
)

// partnerEnv is a partner client with two connections, op-1 and op-2, each holding a live refresh
// token, and a client credentials client acme, none with an access token yet.
func partnerEnv(t *testing.T) (*env, string) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	e.put("stora/partner", map[string]any{"client_id": id, "client_secret": secret})
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret})
	for _, op := range []string{"op-1", "op-2"} {
		e.put("stora/partner/connections/"+op, map[string]any{"refresh_token": e.stora.IssueRefreshToken(id, "public.contact:read")})
	}
	return e, e.config("  - name: partner\n    grant: authorization_code\n    scope: public.contact:read\n    secret: stora/partner\n    connections: stora/partner/connections\n" +
		"  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n")
}

// rotated reports which of the partner's connections and acme hold an access token.
func (e *env) rotated() map[string]bool {
	got := map[string]bool{}
	for _, p := range []string{"stora/partner/connections/op-1", "stora/partner/connections/op-2", "stora/acme"} {
		got[p] = e.get(p).Data["access_token"] != nil
	}
	return got
}

func TestClientFlagNamesAConnection(t *testing.T) {
	e, cfg := partnerEnv(t)
	op1 := str(e.get("stora/partner/connections/op-1"), "refresh_token")

	if exit, out := e.run("--config", cfg, "--once", "--client", "partner/op-2"); exit != 0 {
		t.Fatalf("--client partner/op-2: exit %d:\n%s", exit, out)
	}
	if got := e.rotated(); !got["stora/partner/connections/op-2"] || got["stora/partner/connections/op-1"] || got["stora/acme"] {
		t.Errorf("--client partner/op-2 rotated %v, want op-2 only", got)
	}
	if n := len(e.stora.Requests()); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
	if str(e.get("stora/partner/connections/op-1"), "refresh_token") != op1 {
		t.Errorf("op-1's refresh token changed")
	}

	// status and validate name the same one target.
	code, out := e.run("status", "--config", cfg, "--client", "partner/op-2", "--output", "json")
	var st struct{ Targets []struct{ Name string } }
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &st); err != nil {
		t.Fatalf("status: exit %d: %v\n%s", code, err, out)
	}
	if code != 0 || len(st.Targets) != 1 || st.Targets[0].Name != "partner/op-2" {
		t.Errorf("status --client partner/op-2: exit %d, targets %+v, want 0 and partner/op-2 alone", code, st.Targets)
	}
	code, out = e.run("validate", "--config", cfg, "--client", "partner/op-2")
	if code != 0 || !strings.Contains(out, "partner/op-2: ok") || strings.Contains(out, "op-1") || strings.Contains(out, "acme:") {
		t.Errorf("validate --client partner/op-2: exit %d, want 0 and op-2 alone:\n%s", code, out)
	}

	// A connection that is not there, or a client without connections: exit 2, saying so and
	// where to look, before any token request.
	before := len(e.stora.Requests())
	for _, args := range [][]string{
		{"--once", "--config", cfg, "--client", "partner/op-9"},
		{"--config", cfg, "--metrics-address", "", "--client", "partner/op-9"}, // the daemon
		{"status", "--config", cfg, "--client", "partner/op-9"},
		{"validate", "--config", cfg, "--client", "partner/op-9"},
	} {
		code, out := runFor(10*time.Second, args...)
		if code != 2 || !strings.Contains(out, "client partner has no connection op-9 under stora/partner/connections") ||
			!strings.Contains(out, "token-rotator status --client partner") {
			t.Errorf("%v: exit %d, want 2 naming the missing connection and how to list them:\n%s", args, code, out)
		}
	}
	if code, out := e.run("--config", cfg, "--once", "--client", "acme/op-1"); code != 2 || !strings.Contains(out, "client acme has no connections") {
		t.Errorf("--client acme/op-1: exit %d, want 2 saying acme has no connections:\n%s", code, out)
	}
	if n := len(e.stora.Requests()); n != before {
		t.Errorf("a missing connection made %d token requests", n-before)
	}
	if got := e.rotated(); got["stora/partner/connections/op-1"] || got["stora/acme"] {
		t.Errorf("a missing connection rotated %v", got)
	}
}

// runFor runs token-rotator as runRotator does, cancelled after d so that a daemon that should
// not have started ends the test.
func runFor(d time.Duration, args ...string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out testenv.SyncBuffer
	code := exitCode(run(ctx, args, &out, &out), &out)
	return code, out.String()
}

func TestDaemonRotatesOnlyTheNamedConnection(t *testing.T) {
	e, cfg := partnerEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--config", cfg, "--metrics-address", "", "--client", "partner/op-1"}, &out, &out)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "next pass") && time.Now().Before(deadline) && len(done) == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("daemon returned %v:\n%s", err, out.String())
	}
	if got := e.rotated(); !got["stora/partner/connections/op-1"] || got["stora/partner/connections/op-2"] || got["stora/acme"] {
		t.Errorf("daemon --client partner/op-1 rotated %v, want op-1 only:\n%s", got, out.String())
	}
	if n := len(e.stora.Requests()); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
}

// --client overrides --shard: whichever shard a named target hashes to, it is rotated, and the
// job says it ran it regardless of the shard.
func TestClientOverridesShard(t *testing.T) {
	e, cfg := partnerEnv(t)
	for i, shard := range []string{"0/2", "1/2"} {
		before := str(e.get("stora/acme"), "access_token")
		code, out := e.run("--config", cfg, "--once", "--force", "--shard", shard, "--client", "acme", "--client", "partner/op-1")
		if code != 0 || !strings.Contains(out, "--client overrides --shard") {
			t.Fatalf("--shard %s --client acme: exit %d, want 0 and a line saying --client overrides the shard:\n%s", shard, code, out)
		}
		if after := str(e.get("stora/acme"), "access_token"); after == "" || after == before {
			t.Errorf("--shard %s --client acme: acme's access token not replaced", shard)
		}
		if n := len(e.stora.Requests()); n != 2*(i+1) {
			t.Errorf("after --shard %s: %d token requests, want %d (acme and op-1, each run)", shard, n, 2*(i+1))
		}
	}
	if got := e.rotated(); got["stora/partner/connections/op-2"] {
		t.Errorf("op-2 was rotated although not named")
	}
}

// TestClientInAnIndexedJobRunsInOneShard: every pod of an Indexed Job (--shard /N, the index from
// JOB_COMPLETION_INDEX) gets the same --client; each named target then runs in the one pod whose
// shard owns it, not in all of them: over the two pods, one token request per named target.
func TestClientInAnIndexedJobRunsInOneShard(t *testing.T) {
	e, cfg := partnerEnv(t)
	for _, index := range []string{"0", "1"} {
		t.Setenv("JOB_COMPLETION_INDEX", index)
		code, out := e.run("--config", cfg, "--once", "--force", "--shard", "/2", "--client", "acme", "--client", "partner/op-1")
		if code != 0 || !strings.Contains(out, "runs in the pod whose shard owns it") {
			t.Fatalf("pod %s: exit %d, want 0 and a line saying each named target runs in its own shard:\n%s", index, code, out)
		}
	}
	if n := len(e.stora.Requests()); n != 2 {
		t.Errorf("%d token requests over both pods, want 2 (acme and op-1, once each)", n)
	}
}

// authorize takes a connection named as logs and status name it.
func TestAuthorizeTakesClientSlashConnection(t *testing.T) {
	e, cfg := partnerEnv(t)
	id := str(e.get("stora/partner"), "client_id")
	const redirect = "https://partner.example/callback"
	code := e.stora.IssueCode(id, redirect, "public.contact:read", "")
	if c, out := e.run("authorize", "--config", cfg, "--client", "partner/op-3", "--redirect-uri", redirect, "--code", code, "--store-only"); c != 0 {
		t.Fatalf("authorize --client partner/op-3: exit %d:\n%s", c, out)
	}
	if str(e.get("stora/partner/connections/op-3"), "code") != code {
		t.Errorf("authorize --client partner/op-3 did not store the code in op-3")
	}
	if c, out := e.run("authorize", "--config", cfg, "--client", "partner/op-3", "--connection", "op-4", "--redirect-uri", redirect, "--code", code); c != 2 || !strings.Contains(out, "names connection op-3, --connection op-4") {
		t.Errorf("authorize --client partner/op-3 --connection op-4: exit %d, want 2 saying the two disagree:\n%s", c, out)
	}
}
