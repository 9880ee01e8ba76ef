package rotate

import "time"

// The time budget of a rotation. From the moment a token request may have spent a refresh token,
// the new pair exists only in this process's memory until the write-back lands; two things can
// end that process's hold on it: the claim lapsing (another process may then spend the same
// refresh token) and the pod's grace period after SIGTERM running out (the kubelet kills the
// job mid-write). Every wait after a possible spend is bounded here, and the bounds add up here:
// ClaimedFor must stay under DefaultClaimTTL (TestBudgetFitsTheClaim) and ShutdownWait under each
// manifest's terminationGracePeriodSeconds (deploy's TestGracePeriodCoversTheShutdown). Raise
// one number alone and one of those tests fails.
const (
	// DefaultGrantRetry is how long after its claim a rotation may go on sending token requests
	// that spend nothing yet (waits for a request slot, the rate limit and transient failures
	// included). Past it, a rotation that sent nothing is skipped and one that did is failed.
	DefaultGrantRetry = 2 * time.Minute
	// RequestTimeout bounds one token request, whatever the token endpoint client's own timeout.
	RequestTimeout = 30 * time.Second
	// MaxSpentWait bounds the wait before the one retry of a request that may have spent a refresh
	// token (no answer, or a 5xx), a server's Retry-After and the rate limit included.
	MaxSpentWait = 30 * time.Second
	// DefaultWriteDeadline bounds the write-back, its retries through a Vault outage included.
	DefaultWriteDeadline = 8 * time.Minute
	// StatusWriteTimeout bounds recording a rotation's state in its secret's metadata.
	StatusWriteTimeout = 30 * time.Second
	// DefaultClaimTTL is how long a claim keeps other processes off a secret.
	DefaultClaimTTL = 15 * time.Minute
)

// AfterSpend is the longest a rotation runs from sending a request that may spend a refresh token
// to the end of its write-back: that request, the wait, the one retry, and the write-back.
const AfterSpend = RequestTimeout + MaxSpentWait + RequestTimeout + DefaultWriteDeadline

// ClaimedFor is the longest a rotation needs its claim: requests that spend nothing may go on
// until DefaultGrantRetry after the claim, the last of them may then spend, and AfterSpend follows.
// With an output secret of its own, the claim's release comes after the output write, up to
// StatusWriteTimeout later; by then the refresh token is durable and nothing needs the claim.
const ClaimedFor = DefaultGrantRetry + AfterSpend

// ShutdownWait is the longest a pass runs on after SIGTERM: a rotation whose request is in flight
// runs to the end of its write-back (or, when the grant failed, of releasing its claim), reads
// what another process left in the output when it finds one there, and records its state. Nothing
// else waits: rotations that spent nothing yet are skipped at once.
const ShutdownWait = AfterSpend + StatusWriteTimeout + StatusWriteTimeout

// DefaultTokenMargin is how long the job's own Vault token must still be valid when a rotation
// starts (Rotator.TokenMargin): as long as the claim the rotation takes moments later lives. The
// claim outlives the rotation (ClaimedFor), so the token does too, with DefaultClaimTTL −
// ClaimedFor for the reads before the claim: a token that Vault would stop accepting between the
// token request and the write-back could not store a refresh token that request spent, unless
// the job can log in again (kubernetes, approle, a token_file kept fresh).
const DefaultTokenMargin = DefaultClaimTTL
