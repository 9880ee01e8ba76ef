package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"token-rotator/rotate"
)

// TestGoneTargetHasNoExpiry: the expiry gauge says what Vault holds; a connection whose secret is
// deleted holds no token, so its series goes instead of staying at the old expiry (where an
// "expiring soon" alert would fire for ever).
func TestGoneTargetHasNoExpiry(t *testing.T) {
	for _, gone := range []rotate.Result{
		{Client: "fleet/op-1", Outcome: rotate.Skipped, Gone: true},
		{Client: "fleet/op-1", Outcome: rotate.Deleted, Gone: true},
	} {
		m := New()
		m.Rotation(rotate.Result{Client: "fleet/op-1", Outcome: rotate.Rotated, ExpiresAt: time.Now().Add(2 * time.Hour)}, time.Second)
		if n := testutil.CollectAndCount(m.expiry); n != 1 {
			t.Fatalf("%d expiry series after a rotation, want 1", n)
		}
		m.Rotation(gone, 0)
		if n := testutil.CollectAndCount(m.expiry); n != 0 {
			t.Errorf("after %s (gone): %d expiry series, want 0", gone.Outcome, n)
		}
	}
}

// TestUnlistedTargetLosesItsSeries: a connection deleted metadata and all is no longer listed; once
// a pass lists every prefix without it, its series go. A pass that could not list a prefix says
// nothing about the targets under it, and every series stays.
func TestUnlistedTargetLosesItsSeries(t *testing.T) {
	m := New()
	for _, c := range []string{"fleet/op-1", "fleet/op-2"} {
		m.Rotation(rotate.Result{Client: c, Outcome: rotate.Rotated, ExpiresAt: time.Now().Add(2 * time.Hour)}, time.Second)
	}
	m.Targets([]string{"fleet/op-1"}, false)
	if n := testutil.CollectAndCount(m.expiry); n != 2 {
		t.Errorf("after an incomplete listing: %d expiry series, want 2", n)
	}
	m.Targets([]string{"fleet/op-1"}, true)
	if n := testutil.CollectAndCount(m.expiry); n != 1 {
		t.Errorf("after a complete listing without fleet/op-2: %d expiry series, want 1", n)
	}
	if n := testutil.CollectAndCount(m.lastSuccess); n != 1 {
		t.Errorf("after a complete listing without fleet/op-2: %d last-success series, want 1", n)
	}
}

// TestReauthorizationGauge: token_rotator_reauthorization_required is 1 for a target whose pass
// found it waiting for an operator (reauthorization_required, or rotation_lost: a refresh lost in
// transit and its retry refused), 0 once a pass finds it otherwise, untouched by a pass that
// attempted nothing, and gone with the target.
func TestReauthorizationGauge(t *testing.T) {
	for _, stuck := range []string{rotate.StatusReauthorizationRequired, rotate.StatusRotationLost} {
		m := New()
		m.Rotation(rotate.Result{Client: "fleet/op-1", Outcome: rotate.Failed, Status: stuck}, 0)
		if v := testutil.ToFloat64(m.reauth.WithLabelValues("fleet/op-1")); v != 1 {
			t.Errorf("%s: gauge %v, want 1", stuck, v)
		}
		m.Rotation(rotate.Result{Client: "fleet/op-1", Outcome: rotate.NotDue}, 0)
		if v := testutil.ToFloat64(m.reauth.WithLabelValues("fleet/op-1")); v != 1 {
			t.Errorf("%s, then a pass that attempted nothing: gauge %v, want 1 still", stuck, v)
		}
		m.Rotation(rotate.Result{Client: "fleet/op-1", Outcome: rotate.Rotated, Status: rotate.StatusOK}, 0)
		if v := testutil.ToFloat64(m.reauth.WithLabelValues("fleet/op-1")); v != 0 {
			t.Errorf("%s, then rotated: gauge %v, want 0", stuck, v)
		}
		m.Rotation(rotate.Result{Client: "fleet/op-1", Outcome: rotate.Deleted, Gone: true}, 0)
		if n := testutil.CollectAndCount(m.reauth); n != 0 {
			t.Errorf("%s, then gone: %d series, want 0", stuck, n)
		}
	}
}

// TestRefreshTokenExpiryGauge: token_rotator_refresh_token_expiry_timestamp_seconds is set when a
// pass finds (or stores) a refresh token expiry, stays when a pass did not look at the credential
// secret, goes when a pass finds none stored (the server stopped saying), and goes with the target.
func TestRefreshTokenExpiryGauge(t *testing.T) {
	m := New()
	at := time.Date(2027, 5, 1, 12, 0, 0, 0, time.UTC)
	m.Rotation(rotate.Result{Client: "fleet/op-1", Outcome: rotate.Rotated, RefreshExpiresAt: at, RefreshExpiryRead: true}, 0)
	if v := testutil.ToFloat64(m.refreshExp.WithLabelValues("fleet/op-1")); v != float64(at.Unix()) {
		t.Errorf("after a rotation that stored it: %v, want %d", v, at.Unix())
	}
	m.Rotation(rotate.Result{Client: "fleet/op-1", Outcome: rotate.Failed}, 0) // the secret could not be read
	if n := testutil.CollectAndCount(m.refreshExp); n != 1 {
		t.Errorf("after a pass that did not read it: %d series, want 1 still", n)
	}
	m.Rotation(rotate.Result{Client: "fleet/op-1", Outcome: rotate.Rotated, RefreshExpiryRead: true}, 0)
	if n := testutil.CollectAndCount(m.refreshExp); n != 0 {
		t.Errorf("after a pass that found none stored: %d series, want 0", n)
	}
	m.Rotation(rotate.Result{Client: "fleet/op-1", Outcome: rotate.NotDue, RefreshExpiresAt: at, RefreshExpiryRead: true}, 0)
	m.Rotation(rotate.Result{Client: "fleet/op-1", Outcome: rotate.Deleted, Gone: true}, 0)
	if n := testutil.CollectAndCount(m.refreshExp); n != 0 {
		t.Errorf("after the target is gone: %d series, want 0", n)
	}
}
