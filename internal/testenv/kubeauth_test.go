//go:build unix

package testenv

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestKubeTokens: the tokens the tests log in with, judged by the real API server's TokenReview.
// A token SignToken signs with the right claims is authenticated (so a refusal below is the
// claim's doing, not the signature's); expired, forged, for another audience, or of a deleted
// service account, it is not. A legacy Secret token is authenticated. The audit log shows each
// review, and a caller whose own token is not for the API server's audience is refused (401).
func TestKubeTokens(t *testing.T) {
	k := StartKube(t, KubeOptions{})
	uid := k.ServiceAccount(t, "apps", "acme")
	if uid == "" {
		t.Fatal("no UID")
	}
	user := "system:serviceaccount:apps:acme"
	future := time.Now().Add(time.Hour)
	past := time.Now().Add(-time.Minute)

	check := func(name, token, audience string, want bool) {
		t.Helper()
		st := k.TokenReview(t, token, audience)
		if st.Authenticated != want || (want && st.User.Username != user) {
			t.Errorf("%s: authenticated %v as %q (%s), want %v", name, st.Authenticated, st.User.Username, st.Error, want)
		}
		t.Logf("%s: authenticated=%v %s", name, st.Authenticated, st.Error)
	}
	check("TokenRequest", k.TokenRequest(t, "apps", "acme", "vault", 0), "vault", true)
	check("TokenRequest for another audience", k.TokenRequest(t, "apps", "acme", "other", 0), "vault", false)
	check("signed, valid", k.SignToken(t, k.ServiceAccountClaims(t, "apps", "acme", "vault", future)), "vault", true)
	check("signed, expired", k.SignToken(t, k.ServiceAccountClaims(t, "apps", "acme", "vault", past)), "vault", false)
	check("forged", k.ForgeToken(t, k.ServiceAccountClaims(t, "apps", "acme", "vault", future)), "vault", false)
	check("legacy", k.LegacyToken(t, "apps", "acme"), DefaultAudience, true)

	// The audit log: a caller with a token for vault is refused, one for the API server is heard.
	call := func(bearer string) int {
		req, err := http.NewRequest(http.MethodPost, k.URL+TokenReviewPath, strings.NewReader(`{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"x.y.z"}}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+bearer)
		req.Header.Set("Content-Type", "application/json")
		resp, err := k.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := call(k.TokenRequest(t, "apps", "acme", "vault", 0)); code != http.StatusUnauthorized {
		t.Errorf("TokenReview with a bearer token for vault: %d, want 401", code)
	}
	if code := call(k.TokenRequest(t, "apps", "acme", "", 0)); code != http.StatusForbidden {
		t.Errorf("TokenReview by acme, not bound to system:auth-delegator: %d, want 403", code)
	}
	revs := k.Reviews(t)
	if len(revs) != 2 || revs[0].Code != 401 || revs[0].Bearer != "" || revs[1].Code != 403 || revs[1].Bearer != user {
		t.Errorf("audit log: %+v, want a 401 and a 403 as %s", revs, user)
	}

	old := k.TokenRequest(t, "apps", "acme", "vault", 0)
	k.DeleteServiceAccount(t, "apps", "acme")
	check("deleted service account", old, "vault", false)
	k.ServiceAccount(t, "apps", "acme")
	check("same name made again, old token", old, "vault", false)
}
