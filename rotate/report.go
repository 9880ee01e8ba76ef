package rotate

import (
	"context"
	"fmt"
	"time"
)

// TargetState is one client's or connection's state, as `token-rotator status` shows it. It holds
// no token value.
type TargetState struct {
	Name  string `json:"name"`
	Grant string `json:"grant"`
	// ExpiresAt is when the access token in Vault stops working; zero when there is none.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// LastSuccess, Status, Error and Failures come from the secret's metadata (KV v2).
	LastSuccess string `json:"last_success,omitempty"`
	Status      string `json:"status,omitempty"`
	Error       string `json:"error,omitempty"`
	Failures    string `json:"consecutive_failures,omitempty"`
	// ExpiresBeforeNextRun flags a token that will have stopped working before the next scheduled
	// run can replace it.
	ExpiresBeforeNextRun bool `json:"expires_before_next_run"`
	// Problem is why the state could not be read, if it could not.
	Problem string `json:"problem,omitempty"`
}

// Report reads every target's state from Vault (all shards), without writing anything or asking
// the token endpoint. nextRun is when the schedule runs next.
func (r *Rotator) Report(ctx context.Context, nextRun time.Time) []TargetState {
	ts, failed := r.targets(ctx, Shard{})
	var out []TargetState
	for _, f := range failed {
		out = append(out, TargetState{Name: f.Client, Problem: f.Err.Error()})
	}
	for _, t := range ts {
		st := TargetState{Name: t.name, Grant: t.client.Grant}
		secret, err := r.Store.Read(ctx, t.secret)
		if err != nil {
			st.Problem = err.Error()
			out = append(out, st)
			continue
		}
		st.LastSuccess, st.Status, st.Error, st.Failures =
			secret.Metadata[metaLastSuccess], secret.Metadata[metaStatus], secret.Metadata[metaError], secret.Metadata[metaFailures]
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

// Check is one finding of Validate.
type Check struct {
	Name    string `json:"name"`
	Problem string `json:"problem,omitempty"`
}

// Validate checks, for every target and without a token request or a write, that its secrets can
// be read, hold what its grant needs, and that the job's Vault token may write what a rotation
// writes (Vault's capabilities endpoint).
func (r *Rotator) Validate(ctx context.Context) []Check {
	ts, failed := r.targets(ctx, r.Shard)
	var out []Check
	for _, f := range failed {
		out = append(out, Check{Name: f.Client, Problem: f.Err.Error()})
	}
	for _, t := range ts {
		c := Check{Name: t.name}
		if err := r.validate(ctx, t); err != nil {
			c.Problem = oneLine(err)
		}
		out = append(out, c)
	}
	return out
}

func (r *Rotator) validate(ctx context.Context, t target) error {
	secret, err := r.Store.Read(ctx, t.secret)
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
	output := secret
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
