package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/vault/api"
)

// ErrPermissionDenied is returned (wrapped) by MountSettings and SecretSettings when the Vault
// policy does not allow the read (403); callers treat it as "unknown", never as a failure. The
// errors of Read, Write, Update, SetStatus and List match it when Vault refused the request
// although it accepts the token (a lookup of the token says so): the policy's refusal, which no
// new login changes.
var ErrPermissionDenied = errors.New("permission denied")

// KVSettings are the KV v2 settings that decide how long a secret's versions are kept, as Vault
// reports them for a mount (<mount>/config) or one secret (<mount>/metadata/<path>). See
// https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2.
type KVSettings struct {
	// Mount is the KV mount the settings belong to.
	Mount string
	// MaxVersions is how many versions are kept; the oldest beyond it is destroyed on each
	// write. 0 means unset: a secret then takes the mount's, a mount Vault's default of 10.
	MaxVersions int
	// DeleteVersionAfter is how long after it is written each version is soft-deleted. 0 means
	// unset. Vault applies the shorter of a secret's and its mount's when both are set; a
	// negative value on the mount turns the setting off for every secret on it.
	DeleteVersionAfter time.Duration
}

// MountSettings reads the KV v2 engine's configuration (<mount>/config: max_versions,
// delete_version_after), one request. It needs "read" on <mount>/config, which reveals no secret.
// On KV v1, which keeps no versions, it returns zero settings without asking.
// Errors: ErrPermissionDenied (wrapped) on a 403; otherwise Vault's error, wrapped.
//
// It asks once, without logging in again on a 403: it is meant for right after Open, where a 403
// is the policy, not an expired token (a new login would not change the answer).
func (s *Store) MountSettings(ctx context.Context) (KVSettings, error) {
	out := KVSettings{Mount: s.mount}
	if s.version == 1 {
		return out, nil
	}
	r, err := s.client.Logical().ReadWithContext(ctx, s.mount+"/config")
	if err != nil {
		return out, settingsError(s.mount+"/config", err)
	}
	if r == nil || r.Data == nil {
		return out, nil
	}
	if n, err := strconv.Atoi(fmt.Sprint(r.Data["max_versions"])); err == nil {
		out.MaxVersions = n
	}
	if d, ok := r.Data["delete_version_after"].(string); ok {
		if out.DeleteVersionAfter, err = time.ParseDuration(d); err != nil {
			return out, fmt.Errorf("read %s/config: delete_version_after %q: %w", s.mount, d, err)
		}
	}
	return out, nil
}

// SecretSettings reads one KV v2 secret's own max_versions and delete_version_after from its
// metadata (<mount>/metadata/<path>), one request; it needs "read" there. Zero values mean the
// mount's apply. On KV v1 it returns zero settings without asking.
// Errors: ErrNotFound, ErrPermissionDenied (both wrapped); otherwise Vault's error, wrapped.
// Like MountSettings, it does not log in again on a 403.
func (s *Store) SecretSettings(ctx context.Context, path string) (KVSettings, error) {
	out := KVSettings{Mount: s.mount}
	if s.version == 1 {
		return out, nil
	}
	m, err := s.client.KVv2(s.mount).GetMetadata(ctx, path)
	if errors.Is(err, api.ErrSecretNotFound) {
		return out, fmt.Errorf("read metadata of %s/%s: %w", s.mount, path, ErrNotFound)
	} else if err != nil {
		return out, settingsError(s.mount+"/metadata/"+path, err)
	}
	out.MaxVersions, out.DeleteVersionAfter = m.MaxVersions, m.DeleteVersionAfter
	return out, nil
}

func settingsError(path string, err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
		return fmt.Errorf("read %s: %w", path, ErrPermissionDenied)
	}
	return fmt.Errorf("read %s: %w", path, cleanError(err))
}
