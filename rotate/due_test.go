package rotate

import (
	"strings"
	"testing"
	"time"

	"token-rotator/config"
	"token-rotator/oauth"
)

func TestDue(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
	for _, tc := range []struct {
		name string
		data map[string]any
		want bool
	}{
		{"nothing stored", map[string]any{}, true},
		{"no access token", map[string]any{"expires_at": at(time.Hour)}, true},
		{"no expiry", map[string]any{"access_token": "x"}, true},
		{"unreadable expiry", map[string]any{"access_token": "x", "expires_at": "tomorrow"}, true},
		{"expiry of the wrong type", map[string]any{"access_token": "x", "expires_at": 12345}, true},
		{"29m left", map[string]any{"access_token": "x", "expires_at": at(29 * time.Minute)}, true},
		{"expired", map[string]any{"access_token": "x", "expires_at": at(-time.Minute)}, true},
		{"far future is not trusted", map[string]any{"access_token": "x", "expires_at": "2099-01-01T00:00:00+05:00"}, true},
		{"exactly renew_before left is not yet due", map[string]any{"access_token": "x", "expires_at": at(30 * time.Minute)}, false},
		{"exactly 24h left is still believed", map[string]any{"access_token": "x", "expires_at": at(24 * time.Hour)}, false},
		{"31m left", map[string]any{"access_token": "x", "expires_at": at(31 * time.Minute)}, false},
		{"offset zone read right", map[string]any{"access_token": "x", "expires_at": now.Add(time.Hour).In(time.FixedZone("x", 3600*5)).Format(time.RFC3339)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _, why := due(now, tc.data, 30*time.Minute); got != tc.want {
				t.Errorf("due = %v (%s), want %v", got, why, tc.want)
			}
		})
	}
}

func TestRequestPicksGrant(t *testing.T) {
	t.Parallel()
	cc := config.Client{Name: "a", Grant: config.GrantClientCredentials, Scope: "public.contact:read"}
	ac := config.Client{Name: "p", Grant: config.GrantAuthorizationCode}
	creds := map[string]any{"client_id": "id", "client_secret": "s"}
	with := func(kv ...string) map[string]any {
		d := clone(creds)
		for i := 0; i < len(kv); i += 2 {
			d[kv[i]] = kv[i+1]
		}
		return d
	}
	for _, tc := range []struct {
		name    string
		client  config.Client
		data    map[string]any
		grant   string
		wantErr string
	}{
		{"client credentials", cc, creds, "client_credentials", ""},
		{"refresh token", ac, with("refresh_token", "r"), "refresh_token", ""},
		{"code waiting", ac, with("code", "c", "redirect_uri", "https://a.test"), "authorization_code", ""},
		{"code wins over an old refresh token (re-authorization)", ac, with("refresh_token", "r", "code", "c", "redirect_uri", "https://a.test"), "authorization_code", ""},
		{"code without redirect_uri", ac, with("code", "c"), "", "redirect_uri is required"},
		{"nothing to use", ac, creds, "", "authorize the client first"},
		{"no client_secret", cc, map[string]any{"client_id": "id"}, "", "client_id and client_secret are required"},
		{"client_id of the wrong type", cc, map[string]any{"client_id": 42, "client_secret": "s"}, "", "key client_id is a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := request(tc.client, tc.data, tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || r.GrantType != tc.grant {
				t.Fatalf("grant %q err %v, want %q", r.GrantType, err, tc.grant)
			}
		})
	}
}

// A client's auth method and encoding reach the request; a public client needs no client_secret,
// and one stored beside it is not put into the request.
func TestRequestCarriesAuthMethod(t *testing.T) {
	t.Parallel()
	basic := config.Client{Name: "b", Grant: config.GrantClientCredentials, Scope: "x", AuthMethod: config.AuthClientSecretBasic, Encoding: config.EncodingForm}
	r, err := request(basic, map[string]any{"client_id": "id", "client_secret": "s"}, nil)
	if err != nil || r.AuthMethod != oauth.AuthClientSecretBasic || r.Encoding != oauth.EncodingForm || r.ClientSecret != "s" {
		t.Errorf("basic: %q %q secret set %v, err %v", r.AuthMethod, r.Encoding, r.ClientSecret != "", err)
	}
	public := config.Client{Name: "p", Grant: config.GrantAuthorizationCode, AuthMethod: config.AuthNone, Encoding: config.EncodingJSON}
	for _, creds := range []map[string]any{{"client_id": "id"}, {"client_id": "id", "client_secret": "stored"}} {
		r, err := request(public, creds, map[string]any{"refresh_token": "r"})
		if err != nil || r.AuthMethod != oauth.AuthNone || r.ClientSecret != "" {
			t.Errorf("none with %v: method %q secret %v err %v", creds, r.AuthMethod, r.ClientSecret != "", err)
		}
	}
	if _, err := request(public, map[string]any{}, map[string]any{"refresh_token": "r"}); err == nil || !strings.Contains(err.Error(), "client_id is required") {
		t.Errorf("none without client_id: %v", err)
	}
	// A public client's code without its verifier is refused before any request: nothing else
	// proves the code is the client's own.
	code := map[string]any{"code": "c", "redirect_uri": "https://p.example/cb"}
	if _, err := request(public, map[string]any{"client_id": "id"}, code); err == nil || !strings.Contains(err.Error(), "code_verifier is required") {
		t.Errorf("none with a code and no code_verifier: %v", err)
	}
	code["code_verifier"] = "v"
	if r, err := request(public, map[string]any{"client_id": "id"}, code); err != nil || r.CodeVerifier != "v" {
		t.Errorf("none with a code and its verifier: %v", err)
	}
}
