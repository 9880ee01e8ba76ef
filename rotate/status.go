package rotate

import (
	"context"
	"strconv"
	"time"
)

// Statuses recorded on a credential secret's custom metadata (KV v2), for operators and alerts.
const (
	StatusOK = "ok"
	// StatusRetrying: the last attempt failed in a way the next pass may get past (the token
	// endpoint or Vault unavailable, a configuration or secret to fix).
	StatusRetrying = "retrying"
	// StatusReauthorizationRequired: the server refused the stored refresh token or code
	// (invalid_grant) and no newer one was stored elsewhere. An operator must authorize the
	// partner again; the job does not try the client until its secret changes.
	StatusReauthorizationRequired = "reauthorization_required"
	// StatusRotationLost: a refresh request failed in transit, and its one retry was refused
	// with invalid_grant: the server most likely rotated the token and the answer was lost. As
	// with reauthorization_required, the job waits for the secret to change.
	StatusRotationLost = "rotation_lost"
)

// Metadata keys, prefixed so they sit beside an operator's own.
const (
	metaStatus       = "rotator_status"
	metaLastAttempt  = "rotator_last_attempt"
	metaLastSuccess  = "rotator_last_success"
	metaError        = "rotator_error"
	metaFailures     = "rotator_consecutive_failures"
	metaStuckVersion = "rotator_stuck_at_version"
)

// maxStatusError caps the error text kept in metadata.
const maxStatusError = 300

// record writes a result's state to the credential secret's metadata. prev is the metadata read
// at the start; version is the secret's version after this attempt, kept for the statuses that
// wait for the secret to change. A failure to record is logged, never fatal: the rotation's outcome
// does not depend on it.
func (r *Rotator) record(ctx context.Context, path string, prev map[string]string, res Result, version int) {
	now := r.now().UTC().Format(time.RFC3339)
	fields := map[string]string{metaLastAttempt: now, metaStatus: res.Status}
	failures, _ := strconv.Atoi(prev[metaFailures])
	if res.Outcome == Rotated {
		fields[metaLastSuccess], fields[metaError], fields[metaFailures], fields[metaStuckVersion] = now, "", "0", ""
	} else {
		msg := ""
		if res.Err != nil {
			msg = res.Err.Error()
		}
		if len(msg) > maxStatusError {
			msg = msg[:maxStatusError]
		}
		fields[metaError], fields[metaFailures] = msg, strconv.Itoa(failures+1)
		if res.Status == StatusReauthorizationRequired || res.Status == StatusRotationLost {
			fields[metaStuckVersion] = strconv.Itoa(version)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := r.Store.SetStatus(ctx, path, fields); err != nil {
		r.logger().Warn("could not record status in metadata", "client", res.Client, "path", path, "error", err.Error())
	}
}

// stuck reports whether a client is waiting for a human: its status says so and its secret is
// still at the version the status was recorded at.
func stuck(meta map[string]string, version int) bool {
	s := meta[metaStatus]
	return (s == StatusReauthorizationRequired || s == StatusRotationLost) &&
		meta[metaStuckVersion] == strconv.Itoa(version)
}
