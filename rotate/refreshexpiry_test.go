package rotate

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"token-rotator/config"
	"token-rotator/oauth"
)

// TestRefreshTokenExpiryStored: what a rotation leaves in the credential secret's
// refresh_token_expires_at, in real Vault, for each kind of response: the granted expiry when the
// response gives one; removed when a new refresh token comes without one (the stored value
// described the old token); kept when the response keeps the stored refresh token (none, or the
// same one) and says nothing. The output secret, which apps read, never gets it; and the result
// says what is stored, for the metric.
func TestRefreshTokenExpiryStored(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	stored := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	granted := time.Now().Add(72 * time.Hour).UTC().Truncate(time.Second)
	client := config.Client{Name: "partner", Grant: config.GrantAuthorizationCode, Secret: "stora/partner", Output: "apps/partner"}
	for _, tc := range []struct {
		name    string
		refresh string    // the response's refresh_token: "" none, "rt-stored" the same
		expires time.Time // the response's refresh_token_expires_in, as an instant
		want    time.Time // zero: the key is absent
	}{
		{"new refresh token with an expiry", "rt-new", granted, granted},
		{"new refresh token without one: removed", "rt-new", time.Time{}, time.Time{}},
		{"no refresh token, no expiry: kept", "", time.Time{}, stored},
		{"the same refresh token, no expiry: kept", "rt-stored", time.Time{}, stored},
		{"the same refresh token with a new expiry", "rt-stored", granted, granted},
		{"no refresh token with a new expiry", "", granted, granted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w.put("stora/partner", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-stored",
				"refresh_token_expires_at": stored.Format(time.RFC3339)})
			ts := &tokens{fn: func(context.Context, oauth.Request) (*oauth.Token, error) {
				return &oauth.Token{AccessToken: "at-" + tc.name, TokenType: "Bearer", RefreshToken: tc.refresh,
					ExpiresAt: time.Now().Add(2 * time.Hour).UTC(), RefreshExpiresAt: tc.expires}, nil
			}}
			r := w.rotator(ts, client)
			r.Force = true
			res := r.Pass(context.Background())
			if res[0].Outcome != Rotated {
				t.Fatalf("outcome %s: %v", res[0].Outcome, res[0].Err)
			}
			d := w.data("stora/partner")
			got, ok := d["refresh_token_expires_at"]
			switch {
			case tc.want.IsZero() && ok:
				t.Errorf("refresh_token_expires_at %v, want it removed", got)
			case !tc.want.IsZero() && got != tc.want.Format(time.RFC3339):
				t.Errorf("refresh_token_expires_at %v, want %s", got, tc.want.Format(time.RFC3339))
			}
			if !res[0].RefreshExpiresAt.Equal(tc.want) || !res[0].RefreshExpiryRead {
				t.Errorf("result says %v (read %v), want %v", res[0].RefreshExpiresAt, res[0].RefreshExpiryRead, tc.want)
			}
			if out := w.data("apps/partner"); out["refresh_token_expires_at"] != nil || out["access_token"] != "at-"+tc.name {
				t.Errorf("output secret %v: want the access token and no refresh token expiry", keys(out))
			}
		})
	}
}

// TestRefreshTokenExpiryWhenOnlyTheOutputWriteFails: the credential write landed the new refresh
// token and its expiry, the output write failed; the result (and so the metric) says what the
// credential secret holds, not what it held before.
func TestRefreshTokenExpiryWhenOnlyTheOutputWriteFails(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	stored := time.Now().Add(10 * time.Hour).UTC().Truncate(time.Second)
	granted := time.Now().Add(72 * time.Hour).UTC().Truncate(time.Second)
	w.put("stora/cred", map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt-old",
		"refresh_token_expires_at": stored.Format(time.RFC3339)})
	h := &hookedStore{Store: w.store}
	h.write = func(ctx context.Context, path string, data map[string]any, version int) (int, error) {
		if path == "apps/out" {
			return 0, errors.New("vault said 503: unavailable")
		}
		return w.store.Write(ctx, path, data, version)
	}
	ts := &tokens{fn: func(context.Context, oauth.Request) (*oauth.Token, error) {
		return &oauth.Token{AccessToken: "at-new", TokenType: "Bearer", RefreshToken: "rt-new",
			ExpiresAt: time.Now().Add(2 * time.Hour).UTC(), RefreshExpiresAt: granted}, nil
	}}
	r := w.rotator(ts, config.Client{Name: "p", Grant: config.GrantAuthorizationCode, Secret: "stora/cred", Output: "apps/out"})
	r.Store, r.WriteDeadline, r.WriteBackoff, r.Force = h, 300*time.Millisecond, 50*time.Millisecond, true
	res := r.Pass(context.Background())[0]
	if got := w.data("stora/cred")["refresh_token_expires_at"]; got != granted.Format(time.RFC3339) {
		t.Fatalf("Vault holds refresh_token_expires_at %v, want the granted %s", got, granted.Format(time.RFC3339))
	}
	if !res.RefreshExpiresAt.Equal(granted) {
		t.Errorf("result says %v, want %v: what the credential secret holds", res.RefreshExpiresAt, granted)
	}
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// TestRefreshTokenAboutToExpireIsDue: a refresh token whose stored expiry is within renew_before
// is spent though the access token is fresh, and the reason says so; one further away, or unknown,
// is not; a client_credentials client ignores the key.
func TestRefreshTokenAboutToExpireIsDue(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	fresh := time.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339)
	at := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.RFC3339) }
	for _, tc := range []struct {
		name, grant, refreshExpiresAt string
		due                           bool
	}{
		{"20m left", config.GrantAuthorizationCode, at(20 * time.Minute), true},
		{"passed", config.GrantAuthorizationCode, at(-time.Hour), true},
		{"2h left", config.GrantAuthorizationCode, at(2 * time.Hour), false},
		{"unreadable", config.GrantAuthorizationCode, "soon", false},
		{"client_credentials ignores it", config.GrantClientCredentials, at(20 * time.Minute), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "stora/" + strings.ReplaceAll(tc.name, " ", "-")
			w.put(path, map[string]any{"client_id": "id", "client_secret": "s", "refresh_token": "rt", "access_token": "at",
				"expires_at": fresh, "refresh_token_expires_at": tc.refreshExpiresAt})
			ts := &tokens{fn: issued("rt-new")}
			c := config.Client{Name: "c", Grant: tc.grant, Scope: "public.contact:read", Secret: path, Output: path}
			var log bytes.Buffer
			r := w.rotator(ts, c)
			r.Logger = slog.New(slog.NewTextHandler(&log, nil))
			res := r.Pass(context.Background())
			if got := ts.calls.Load() == 1; got != tc.due {
				t.Fatalf("token requests %d (outcome %s), want due %v:\n%s", ts.calls.Load(), res[0].Outcome, tc.due, log.String())
			}
			if tc.due && !strings.Contains(log.String(), `reason="refresh token`) {
				t.Errorf("the log line does not give the refresh token as the reason:\n%s", log.String())
			}
		})
	}
}

// TestCodeExchangeStoresRefreshTokenExpiry: the exchange of a code (what `token-rotator authorize`
// leaves for the pass) stores the granted refresh token's expiry too, and one left from an earlier
// authorization goes when the new response has none.
func TestCodeExchangeStoresRefreshTokenExpiry(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	client := config.Client{Name: "partner", Grant: config.GrantAuthorizationCode, Secret: "stora/partner", Output: "apps/partner"}
	granted := time.Now().Add(180 * 24 * time.Hour).UTC().Truncate(time.Second)
	for _, want := range []time.Time{granted, {}} {
		w.put("stora/partner", map[string]any{"client_id": "id", "client_secret": "s", "code": "c", "redirect_uri": "https://x.example/cb",
			"refresh_token": "rt-old", "refresh_token_expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
		ts := &tokens{fn: func(_ context.Context, r oauth.Request) (*oauth.Token, error) {
			if r.GrantType != oauth.GrantAuthorizationCode {
				t.Errorf("grant %s, want the code exchanged", r.GrantType)
			}
			return &oauth.Token{AccessToken: "at-" + want.String(), TokenType: "Bearer", RefreshToken: "rt-" + want.String(),
				ExpiresAt: time.Now().Add(2 * time.Hour).UTC(), RefreshExpiresAt: want}, nil
		}}
		if res := w.rotator(ts, client).Pass(context.Background()); res[0].Outcome != Rotated {
			t.Fatalf("outcome %s: %v", res[0].Outcome, res[0].Err)
		}
		got, ok := w.data("stora/partner")["refresh_token_expires_at"]
		if want.IsZero() && ok || !want.IsZero() && got != want.Format(time.RFC3339) {
			t.Errorf("after a code exchange granting expiry %v: refresh_token_expires_at %v", want, got)
		}
	}
}
