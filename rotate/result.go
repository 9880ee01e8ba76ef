package rotate

import (
	"strings"
	"time"
)

// Outcome is how one client's rotation ended in a pass.
type Outcome string

// Outcomes. Only Failed counts as a failure.
const (
	Rotated Outcome = "rotated" // a new access token is in Vault
	NotDue  Outcome = "not_due" // the stored access token has more than RenewBefore left
	DryRun  Outcome = "dry_run" // due, but --dry-run: nothing requested or written
	// ClaimedElsewhere: another process holds the claim on the secret and is rotating it.
	ClaimedElsewhere Outcome = "claimed_elsewhere"
	// RotatedElsewhere: the server refused the stored refresh token because another process had
	// already spent it, and that process stored the newer pair.
	RotatedElsewhere Outcome = "rotated_elsewhere"
	Skipped          Outcome = "skipped" // not started: the pass was cancelled (shutdown) before it
	Failed           Outcome = "failed"  // see Result.Err and Result.Status
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
	// Err says why the client failed; nil unless Outcome is Failed. It holds no secret.
	Err error
}

// AnyFailed reports whether any result failed.
func AnyFailed(results []Result) bool {
	for _, r := range results {
		if r.Outcome == Failed {
			return true
		}
	}
	return false
}

// oneLine is an error's text on one line: Vault refuses metadata values with control characters,
// and a log line is one line per client.
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }
