package rotate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"token-rotator/vault"
)

// One rule for a credential secret that a read finds deleted, applied alike by the pass, status
// and validate:
//
//   - a connection whose metadata is gone, or whose latest version someone deleted (vault kv
//     delete), is an operator offboarding it: gone, skipped, not a problem;
//   - a latest version that Vault itself deleted by delete_version_after is not an offboarding:
//     the only copy of the refresh token went with it, the client fails, and the error says how
//     to bring it back;
//   - a configured client's secret (not a connection) is never gone: it must exist.
//
// Vault records a version's deletion time when delete_version_after schedules it, at the write,
// to the nanosecond; someone's delete records the moment of the delete (vault.DeletedError's
// ByRetention tells them apart, even after the setting was removed).

// vanished sorts out a failed read of t's credential secret: gone when it is an offboarded
// connection; lost, an error for the operator, when Vault's own retention deleted it. Neither
// when err is any other error.
func (r *Rotator) vanished(ctx context.Context, t target, err error) (gone bool, lost error) {
	if t.shared == "" || !errors.Is(err, vault.ErrNotFound) {
		return false, nil
	}
	var deleted *vault.DeletedError
	if !errors.As(err, &deleted) {
		return true, nil // its metadata is gone too: only someone deleting it does that
	}
	after, ok := deleted.ByRetention() // the deletion time alone tells, most often: no request
	if !ok {
		after, ok = deleted.ByRetention(r.deleteVersionAfter(ctx, t.secret)...)
	}
	if !ok {
		return true, nil
	}
	m, _ := r.mountSettings(ctx)
	return false, fmt.Errorf("version %d of %s, the only copy of the refresh token, was deleted by Vault's delete_version_after (%v), not by an operator: bring it back with `vault kv undelete -mount=%s -versions=%d %s`, then turn the setting off (token-rotator validate names it)",
		deleted.Version, t.secret, after, m.Mount, deleted.Version, t.secret)
}

// deleteVersionAfter returns the delete_version_after settings that apply to the secret at path:
// its own and its mount's, where set and readable. It asks Vault for the secret's metadata, so it
// is for the rare read that found a secret deleted.
func (r *Rotator) deleteVersionAfter(ctx context.Context, path string) []time.Duration {
	var out []time.Duration
	if m, known := r.mountSettings(ctx); known && m.DeleteVersionAfter > 0 {
		out = append(out, m.DeleteVersionAfter)
	}
	if s, ok := r.Store.(settingsReader); ok {
		if own, err := s.SecretSettings(ctx, path); err == nil && own.DeleteVersionAfter > 0 {
			out = append(out, own.DeleteVersionAfter)
		}
	}
	return out
}
