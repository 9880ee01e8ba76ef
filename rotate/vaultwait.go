package rotate

import (
	"context"
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
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = orDefault(r.WriteBackoff, 200*time.Millisecond)
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	b.Reset()
	deadline := time.Now().Add(orDefault(r.VaultWait, DefaultVaultWait))
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil || !vault.Unavailable(err) || ctx.Err() != nil {
			return err
		}
		wait := b.NextBackOff()
		if time.Now().Add(wait).After(deadline) {
			return err
		}
		r.logger().Warn("vault unavailable; waiting", "step", step, "attempt", attempt, "wait", wait.Round(time.Millisecond).String(), "error", err.Error())
		if !sleep(ctx, wait) {
			return err
		}
	}
}
