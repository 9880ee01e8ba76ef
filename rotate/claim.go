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

// claim is the value under keyClaim, stored as a JSON string. It names the process and the target:
// two targets of one process that somehow shared a secret must not take each other's claim for
// their own.
type claim struct {
	Holder  string    `json:"holder"`
	Target  string    `json:"target,omitempty"`
	Expires time.Time `json:"expires"`
}

// claimant is who claims: this process (holder), rotating one target.
type claimant struct{ holder, target string }

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

// is reports whether the claim is who's.
func (c *claim) is(who claimant) bool { return c.Holder == who.holder && c.Target == who.target }

// maxClaimAhead is the furthest ahead a claim's expiry is believed: a claim lives DefaultClaimTTL,
// and an hour more allows for a claimant's clock running ahead. A claim expiring later (a hand
// edit, a clock gone wrong) would keep every process off the secret for as long: it is not
// honoured.
const maxClaimAhead = DefaultClaimTTL + time.Hour

// live reports whether the claim keeps others off the secret at now: not lapsed, and not
// implausibly far ahead (maxClaimAhead).
func (c *claim) live(now time.Time) bool {
	return now.Before(c.Expires) && c.Expires.Sub(now) <= maxClaimAhead
}

// heldElsewhere reports whether data carries a live claim by anyone but who.
func heldElsewhere(data map[string]any, who claimant, now time.Time) bool {
	c := claimOf(data)
	return c != nil && !c.is(who) && c.live(now)
}

// ClaimOn reports who holds a live claim on a credential secret, from its data, and when the claim
// lapses at the latest (its holder releases it as soon as its rotation ends); ok is false when no
// claim a pass would honour is there. For `token-rotator authorize`, which must not store a code
// into a secret another process is rotating without saying so.
func ClaimOn(data map[string]any, now time.Time) (holder string, until time.Time, ok bool) {
	c := claimOf(data)
	if c == nil || !c.live(now) {
		return "", time.Time{}, false
	}
	return c.Holder, c.Expires, true
}

// claimValue is who's claim, valid for ttl from now, as stored under keyClaim.
func claimValue(who claimant, now time.Time, ttl time.Duration) string {
	b, _ := json.Marshal(claim{Holder: who.holder, Target: who.target, Expires: now.Add(ttl).UTC()})
	return string(b)
}

// dropsClaim reports whether a write-back by who removes the claim in data: its own, or an
// unreadable one (nobody's). Another's live or lapsed claim stays.
func dropsClaim(data map[string]any, who claimant) bool {
	if _, ok := data[keyClaim]; !ok {
		return false
	}
	c := claimOf(data)
	return c == nil || c.is(who)
}

// errGone is a credential secret deleted (or its latest version deleted) while its rotation was
// under way: an operator offboarding it. It stays deleted.
var errGone = errors.New("secret deleted during its rotation")

// claim writes who's claim to the credential secret, check-and-set on the version read, and
// returns the secret as claimed. elsewhere is set when another process won the race; errGone when
// the secret was deleted since it was read.
func (r *Rotator) claim(ctx context.Context, path string, secret *vault.Secret, who claimant) (claimed *vault.Secret, elsewhere bool, err error) {
	value := claimValue(who, r.now(), orDefault(r.ClaimTTL, DefaultClaimTTL))
	v, err := r.Store.Update(ctx, path, map[string]any{keyClaim: value}, secret.Version)
	if errors.Is(err, vault.ErrVersionMismatch) {
		// Lost the race, or won it and lost the answer: the client retried a write that had
		// landed. Only the secret as it is now can tell.
		now, rerr := r.Store.Read(ctx, path)
		if errors.Is(rerr, vault.ErrNotFound) {
			return nil, false, errGone
		} else if rerr != nil {
			return nil, false, rerr
		}
		if c := claimOf(now.Data); c != nil && c.is(who) && now.Version == secret.Version+1 {
			return now, false, nil
		}
		return nil, true, nil
	}
	if errors.Is(err, vault.ErrNotFound) {
		return nil, false, errGone
	}
	if err != nil {
		return nil, false, err
	}
	data := clone(secret.Data)
	data[keyClaim] = value
	return &vault.Secret{Data: data, Version: v, Metadata: secret.Metadata}, false, nil
}

// release removes who's claim after a grant that spent nothing or failed, check-and-set on the
// claimed version, and returns the secret's version afterwards; gone is set when the secret was
// deleted meanwhile. An unavailable Vault is waited out within StatusWriteTimeout; a failure is
// logged: the claim then lapses at its expiry.
func (r *Rotator) release(ctx context.Context, path string, claimed *vault.Secret, who claimant) (version int, gone bool) {
	if !dropsClaim(claimed.Data, who) {
		return claimed.Version, false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), StatusWriteTimeout)
	defer cancel()
	var v int
	err := r.untilVault(ctx, "release claim", func() (err error) {
		v, err = r.Store.Update(ctx, path, map[string]any{keyClaim: nil}, claimed.Version)
		return err
	})
	switch {
	case errors.Is(err, vault.ErrNotFound):
		return claimed.Version, true
	case err != nil:
		r.logger().Warn("could not release claim; it lapses at its expiry", "path", path, "error", err.Error())
		return claimed.Version, false
	}
	return v, false
}

func randomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
