package rotate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"token-rotator/vault"
)

// TargetState is one client's or connection's state, as `token-rotator status` shows it. It holds
// no token value.
type TargetState struct {
	Name  string
	Grant string
	// ExpiresAt is when the access token in Vault stops working; zero when there is none.
	ExpiresAt time.Time
	// LastSuccess, LastAttempt, Status, Error and Failures come from the secret's metadata (KV v2),
	// as recorded (RFC 3339 times, a decimal count), empty when not recorded; Status is "deleted"
	// for a connection whose secret is gone (skipped by the pass, not a problem).
	LastSuccess, LastAttempt string
	Status, Error, Failures  string
	// ExpiresBeforeNextRun flags a token that will have stopped working before the next scheduled
	// run can replace it.
	ExpiresBeforeNextRun bool
	// Problem is why the state could not be read, if it could not.
	Problem string
}

// StatusDeleted is the state of a connection whose secret is deleted: the pass skips it.
const StatusDeleted = "deleted"

// Stuck reports whether the state waits for a human: reauthorization_required or rotation_lost.
func (s TargetState) Stuck() bool {
	return s.Status == StatusReauthorizationRequired || s.Status == StatusRotationLost
}

// Report reads every target's state from Vault (all shards), without writing anything or asking
// the token endpoint. nextRun is when the schedule runs next. A connection that is gone is
// reported as deleted, as the pass skips it; a client waiting for a human is reported so even when
// its metadata says otherwise, by the rule the pass applies.
func (r *Rotator) Report(ctx context.Context, nextRun time.Time) []TargetState {
	ts, failed := r.targets(ctx, Shard{})
	var out []TargetState
	for _, f := range failed {
		if f.Err != nil {
			st := TargetState{Name: f.Client, Problem: f.Err.Error()}
			for _, c := range r.Clients {
				if c.Name == f.Client {
					st.Grant = c.Grant // its connections could not be listed; its grant is still known
				}
			}
			out = append(out, st)
		}
	}
	for _, t := range ts {
		st := TargetState{Name: t.name, Grant: t.client.Grant}
		secret, err := r.Store.Read(ctx, t.secret)
		if gone, lost := r.vanished(ctx, t, err); gone {
			st.Status = StatusDeleted
			out = append(out, st)
			continue
		} else if lost != nil {
			err = lost
		}
		if err != nil {
			st.Problem = err.Error()
			out = append(out, st)
			continue
		}
		m := secret.Metadata
		st.LastSuccess, st.LastAttempt, st.Status, st.Error, st.Failures =
			m[metaLastSuccess], m[metaLastAttempt], m[metaStatus], m[metaError], m[metaFailures]
		if status, ok := stuck(secret.Metadata, secret.Version, secret.Data); ok {
			st.Status = status
		} else if st.Stuck() { // by the pass's rule it is not waiting any more: say what comes next
			st.Error = fmt.Sprintf("was %s (%s); a new code or refresh token is stored since: the next pass that finds it due tries it", st.Status, st.Error)
			st.Status = StatusRetrying
		}
		output := secret
		if t.output != t.secret {
			if output, err = r.readOrEmpty(ctx, t.output); err != nil {
				st.Problem = err.Error()
			}
		}
		if output != nil {
			if _, exp, _ := due(r.now(), output.Data, 0); !exp.IsZero() {
				st.ExpiresAt = exp
			}
		}
		st.ExpiresBeforeNextRun = st.ExpiresAt.IsZero() || !nextRun.IsZero() && st.ExpiresAt.Before(nextRun)
		out = append(out, st)
	}
	return out
}

// Check is one finding of Validate: Problem empty means fine; Note says more when fine (a
// connection deleted, so skipped).
type Check struct {
	Name    string `json:"name"`
	Problem string `json:"problem,omitempty"`
	Note    string `json:"note,omitempty"`
}

// Validate applies, for every target and without a token request or a write, every check a pass
// applies before it spends anything: the job's Vault token outlasts a rotation; the secrets can
// be read and hold what the grant needs; the client is not waiting for a human (its state as
// recorded, by the pass's rule); and the job's Vault token may write what a rotation writes
// (Vault's capabilities endpoint). A connection that is gone is fine: the pass skips it.
func (r *Rotator) Validate(ctx context.Context) []Check {
	var out []Check
	if err := r.Store.EnsureToken(ctx, r.tokenMargin()); err != nil {
		out = append(out, Check{Name: "vault token", Problem: oneLine(fmt.Errorf("would not last a rotation, so every client would fail: %w", err))})
	}
	ts, failed := r.targets(ctx, r.Shard)
	for _, f := range failed {
		if f.Err != nil {
			out = append(out, Check{Name: f.Client, Problem: f.Err.Error()})
		}
	}
	for _, t := range ts {
		c := Check{Name: t.name}
		if err := r.validate(ctx, t); errors.Is(err, errConnectionGone) {
			c.Note = "deleted: skipped by the pass"
		} else if err != nil {
			c.Problem = oneLine(err)
		}
		out = append(out, c)
	}
	return out
}

// errConnectionGone is a connection whose secret is deleted.
var errConnectionGone = errors.New("connection deleted")

func (r *Rotator) validate(ctx context.Context, t target) error {
	secret, err := r.Store.Read(ctx, t.secret)
	if gone, lost := r.vanished(ctx, t, err); gone {
		return errConnectionGone
	} else if lost != nil {
		return lost
	}
	if err != nil {
		return err
	}
	credentials := secret.Data
	if t.shared != "" {
		if credentials, err = r.sharedCredentials(ctx, t.shared); err != nil {
			return err
		}
	}
	req, err := request(t.client, credentials, secret.Data)
	if err != nil {
		return fmt.Errorf("secret %s: %w", t.secret, err)
	}
	if status, ok := stuck(secret.Metadata, secret.Version, secret.Data); ok {
		return fmt.Errorf("%s: %s; the pass will not try it until a new code or refresh token is stored in %s", status, secret.Metadata[metaError], t.secret)
	}
	var output *vault.Secret = secret
	if t.output != t.secret {
		if output, err = r.readOrEmpty(ctx, t.output); err != nil {
			return err
		}
	}
	if err := r.preflight(ctx, t, output, req); err != nil {
		return err
	}
	return r.retentionProblem(ctx, t, secret)
}
