package rotate

import (
	"context"
	"testing"
	"time"

	"token-rotator/config"
	"token-rotator/internal/testenv"
)

// TestWhatAppsHoldAfterARotation holds docs/apps.md's table of what the access token an app read before
// a rotation does afterwards, cell by cell, against the real Doorkeeper: Doorkeeper keeps an access
// token and its refresh token in one row, and refreshing revokes the row.
func TestWhatAppsHoldAfterARotation(t *testing.T) {
	t.Parallel()
	for _, immediate := range []bool{true, false} {
		mode := map[bool]string{true: "revoked at once", false: "revoked on use"}[immediate]
		t.Run("authorization_code refresh, "+mode, func(t *testing.T) {
			t.Parallel()
			d := newDoorkeeperWorld(t, testenv.DoorkeeperOptions{RevokeImmediately: immediate})
			c, _ := d.partner(t, "apps/partner")
			r := d.rotator(c)
			r.Force = true
			if res := r.Pass(context.Background())[0]; res.Outcome != Rotated {
				t.Fatalf("first pass: %s (%v)", res.Outcome, res.Err)
			}
			before := str(d.data("apps/partner"), keyAccessToken) // what an app read
			if res := r.Pass(context.Background())[0]; res.Outcome != Rotated {
				t.Fatalf("rotation: %s (%v)", res.Outcome, res.Err)
			}
			after := str(d.data("apps/partner"), keyAccessToken)
			oldNow := d.server.TokenInfo(t, before)
			if immediate && oldNow != 401 {
				t.Errorf("the token apps held: HTTP %d right after the refresh, want 401", oldNow)
			}
			if !immediate {
				if oldNow != 200 {
					t.Errorf("the token apps held: HTTP %d right after the refresh, want 200 until the new one is used", oldNow)
				}
				if got := d.server.TokenInfo(t, after); got != 200 {
					t.Fatalf("the new token: HTTP %d", got)
				}
				if got := d.server.TokenInfo(t, before); got != 401 {
					t.Errorf("the token apps held: HTTP %d once any app used the new one, want 401", got)
				}
			}
			then := ""
			if !immediate {
				then = ", then 401 once any app used the new one"
			}
			t.Logf("RELIABILITY apps | authorization_code (refresh), refresh tokens %s | the access token apps held: HTTP %d right after the job refreshed%s", mode, oldNow, then)
		})
		t.Run("client_credentials, "+mode, func(t *testing.T) {
			t.Parallel()
			d := newDoorkeeperWorld(t, testenv.DoorkeeperOptions{RevokeImmediately: immediate})
			r := d.clientCredentials(t)
			before := str(d.data("apps/cc"), keyAccessToken)
			if res := r.Pass(context.Background())[0]; res.Outcome != Rotated {
				t.Fatalf("rotation: %s (%v)", res.Outcome, res.Err)
			}
			after := str(d.data("apps/cc"), keyAccessToken)
			if d.server.TokenInfo(t, after) != 200 || d.server.TokenInfo(t, before) != 200 {
				t.Errorf("after a client credentials rotation and a use of the new token, the token apps held must work until its own expiry")
			}
			t.Logf("RELIABILITY apps | client_credentials, refresh tokens %s | the access token apps held: works until its own expiry, the new one used or not", mode)
		})
	}
	t.Run("client_credentials, reuse_access_token", func(t *testing.T) {
		t.Parallel()
		d := newDoorkeeperWorld(t, testenv.DoorkeeperOptions{ReuseAccessToken: true})
		r := d.clientCredentials(t)
		before := str(d.data("apps/cc"), keyAccessToken)
		res := r.Pass(context.Background())[0]
		if res.Outcome != Reused || str(d.data("apps/cc"), keyAccessToken) != before || d.server.TokenInfo(t, before) != 200 {
			t.Errorf("with token reuse: %s, token changed %v; want the same token handed back, still working", res.Outcome, str(d.data("apps/cc"), keyAccessToken) != before)
		}
		if time.Until(res.ExpiresAt) > 2*time.Hour {
			t.Errorf("the reused token's expiry %v is more than its 2 h life away", res.ExpiresAt)
		}
		t.Logf("RELIABILITY apps | client_credentials, reuse_access_token | the server hands back the same token (outcome reused); nothing new until it expires")
	})
}

// clientCredentials stores a client_credentials client writing to apps/cc and returns a forced
// Rotator for it, after a first pass has stored a token there.
func (d *doorkeeperWorld) clientCredentials(t *testing.T) *Rotator {
	d.put("stora/cc", map[string]any{"client_id": d.id, "client_secret": d.secret})
	c := config.Client{Name: "cc", Grant: config.GrantClientCredentials, Scope: "public.contact:read", Secret: "stora/cc", Output: "apps/cc", TokenURL: d.server.Endpoint()}
	r := d.rotator(c)
	r.Force = true
	if res := r.Pass(context.Background())[0]; res.Outcome != Rotated {
		t.Fatalf("first pass: %s (%v)", res.Outcome, res.Err)
	}
	return r
}
