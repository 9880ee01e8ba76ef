package storafake

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRefreshTokenTTL: by default a refresh response carries no refresh_token_expires_in (Stora's
// contract); with SetRefreshTokenTTL it carries the refresh token's remaining life, and a refresh
// token past it is refused with invalid_grant.
func TestRefreshTokenTTL(t *testing.T) {
	s := New()
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }
	id, secret := s.AddClient()
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	refresh := func(rt string) (int, map[string]any) {
		t.Helper()
		body, _ := json.Marshal(map[string]string{"grant_type": "refresh_token", "refresh_token": rt, "client_id": id, "client_secret": secret})
		resp, err := http.Post(srv.URL+"/oauth2/token", "application/json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}

	code, m := refresh(s.IssueRefreshToken(id, DefaultScope))
	if _, ok := m["refresh_token_expires_in"]; code != 200 || ok {
		t.Errorf("default: %d %v, want 200 without refresh_token_expires_in", code, m)
	}

	s.SetRefreshTokenTTL(time.Hour)
	rt := s.IssueRefreshToken(id, DefaultScope)
	now = now.Add(20 * time.Minute)
	code, m = refresh(rt)
	if code != 200 || m["refresh_token_expires_in"] != float64(3600) {
		t.Errorf("with a TTL: %d %v, want 200 with refresh_token_expires_in 3600 (the new token's)", code, m)
	}
	next, _ := m["refresh_token"].(string)
	now = now.Add(time.Hour)
	if code, m = refresh(next); code != 400 || m["error"] != "invalid_grant" {
		t.Errorf("an expired refresh token: %d %v, want 400 invalid_grant", code, m)
	}
}
