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
	exp, plausible := storedExpiry(output, now)
	left := exp.Sub(now)
	switch {
	case exp.IsZero():
		return true, time.Time{}, "stored expires_at missing or not RFC 3339"
	case !plausible:
		return true, time.Time{}, fmt.Sprintf("stored expires_at %s away is implausible", left.Round(time.Hour))
	}
	return left < renewBefore, exp, fmt.Sprintf("%s left", left.Round(time.Second))
}

// storedExpiry reads a secret's expires_at; plausible is false when it is missing, unreadable, or
// further away than any access token lives (a hand edit, a migration, a clock gone wrong): such an
// expiry never makes a stored token look newer than one just granted.
func storedExpiry(d map[string]any, now time.Time) (exp time.Time, plausible bool) {
	s, _ := stringField(d, keyExpiresAt)
	exp, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, false
	}
	return exp.UTC(), exp.Sub(now) <= maxLifetime
}

// refreshDue decides whether a client's refresh token, by the credential secret's
// refresh_token_expires_at, must be spent now while it still works: when less than renewBefore is
// left of its life (or it has passed: the server may not enforce it, and a refusal says to
// authorize again). It returns the stored expiry when readable; an unreadable one is unknown, and
// not due.
func refreshDue(now time.Time, credentials map[string]any, renewBefore time.Duration) (isDue bool, expiresAt time.Time, why string) {
	exp := storedRefreshExpiry(credentials)
	if exp.IsZero() {
		return false, time.Time{}, ""
	}
	left := exp.Sub(now)
	if left < 0 {
		return true, exp, fmt.Sprintf("refresh token expired %s ago (stored refresh_token_expires_at)", (-left).Round(time.Second))
	}
	return left < renewBefore, exp, fmt.Sprintf("refresh token expires in %s, within renew_before (stored refresh_token_expires_at)", left.Round(time.Second))
}

// storedRefreshExpiry reads a credential secret's refresh_token_expires_at: zero when missing or not
// RFC 3339.
func storedRefreshExpiry(credentials map[string]any) time.Time {
	s, _ := stringField(credentials, keyRefreshExpiresAt)
	exp, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}
	}
	return exp.UTC()
}
