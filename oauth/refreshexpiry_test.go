package oauth

import (
	"testing"
	"time"
)

// TestRefreshTokenExpiresIn pins what the client makes of refresh_token_expires_in: seconds from
// when the request was sent, by expires_in's rules, and unknown (zero) where expires_in would be
// refused or defaulted; the response itself is accepted whatever the value.
func TestRefreshTokenExpiresIn(t *testing.T) {
	const doc = `"access_token":"at","token_type":"Bearer","expires_in":7200,"refresh_token":"rt"`
	sixMonths := sent.Add(15897600 * time.Second)
	for _, tc := range []struct {
		name, member string
		want         time.Time
	}{
		{"absent", ``, time.Time{}},
		{"null", `,"refresh_token_expires_in":null`, time.Time{}},
		{"GitHub's six months", `,"refresh_token_expires_in":15897600`, sixMonths},
		{"as a string", `,"refresh_token_expires_in":"15897600"`, sixMonths},
		{"a fraction dropped", `,"refresh_token_expires_in":60.9`, sent.Add(time.Minute)},
		{"a Unix time within the cap", `,"refresh_token_expires_in":1800000000`, time.Unix(1800000000, 0).UTC()},
		{"a Unix time in the past", `,"refresh_token_expires_in":1700000000`, time.Time{}},
		{"absurd", `,"refresh_token_expires_in":1e300`, time.Time{}},
		{"zero", `,"refresh_token_expires_in":0`, time.Time{}},
		{"negative", `,"refresh_token_expires_in":-5`, time.Time{}},
		{"hex string", `,"refresh_token_expires_in":"0x10"`, time.Time{}},
		{"a boolean", `,"refresh_token_expires_in":true`, time.Time{}},
		{"an object", `,"refresh_token_expires_in":{"s":1}`, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := parseToken([]byte(`{`+doc+tc.member+`}`), sent, Lifetimes{Default: 2 * time.Hour, Max: 24 * time.Hour})
			if err != nil {
				t.Fatalf("response refused: %v", err)
			}
			if !tok.RefreshExpiresAt.Equal(tc.want) || tok.RefreshExpiresAt.Location() != time.UTC {
				t.Errorf("RefreshExpiresAt = %v, want %v (UTC)", tok.RefreshExpiresAt, tc.want)
			}
			if !tok.ExpiresAt.Equal(sent.Add(2*time.Hour)) || tok.RefreshToken != "rt" {
				t.Errorf("the rest changed: %+v", tok)
			}
		})
	}
}
