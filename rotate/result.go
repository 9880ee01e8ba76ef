package rotate

import (
	"strings"
	"time"
)

// Outcome is how one client's rotation ended in a pass.
type Outcome string

// Outcomes. Each says what Vault holds after the step; Failed and AccessTokenRefused count as
// failures (AnyFailed).
const (
	// Rotated: the output secret holds the access token just granted, and the credential secret
	// the refresh token just granted (or the stored one, when none came back).
	Rotated Outcome = "rotated"
	NotDue  Outcome = "not_due" // the stored access token has more than RenewBefore left
	DryRun  Outcome = "dry_run" // due, but --dry-run: nothing requested or written
	// Reused: the token endpoint handed back the access token already stored (a server with token
	// reuse, such as Doorkeeper's reuse_access_token); Vault holds it, with the expiry the server
	// gave. Nothing new was issued.
	Reused Outcome = "reused"
	// ClaimedElsewhere: another process holds the claim on the secret and is rotating it.
	ClaimedElsewhere Outcome = "claimed_elsewhere"
	// RotatedElsewhere: another process stored a newer pair, and Vault holds theirs: the server
	// refused the stored refresh token because that process had spent it, or that process's pair
	// landed while this one's request was in flight. ExpiresAt is the stored token's.
	RotatedElsewhere Outcome = "rotated_elsewhere"
	// Deleted: the credential secret was deleted while its rotation was in flight (an operator
	// offboarding a connection); it stays deleted, and what the server granted was not stored.
	Deleted Outcome = "deleted"
	// AccessTokenRefused: the server answered with a well-formed new refresh token but an access
	// token the job cannot use; the credential secret holds the new refresh token, the output
	// secret still holds the old access token. A failure: apps got nothing new.
	AccessTokenRefused Outcome = "access_token_refused"
	// Skipped: not started, or given up before anything was spent (shutdown, the pass deadline),
	// or a connection deleted before its rotation.
	Skipped Outcome = "skipped"
	Failed  Outcome = "failed" // see Result.Err and Result.Status
)

// Result is one client's outcome in a pass.
type Result struct {
	Client  string
	Outcome Outcome
	// Status is the state recorded for operators (StatusOK, StatusRetrying, ...); empty when the
	// pass attempted nothing.
	Status string
	// Grant is the grant type used or that would be used; empty when not due.
	Grant string
	// ExpiresAt is the UTC expiry of the access token in Vault after the pass, when known: the new
	// one after a rotation, the stored one otherwise (also after a failure).
	ExpiresAt time.Time
	// RefreshExpiresAt is when the refresh token in the credential secret expires, as stored after
	// the pass (refresh_token_expires_at); zero when none is stored. RefreshExpiryRead says the
	// pass read (or wrote) the credential secret of a grant with a refresh token, so that a zero
	// RefreshExpiresAt means none is stored rather than not looked at.
	RefreshExpiresAt  time.Time
	RefreshExpiryRead bool
	// Gone is set when the target is a connection whose credential secret is deleted (found
	// deleted, or deleted during its rotation): an operator offboarded it. A configured client is
	// never gone; its deleted secret fails the next pass.
	Gone bool
	// RefreshTokenKept is set when a refresh_token grant succeeded and its response carried the
	// refresh token sent, or none (RFC 6749 §6: a server need not rotate it): the credential secret
	// holds the same refresh token as before, which is no failure.
	RefreshTokenKept bool
	// Err says why the client failed; nil unless Outcome is a failure. It holds no secret.
	Err error
}

// Failure reports whether the outcome counts as a failure: the exit code 1 of --once.
func (o Outcome) Failure() bool { return o == Failed || o == AccessTokenRefused }

// AnyFailed reports whether any result failed.
func AnyFailed(results []Result) bool {
	for _, r := range results {
		if r.Outcome.Failure() {
			return true
		}
	}
	return false
}

// oneLine is an error's text on one line: Vault refuses metadata values with control characters,
// and a log line is one line per client.
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }
