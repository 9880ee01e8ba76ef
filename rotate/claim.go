package rotate

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"time"
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

func randomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
