package rotate

import (
	"fmt"
	"time"
)

// maxLifetime is the longest an access token is believed to live: a stored expires_at further
// away (a hand edit, a corrupted value) is not trusted.
const maxLifetime = 24 * time.Hour

// due decides whether a client's access token needs rotating now, from the output secret's data.
// It returns the stored token's expiry when readable, and why in a few words. A token is due when
// there is none, when its expires_at is missing or unreadable, or when less than renewBefore is
// left of its life.
func due(now time.Time, output map[string]any, renewBefore time.Duration) (isDue bool, expiresAt time.Time, why string) {
	if at, _ := stringField(output, keyAccessToken); at == "" {
		return true, time.Time{}, "no access token stored"
	}
	s, _ := stringField(output, keyExpiresAt)
	exp, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return true, time.Time{}, "stored expires_at missing or not RFC 3339"
	}
	left := exp.Sub(now)
	if left > maxLifetime {
		return true, time.Time{}, fmt.Sprintf("stored expires_at %s away is implausible", left.Round(time.Hour))
	}
	return left < renewBefore, exp.UTC(), fmt.Sprintf("%s left", left.Round(time.Second))
}
