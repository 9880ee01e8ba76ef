package rotate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"token-rotator/vault"
)

// keyClaim is the data key of a claim on a credential secret. A process writes it, check-and-set
// on the version it read, before a grant that spends the secret's refresh token or code: the
// write proves the job may update the secret, and of processes racing for one secret exactly one
// wins. The write-back removes it. It lives in the data, not the metadata, because only data
// writes are check-and-set.
const keyClaim = "rotation_claim"

// claim is the value under keyClaim, stored as a JSON string.
type claim struct {
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

// claimOf returns the claim in a secret's data, or nil when there is none or it is unreadable
// (an unreadable claim is treated as none, so a hand edit cannot block a client for ever).
func claimOf(data map[string]any) *claim {
	s, _ := data[keyClaim].(string)
	if s == "" {
		return nil
	}
	var c claim
	if json.Unmarshal([]byte(s), &c) != nil || c.Holder == "" {
		return nil
	}
	return &c
}

// heldElsewhere reports whether data carries a live claim by another holder.
func heldElsewhere(data map[string]any, holder string, now time.Time) bool {
	c := claimOf(data)
	return c != nil && c.Holder != holder && now.Before(c.Expires)
}

// withClaim returns a copy of data with holder's claim, valid for ttl from now.
func withClaim(data map[string]any, holder string, now time.Time, ttl time.Duration) map[string]any {
	b, _ := json.Marshal(claim{Holder: holder, Expires: now.Add(ttl).UTC()})
	d := clone(data)
	d[keyClaim] = string(b)
	return d
}

// dropClaim removes holder's own claim from data, in place; another holder's stays.
func dropClaim(data map[string]any, holder string) {
	if c := claimOf(data); c != nil && c.Holder == holder {
		delete(data, keyClaim)
	} else if c == nil {
		delete(data, keyClaim) // unreadable: nobody's
	}
}

// claim writes this process's claim to the credential secret, check-and-set on the version read,
// and returns the secret as claimed. elsewhere is set when another process won the race.
func (r *Rotator) claim(ctx context.Context, path string, secret *vault.Secret) (claimed *vault.Secret, elsewhere bool, err error) {
	data := withClaim(secret.Data, r.holder(), r.now(), orDefault(r.ClaimTTL, 15*time.Minute))
	v, err := r.Store.Write(ctx, path, data, secret.Version)
	if errors.Is(err, vault.ErrVersionMismatch) {
		// Lost the race, or won it and lost the answer: the client retried a write that had
		// landed. Only the secret as it is now can tell.
		now, rerr := r.Store.Read(ctx, path)
		if rerr != nil {
			return nil, false, rerr
		}
		if c := claimOf(now.Data); c != nil && c.Holder == r.holder() && now.Version == secret.Version+1 {
			return now, false, nil
		}
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	return &vault.Secret{Data: data, Version: v, Metadata: secret.Metadata}, false, nil
}

// release removes this process's claim after a failed grant, check-and-set on the claimed version,
// and returns the secret's version afterwards. A failure is logged: the claim then lapses at its
// expiry.
func (r *Rotator) release(ctx context.Context, path string, claimed *vault.Secret) int {
	d := clone(claimed.Data)
	dropClaim(d, r.holder())
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	v, err := r.Store.Write(ctx, path, d, claimed.Version)
	if err != nil {
		r.logger().Warn("could not release claim; it lapses at its expiry", "path", path, "error", err.Error())
		return claimed.Version
	}
	return v
}

func randomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
