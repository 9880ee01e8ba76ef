package storafake

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestClientAuthentication(t *testing.T) {
	s := New()
	s.AddClientWith("my client:1", "s3 cr+t%/&x")
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	encoded := "Basic " + base64.StdEncoding.EncodeToString([]byte("my+client%3A1:s3+cr%2Bt%25%2F%26x"))
	form := func(v url.Values) (string, string) { return "application/x-www-form-urlencoded", v.Encode() }
	for _, tc := range []struct {
		name        string
		auth        string
		contentType string
		body        string
		want        int
	}{
		{"basic (form-encoded) + form body", encoded, "application/x-www-form-urlencoded", "grant_type=client_credentials", 200},
		{"basic + JSON body", encoded, "application/json", `{"grant_type":"client_credentials"}`, 200},
		{"post, form body", "", func() string { c, _ := form(nil); return c }(),
			url.Values{"grant_type": {"client_credentials"}, "client_id": {"my client:1"}, "client_secret": {"s3 cr+t%/&x"}}.Encode(), 200},
		{"basic and body secret at once", encoded, "application/x-www-form-urlencoded",
			url.Values{"grant_type": {"client_credentials"}, "client_id": {"my client:1"}, "client_secret": {"s3 cr+t%/&x"}}.Encode(), 400}, // invalid_request, as oidc-provider
		{"basic with a wrong secret", "Basic " + base64.StdEncoding.EncodeToString([]byte("my+client%3A1:nope")), "application/json", `{"grant_type":"client_credentials"}`, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", srv.URL+"/oauth2/token", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.contentType)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("HTTP %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}
