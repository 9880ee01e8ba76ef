package rotate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
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
	// metaRefused is the fingerprint of the last refresh token the server refused, kept until a
	// grant succeeds: a refused refresh token is never spent again, whatever else changes.
	metaRefused = "rotator_refused_refresh_token"
	// metaMaybeSpent is the fingerprint of a refresh token whose refresh failed in transit twice:
	// the server may have rotated it unseen. If it is refused next, it was lost (rotation_lost).
	metaMaybeSpent = "rotator_maybe_spent_refresh_token"
)

// maxStatusError caps the error text kept in metadata.
const maxStatusError = 300

// record writes a result's state to the credential secret's metadata. prev is the metadata read
// at the start; version is the secret's version after this attempt, kept for the statuses that
// wait for the secret to change; extra are further fields to set. A failure to record is logged,
// never fatal: the rotation's outcome does not depend on it. A dry run records nothing.
func (r *Rotator) record(ctx context.Context, path string, prev map[string]string, res Result, version int, extra map[string]string) {
	if r.DryRun {
		return
	}
	now := r.now().UTC().Format(time.RFC3339)
	fields := map[string]string{metaLastAttempt: now, metaStatus: res.Status}
	failures, _ := strconv.Atoi(prev[metaFailures])
	switch {
	case res.Outcome == Rotated:
		fields[metaLastSuccess], fields[metaError], fields[metaFailures], fields[metaStuckVersion] = now, "", "0", ""
		fields[metaRefused], fields[metaMaybeSpent] = "", ""
	case res.Status == StatusOK: // reused: nothing new, nothing wrong
		fields[metaError], fields[metaFailures], fields[metaStuckVersion] = "", "0", ""
	default:
		msg := ""
		if res.Err != nil { // one line: Vault refuses metadata values with control characters
			msg = oneLine(res.Err)
		}
		if len(msg) > maxStatusError {
			msg = strings.ToValidUTF8(msg[:maxStatusError], "")
		}
		fields[metaError], fields[metaFailures] = msg, strconv.Itoa(failures+1)
		if res.Status == StatusReauthorizationRequired || res.Status == StatusRotationLost {
			fields[metaStuckVersion] = strconv.Itoa(version)
		}
	}
	for k, v := range extra {
		fields[k] = v
	}
	w := statusWrite{ctx: context.WithoutCancel(ctx), client: res.Client, path: path, fields: fields}
	if r.statusQueue != nil {
		r.statusQueue <- w // written off the rotation's path; Pass waits for the queue to drain
		return
	}
	r.writeStatus(w)
}

// statusWrite is one metadata update waiting to be written.
type statusWrite struct {
	ctx    context.Context
	client string
	path   string
	fields map[string]string
}

func (r *Rotator) writeStatus(w statusWrite) {
	ctx, cancel := context.WithTimeout(w.ctx, StatusWriteTimeout)
	defer cancel()
	if err := r.Store.SetStatus(ctx, w.path, w.fields); err != nil {
		r.logger().Warn("could not record status in metadata", "client", w.client, "path", w.path, "error", err.Error())
	}
}

// startStatusWriters lets record queue metadata writes for the length of a pass, so that a
// rotation's worker moves on as soon as the pair is stored. The returned drain waits until every
// queued write is done.
func (r *Rotator) startStatusWriters() (drain func()) {
	r.statusQueue = make(chan statusWrite, 256)
	var wg sync.WaitGroup
	for i := 0; i < max(1, r.Concurrency/2); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := range r.statusQueue {
				r.writeStatus(w)
			}
		}()
	}
	return func() {
		close(r.statusQueue)
		wg.Wait()
		r.statusQueue = nil
	}
}

// stuck reports whether a client is waiting for a human, and as what: its status says so and its
// secret is still at the version the status was recorded at; or the refresh token it holds is one
// the server refused, with no code waiting to replace it.
func stuck(meta map[string]string, version int, data map[string]any) (string, bool) {
	s := meta[metaStatus]
	if (s == StatusReauthorizationRequired || s == StatusRotationLost) && meta[metaStuckVersion] == strconv.Itoa(version) {
		return s, true
	}
	if rt := str(data, keyRefreshToken); rt != "" && str(data, keyCode) == "" && meta[metaRefused] == fingerprint(rt) {
		return StatusReauthorizationRequired, true
	}
	return "", false
}

// fingerprint names a refresh token without revealing it: the first 16 hex digits of its SHA-256.
func fingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:8])
}
