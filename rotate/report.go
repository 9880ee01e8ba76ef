package rotate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"token-rotator/config"
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
	// RefreshExpiresAt is when the refresh token in Vault stops working, as stored
	// (refresh_token_expires_at, from a server that sends refresh_token_expires_in); zero when
	// unknown. RefreshWarning says what to do when it is less than Rotator.RefreshWarning away;
	// empty otherwise.
	RefreshExpiresAt time.Time
	RefreshWarning   string
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
	ts, failed := r.targets(ctx, Shard{}, false)
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
		st.RefreshExpiresAt, st.RefreshWarning = r.refreshWarning(t, secret.Data)
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

// refreshWarning reads the refresh token expiry stored in a target's credential secret (data), and
// what to do about it when it is less than RefreshWarning away. A client_credentials client has
// no refresh token: nothing.
func (r *Rotator) refreshWarning(t target, data map[string]any) (time.Time, string) {
	if t.client.Grant == config.GrantClientCredentials {
		return time.Time{}, ""
	}
	exp := storedRefreshExpiry(data)
	left := exp.Sub(r.now())
	at := exp.Format(time.RFC3339)
	switch {
	case exp.IsZero() || r.RefreshWarning <= 0 || left >= r.RefreshWarning:
		return exp, ""
	case left <= 0:
		return exp, fmt.Sprintf("refresh token expired at %s (refresh_token_expires_at): the next refresh will likely be refused; authorize again (token-rotator authorize)", at)
	}
	return exp, fmt.Sprintf("refresh token expires at %s, in %s (refresh_token_expires_at): a pass refreshes it once it is within renew_before; if the server does not extend it, authorize again before %s (token-rotator authorize)", at, strings.TrimSuffix(left.Round(time.Minute).String(), "0s"), at)
}

// Check is one finding of Validate: Problem empty means fine; Note says more when fine (a
// connection deleted, so skipped); Warning, when fine, is something to act on before it fails
// (a refresh token that expires soon).
type Check struct {
	Name    string `json:"name"`
	Problem string `json:"problem,omitempty"`
	Note    string `json:"note,omitempty"`
	Warning string `json:"warning,omitempty"`
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
	ts, failed := r.targets(ctx, r.Shard, true)
	for _, f := range failed {
		if f.Err != nil {
			out = append(out, Check{Name: f.Client, Problem: f.Err.Error()})
		}
	}
	for _, t := range ts {
		c := Check{Name: t.name}
		var err error
		if c.Warning, err = r.validate(ctx, t); errors.Is(err, errConnectionGone) {
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

// validate checks one target; warning is its refresh token's expiry warning, when it reads.
func (r *Rotator) validate(ctx context.Context, t target) (warning string, err error) {
	secret, err := r.Store.Read(ctx, t.secret)
	if gone, lost := r.vanished(ctx, t, err); gone {
		return "", errConnectionGone
	} else if lost != nil {
		return "", lost
	}
	if err != nil {
		return "", err
	}
	_, warning = r.refreshWarning(t, secret.Data)
	return warning, r.checkTarget(ctx, t, secret)
}

func (r *Rotator) checkTarget(ctx context.Context, t target, secret *vault.Secret) error {
	var err error
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
