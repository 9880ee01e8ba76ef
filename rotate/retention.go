package rotate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"token-rotator/config"
	"token-rotator/vault"
)

// KV v2 can delete the only copy of a refresh token by its own retention settings
// (https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2):
//
//   - delete_version_after, on the mount (<mount>/config) or the secret (its metadata), soft-deletes
//     every version that long after it was written; the shorter of the two applies, and a negative
//     value on the mount turns it off. A refresh token not rewritten in time is gone, and the
//     client fails until an operator authorizes it again.
//   - max_versions 1 (the secret's own when set, else the mount's) keeps no older version: a write
//     that goes wrong, or a racing writer's landing on top, leaves no version to recover the
//     refresh token from.
//
// Validate names every credential secret these put at risk, asking Vault for each secret's
// metadata. The pass asks nothing extra per target: it warns from what the read of the secret
// already returned (the version's deletion_time) and from the mount's settings, read once per
// process; each finding is logged once per process, however many passes a daemon runs.

// retentionWatch is what the Rotator has learnt of the KV settings that can delete a refresh
// token, and which findings it has already logged.
type retentionWatch struct {
	mu         sync.Mutex
	mountRead  bool             // the mount's settings were asked for (once per process)
	mount      vault.KVSettings // Mount is set even when the settings are unknown
	mountKnown bool             // mount holds what Vault answered
	metaDenied bool             // a secret's metadata read was refused: validate stops asking
	warned     map[string]bool  // "path setting" of every finding logged
}

// settingsReader is a store that can tell the KV retention settings; *vault.Store is one.
type settingsReader interface {
	MountSettings(ctx context.Context) (vault.KVSettings, error)
	SecretSettings(ctx context.Context, path string) (vault.KVSettings, error)
}

// retentionRisk is one KV setting that can lose a credential secret's refresh token.
type retentionRisk struct {
	setting string // delete_version_after or max_versions
	value   string // as Vault writes it: 1h0m0s, 1
	where   string // "the secret", "the mount (secret/config)", ...
	why     string
	fix     []string // commands that remove the risk
}

func (k retentionRisk) String() string {
	return fmt.Sprintf("%s=%s set on %s %s (fix: %s)", k.setting, k.value, k.where, k.why, strings.Join(k.fix, " and "))
}

const (
	whyDeleteVersionAfter = "soft-deletes the latest version, the only copy of the refresh token, that long after each write: a token not rewritten in time is lost"
	whyMaxVersions        = "keeps no older version: a write that goes wrong, or a racing write landing on top, leaves no version to recover the refresh token from"
)

// holdsRefreshToken reports whether the target's secret holds what a grant spends (a refresh
// token or a code): those are the secrets whose loss needs an operator. Outputs hold only access
// tokens, which the next pass replaces.
func holdsRefreshToken(t target) bool { return t.client.Grant == config.GrantAuthorizationCode }

// mountSettings returns the mount's KV settings, asking Vault once per process; known is false
// when the store cannot tell or Vault refused (logged at debug: a policy without "read" on
// <mount>/config only loses the check).
func (r *Rotator) mountSettings(ctx context.Context) (m vault.KVSettings, known bool) {
	w := &r.retention
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.mountRead {
		w.mountRead = true
		if s, ok := r.Store.(settingsReader); ok {
			var err error
			w.mount, err = s.MountSettings(ctx)
			w.mountKnown = err == nil
			if err != nil {
				r.logger().Debug("KV mount settings not readable: their retention check is skipped", "mount", w.mount.Mount, "error", err.Error())
			}
		}
	}
	return w.mount, w.mountKnown
}

// warnMountRetention logs, once per process, each mount setting that can delete a refresh token.
// It costs one Vault request, at the first pass, and none when no client holds a refresh token.
func (r *Rotator) warnMountRetention(ctx context.Context) {
	if !slices.ContainsFunc(r.Clients, func(c config.Client) bool { return c.Grant == config.GrantAuthorizationCode }) {
		return
	}
	if m, known := r.mountSettings(ctx); known {
		for _, k := range mountRisks(m) {
			r.warnOnce(m.Mount+"/config", k)
		}
	}
}

// warnRetention logs, once per process, that Vault will soft-delete the version of a credential
// secret just read, from the deletion_time the read returned: no request of its own. A finding
// the mount's settings explain was logged for the mount already.
func (r *Rotator) warnRetention(t target, s *vault.Secret) {
	if !holdsRefreshToken(t) || s.DeletionTime.IsZero() {
		return
	}
	r.retention.mu.Lock()
	m, known := r.retention.mount, r.retention.mountKnown
	r.retention.mu.Unlock()
	after := s.DeletionTime.Sub(s.CreatedTime).Round(time.Second)
	if known && m.DeleteVersionAfter == after {
		return
	}
	r.warnOnce(t.secret, observedRisk(m.Mount, known, false, t, s))
}

func (r *Rotator) warnOnce(path string, k retentionRisk) {
	w := &r.retention
	w.mu.Lock()
	if w.warned == nil {
		w.warned = map[string]bool{}
	}
	key := path + " " + k.setting
	seen := w.warned[key]
	w.warned[key] = true
	w.mu.Unlock()
	if !seen {
		r.logger().Warn("KV retention can delete the refresh token", "path", path, "setting", k.setting,
			"value", k.value, "set_on", k.where, "why", k.why, "fix", strings.Join(k.fix, " and "))
	}
}

// retentionProblem is Validate's check of one target: the settings of its credential secret that
// can delete the refresh token, from the secret's metadata when the policy lets the job read it,
// else from the version's deletion_time. nil when there are none.
func (r *Rotator) retentionProblem(ctx context.Context, t target, s *vault.Secret) error {
	if !holdsRefreshToken(t) {
		return nil
	}
	m, mountKnown := r.mountSettings(ctx)
	var own *vault.KVSettings
	sr, ok := r.Store.(settingsReader)
	r.retention.mu.Lock()
	denied := r.retention.metaDenied
	r.retention.mu.Unlock()
	if ok && !denied {
		got, err := sr.SecretSettings(ctx, t.secret)
		if err == nil {
			own = &got
		} else if errors.Is(err, vault.ErrPermissionDenied) {
			r.retention.mu.Lock()
			r.retention.metaDenied = true // one refusal is the policy's answer for every secret
			r.retention.mu.Unlock()
		}
	}
	var mount *vault.KVSettings
	if mountKnown {
		mount = &m
	}
	risks := secretRisks(m.Mount, t, mount, own, s)
	if len(risks) == 0 {
		return nil
	}
	parts := make([]string, len(risks))
	for i, k := range risks {
		parts[i] = k.String()
	}
	return fmt.Errorf("credential secret %s: %s", t.secret, strings.Join(parts, "; "))
}

// mountRisks are the mount's settings that put every credential secret on it at risk.
func mountRisks(m vault.KVSettings) []retentionRisk {
	var out []retentionRisk
	where := mountWhere(m.Mount)
	if m.DeleteVersionAfter > 0 {
		out = append(out, retentionRisk{"delete_version_after", m.DeleteVersionAfter.String(), where, whyDeleteVersionAfter,
			[]string{fmt.Sprintf("vault write %s/config delete_version_after=0s", m.Mount)}})
	}
	if m.MaxVersions == 1 {
		out = append(out, retentionRisk{"max_versions", "1", where, whyMaxVersions,
			[]string{fmt.Sprintf("vault write %s/config max_versions=10", m.Mount)}})
	}
	return out
}

// secretRisks are the risks to t's credential secret from its own settings (own) and its mount's
// (mount); nil for either means unknown. s is the secret as read: a version set to be deleted
// that the known settings do not explain is a risk too.
func secretRisks(mountName string, t target, mount, own *vault.KVSettings, s *vault.Secret) []retentionRisk {
	var out []retentionRisk
	fixSecret := func(flag string) string {
		return fmt.Sprintf("vault kv metadata put -mount=%s %s %s", mountName, flag, t.secret)
	}
	fixMount := func(setting string) string { return fmt.Sprintf("vault write %s/config %s", mountName, setting) }
	// delete_version_after: the shorter of the secret's and the mount's, unless the mount's is
	// negative (off for every secret).
	if mount == nil || mount.DeleteVersionAfter >= 0 {
		var values, wheres, fixes []string
		if own != nil && own.DeleteVersionAfter > 0 {
			values, wheres = append(values, own.DeleteVersionAfter.String()), append(wheres, "the secret")
			fixes = append(fixes, fixSecret("-delete-version-after=0s"))
		}
		if mount != nil && mount.DeleteVersionAfter > 0 {
			values, wheres = append(values, mount.DeleteVersionAfter.String()), append(wheres, mountWhere(mountName))
			fixes = append(fixes, fixMount("delete_version_after=0s"))
		}
		switch {
		case len(values) > 0:
			out = append(out, retentionRisk{"delete_version_after", strings.Join(values, " and "), strings.Join(wheres, " and "), whyDeleteVersionAfter, fixes})
		case s != nil && !s.DeletionTime.IsZero():
			out = append(out, observedRisk(mountName, mount != nil, own != nil, t, s))
		}
	}

	// max_versions: the secret's own when set, else the mount's.
	switch {
	case own != nil && own.MaxVersions == 1:
		fix := []string{fixSecret("-max-versions=0")}
		if mount != nil && mount.MaxVersions == 1 {
			fix = append(fix, fixMount("max_versions=10"))
		}
		out = append(out, retentionRisk{"max_versions", "1", "the secret", whyMaxVersions, fix})
	case (own == nil || own.MaxVersions == 0) && mount != nil && mount.MaxVersions == 1:
		out = append(out, retentionRisk{"max_versions", "1", mountWhere(mountName), whyMaxVersions, []string{fixMount("max_versions=10")}})
	}
	return out
}

// observedRisk is the version of t's credential secret that s shows set to be deleted, named
// after the setting that most likely set it: the secret's own when its mount's is known not to,
// the mount's when the secret's is known not to, an earlier setting when neither does now (a
// version keeps the deletion_time it was written with: only a new write clears it).
func observedRisk(mountName string, mountKnown, ownKnown bool, t target, s *vault.Secret) retentionRisk {
	fixSecret := fmt.Sprintf("vault kv metadata put -mount=%s -delete-version-after=0s %s", mountName, t.secret)
	fixMount := fmt.Sprintf("vault write %s/config delete_version_after=0s", mountName)
	k := retentionRisk{setting: "delete_version_after", value: s.DeletionTime.Sub(s.CreatedTime).Round(time.Second).String(), why: whyDeleteVersionAfter}
	switch {
	case mountKnown && ownKnown:
		k.where = "the secret or mount when the latest version was written (Vault still deletes it at " + s.DeletionTime.UTC().Format(time.RFC3339) + ")"
		k.fix = []string{"a new version before then: token-rotator --once --force --client " + t.client.Name}
	case mountKnown:
		k.where, k.fix = "the secret", []string{fixSecret}
	case ownKnown:
		k.where, k.fix = mountWhere(mountName), []string{fixMount}
	default:
		k.where, k.fix = mountWhere(mountName)+" or the secret", []string{fixSecret, fixMount}
	}
	return k
}

func mountWhere(mount string) string { return "the mount (" + mount + "/config)" }
