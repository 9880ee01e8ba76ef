package rotate

import (
	"context"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"

	"token-rotator/vault"
)

// DefaultVaultWait is how long a step before the token request (the read, the pre-flight, the
// claim, the listing of connections) waits out a Vault that cannot answer now: a leader election
// in an HA cluster (a few seconds), the job's node sealed or restarting. Nothing is spent yet, so
// waiting is safe; past it the client fails and the next pass tries again.
const DefaultVaultWait = 30 * time.Second

// untilVault runs op, and again with backoff while it fails because Vault is unavailable
// (vault.Unavailable), for up to VaultWait (default DefaultVaultWait) or until ctx ends. It returns
// op's last error. step names the step in the warning logged before each wait.
func (r *Rotator) untilVault(ctx context.Context, step string, op func() error) error {
	return waitForVault(ctx, r.logger(), &r.waits, orDefault(r.WriteBackoff, 200*time.Millisecond), orDefault(r.VaultWait, DefaultVaultWait), step, op)
}

// UntilVault is untilVault for the job's start (the login and the mount's KV version, before any
// Rotator exists): it waits out a Vault that cannot answer now for up to DefaultVaultWait, logging
// a warning before each wait, and returns op's last error.
func UntilVault(ctx context.Context, logger *slog.Logger, step string, op func() error) error {
	return waitForVault(ctx, logger, nil, 200*time.Millisecond, DefaultVaultWait, step, op)
}

// waitForVault is the loop of both; from op's first failure on, it counts as waiting for Vault in
// w (nil: the job's start, before any pass).
func waitForVault(ctx context.Context, logger *slog.Logger, w *waiting, initial, maxWait time.Duration, step string, op func() error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = initial
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	b.Reset()
	deadline := time.Now().Add(maxWait)
	var end func() // set while counted as waiting for Vault
	defer func() {
		if end != nil {
			end()
		}
	}()
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil || !vault.Unavailable(err) || ctx.Err() != nil {
			return err
		}
		wait := b.NextBackOff()
		if time.Now().Add(wait).After(deadline) {
			return err
		}
		if end == nil {
			end = w.begin(waitVault)
		}
		logger.Warn("vault unavailable; waiting", "step", step, "attempt", attempt, "wait", wait.Round(time.Millisecond).String(), "error", err.Error())
		if !sleep(ctx, wait) {
			return err
		}
	}
}
