//go:build unix

package testenv

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestDoorkeeperAPI holds the real Doorkeeper's protected resource (APIURL, the stand-in for the
// Stora Public API) to what an app meets there, in both revocation modes: 200 JSON for a live
// token; Doorkeeper's 401 invalid_token for no token, an unknown one and a revoked one; 403 for a
// token without the scope; and, after a refresh, the old access token as docs/apps.md's table says: 401
// at once, or (revoke on use) 200 until the new one is used at this endpoint, then 401, the use
// having revoked the old refresh token as well.
func TestDoorkeeperAPI(t *testing.T) {
	for _, immediate := range []bool{false, true} {
		t.Run(modeName(immediate), func(t *testing.T) {
			t.Parallel()
			d := StartDoorkeeper(t, DoorkeeperOptions{RevokeImmediately: immediate})
			id, secret := d.AddClient(t, dkRedirect, dkScopes)

			at, rt := d.IssueTokenPair(t, id, "public.contact:read")
			status, header, body := apiGet(t, d.APIURL, "Bearer "+at)
			var contacts struct {
				Contacts []map[string]any `json:"contacts"`
			}
			if status != 200 || json.Unmarshal(body, &contacts) != nil || len(contacts.Contacts) == 0 {
				t.Errorf("live token: HTTP %d %q, want 200 and a JSON list of contacts", status, body)
			}
			if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("live token: Content-Type %q", ct)
			}

			for name, auth := range map[string]string{"no token": "", "unknown token": "Bearer not-a-token"} {
				status, header, _ := apiGet(t, d.APIURL, auth)
				wantInvalidToken(t, name, status, header)
			}
			other, _ := d.IssueTokenPair(t, id, "public.invoice:read")
			if st := d.CallAPI(t, other); st != 403 {
				t.Errorf("token without public.contact:read: HTTP %d, want 403", st)
			}

			// A refresh, then the old access token.
			r := dkPost(t, d.TokenURL, map[string]string{"grant_type": "refresh_token", "refresh_token": rt, "client_id": id, "client_secret": secret})
			wantTokens(t, "refresh", r, true)
			newAT, newRT := r.str("access_token"), r.str("refresh_token")
			if immediate {
				status, header, _ := apiGet(t, d.APIURL, "Bearer "+at)
				wantInvalidToken(t, "old access token right after the refresh", status, header)
			} else {
				if st := d.CallAPI(t, at); st != 200 {
					t.Errorf("old access token before the new one is used: HTTP %d, want 200", st)
				}
				if d.RefreshTokenRevoked(t, rt) {
					t.Errorf("old refresh token revoked before the new access token was used")
				}
				if st := d.CallAPI(t, newAT); st != 200 {
					t.Fatalf("new access token: HTTP %d", st)
				}
				if !d.RefreshTokenRevoked(t, rt) {
					t.Errorf("using the new access token at the API did not revoke the old refresh token")
				}
				status, header, _ := apiGet(t, d.APIURL, "Bearer "+at)
				wantInvalidToken(t, "old access token once the new one was used", status, header)
			}
			if st := d.CallAPI(t, newAT); st != 200 {
				t.Errorf("new access token: HTTP %d, want 200", st)
			}

			// Revoked by the operator (the row: access and refresh token).
			d.RevokeRefreshToken(t, newRT)
			status, header, _ = apiGet(t, d.APIURL, "Bearer "+newAT)
			wantInvalidToken(t, "revoked token", status, header)
		})
	}
}

// apiGet sends GET url with the Authorization header auth (none when empty).
func apiGet(t *testing.T, url, auth string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := testHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body
}

func wantInvalidToken(t *testing.T, what string, status int, header http.Header) {
	t.Helper()
	if status != 401 {
		t.Errorf("%s: HTTP %d, want 401", what, status)
	}
	if got := header.Get("WWW-Authenticate"); !strings.HasPrefix(got, `Bearer realm="Doorkeeper", error="invalid_token"`) {
		t.Errorf("%s: WWW-Authenticate %q", what, got)
	}
}
