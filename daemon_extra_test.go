package main

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"token-rotator/config"
	"token-rotator/internal/testenv"
	"token-rotator/rotate"
)

// A pass that outlasts a reused token's expiry (plus reusedMargin) still gets its extra pass,
// at once: an instant already past would never run.
func TestExtraPassWhoseInstantPassedDuringThePass(t *testing.T) {
	cfg := &config.Config{Schedule: "0 0 1 1 *"}
	var err error
	if cfg.Cron, err = cron.ParseStandard(cfg.Schedule); err != nil {
		t.Fatal(err)
	}
	var passes atomic.Int32
	pass := func(context.Context) []rotate.Result {
		if passes.Add(1) == 1 {
			expires := time.Now().Add(100 * time.Millisecond)
			time.Sleep(reusedMargin + time.Second) // a long pass: the reused token expired meanwhile
			return []rotate.Result{{Client: "cc", Outcome: rotate.Reused, ExpiresAt: expires}}
		}
		return []rotate.Result{{Client: "cc", Outcome: rotate.Rotated, ExpiresAt: time.Now().Add(2 * time.Hour)}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon(ctx, pass, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	time.Sleep(reusedMargin + 4*time.Second)
	cancel()
	<-done
	if n := passes.Load(); n != 2 {
		t.Errorf("%d passes; want 2: the reused token expired during the first, so an extra pass at once", n)
	}
}

// daemonExit runs the daemon on cfg until stop returns, then stops it as SIGTERM does, and returns
// its exit code and its log lines' messages.
func daemonExit(t *testing.T, cfg string, stop func(logs string) bool) (int, []string, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out testenv.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- exitCode(run(ctx, []string{"--config", cfg, "--log-format", "json", "--metrics-address", ""}, &out, &out), &out)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !stop(out.String()) {
		select {
		case code := <-done:
			t.Fatalf("exit %d before the signal:\n%s", code, out.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("not there in 30 s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	code := <-done
	var msgs []string
	for _, l := range logLines(t, out.String()) {
		msgs = append(msgs, l.Msg)
	}
	return code, msgs, out.String()
}

// TestDaemonExits0OnSIGTERMAfterAFailedPass: a daemon's exit code says how it stopped. Idle after
// a pass whose client failed (a wrong client secret; the next pass is minutes away), SIGTERM ends it with 0, and no pass is
// said to be in flight.
func TestDaemonExits0OnSIGTERMAfterAFailedPass(t *testing.T) {
	e := newEnv(t)
	id, _ := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": "not-the-secret-at-all"})
	cfg := writeConfig(t, "token_url: "+e.stora.TokenURL+"\nclients:\n"+
		"  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n")
	code, msgs, logs := daemonExit(t, cfg, func(logs string) bool { return strings.Contains(logs, `"msg":"next pass"`) })
	if !strings.Contains(logs, "invalid_client") {
		t.Fatalf("the pass did not fail on the wrong client secret:\n%s", logs)
	}
	if code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0:\n%s", code, logs)
	}
	if want := []string{"next pass", "shutting down", "daemon stopped"}; !slices.Equal(msgs[len(msgs)-3:], want) {
		t.Errorf("the last lines are %q, want %q:\n%s", msgs[len(msgs)-3:], want, logs)
	}
}

// TestDaemonExits0OnSIGTERMAfterVaultDied: Vault dies under a running daemon and a pass fails
// for it. SIGTERM, whether between passes or while the next waits for Vault, ends the daemon
// with 0, as any clean shutdown; the shutdown lines come in the order things happen.
func TestDaemonExits0OnSIGTERMAfterVaultDied(t *testing.T) {
	prev := tuneRotator
	tuneRotator = func(r *rotate.Rotator) { r.VaultWait = time.Second } // a pass fails in a second, not 30
	t.Cleanup(func() { tuneRotator = prev })
	t.Setenv("VAULT_MAX_RETRIES", "0") // each attempt refused at once, so the pass logs its waits
	for _, tc := range []struct {
		name string
		when string   // the line after which SIGTERM comes, once a pass has failed
		want []string // the last lines
	}{
		{"between passes", "next pass", []string{"next pass", "shutting down", "daemon stopped"}},
		{"while a pass waits for Vault", "vault unavailable; waiting", []string{"shutting down: waiting for the pass in flight", "rotation not started", "pass done", "daemon stopped"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			id, secret := e.stora.AddClient()
			e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret})
			cfg := writeConfig(t, "token_url: "+e.stora.TokenURL+"\nschedule: \"@every 3s\"\nclients:\n"+
				"  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n")
			killed := false
			code, msgs, logs := daemonExit(t, cfg, func(logs string) bool {
				if !killed && strings.Contains(logs, `"outcome":"rotated"`) {
					if err := e.vault.Process.Kill(); err != nil {
						t.Fatal(err)
					}
					killed = true
				}
				_, after, failed := strings.Cut(logs, `"msg":"rotation failed"`)
				return failed && strings.Contains(after, `"msg":"`+tc.when+`"`)
			})
			if code != 0 {
				t.Errorf("exit %d after SIGTERM, want 0:\n%s", code, logs)
			}
			if got := msgs[max(0, len(msgs)-len(tc.want)):]; !slices.Equal(got, tc.want) {
				t.Errorf("the last lines are %q, want %q:\n%s", got, tc.want, logs)
			}
		})
	}
}
