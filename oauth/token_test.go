package oauth

import (
	"fmt"
	"testing"
	"time"
)

func TestExpiry(t *testing.T) {
	life := Lifetimes{Default: 2 * time.Hour, Max: 24 * time.Hour}
	for _, tc := range []struct {
		name string
		raw  string
		want time.Time
		err  bool
	}{
		{"integer seconds", `7200`, sent.Add(2 * time.Hour), false},
		{"numeric string", `"7200"`, sent.Add(2 * time.Hour), false},
		{"fraction dropped", `7200.9`, sent.Add(2 * time.Hour), false},
		{"missing means the documented 2 hours", ``, sent.Add(2 * time.Hour), false},
		{"null means the documented 2 hours", `null`, sent.Add(2 * time.Hour), false},
		{"Unix time where a duration belongs (the contract's refresh example)", fmt.Sprint(sent.Add(2 * time.Hour).Unix()), sent.Add(2 * time.Hour), false},
		{"the contract's literal refresh example, now in the past", `1740242460`, sent.Add(2 * time.Hour), false},
		{"absurdly large", `999999999999`, sent.Add(2 * time.Hour), false},
		{"one second is a lifetime", `1`, sent.Add(time.Second), false},
		{"exactly the 24-hour cap is a duration", `86400`, sent.Add(24 * time.Hour), false},
		{"25 hours is over the cap", `90000`, sent.Add(2 * time.Hour), false},
		{"Unix time exactly at the cap is the expiry", fmt.Sprint(sent.Add(24 * time.Hour).Unix()), sent.Add(24 * time.Hour), false},
		{"Unix time a second past the cap is not believed", fmt.Sprint(sent.Add(24*time.Hour + time.Second).Unix()), sent.Add(2 * time.Hour), false},
		{"zero is already expired", `0`, time.Time{}, true},
		{"negative", `-5`, time.Time{}, true},
		{"not a number", `"soon"`, time.Time{}, true},
		{"boolean", `true`, time.Time{}, true},
		{"1e300", `1e300`, sent.Add(2 * time.Hour), false},
		{"beyond float range", `1e999`, sent.Add(2 * time.Hour), false},
		{"NaN string", `"NaN"`, time.Time{}, true},
		{"Inf string", `"Inf"`, time.Time{}, true},
		{"-Inf string", `"-Inf"`, time.Time{}, true},
		{"half a second", `0.5`, time.Time{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := expiry([]byte(tc.raw), sent, life)
			if (err != nil) != tc.err {
				t.Fatalf("error %v, want error %v", err, tc.err)
			}
			if !got.Equal(tc.want) {
				t.Errorf("expiry %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseTokenNormalises(t *testing.T) {
	life := Lifetimes{Default: 2 * time.Hour, Max: 24 * time.Hour}
	tok, err := parseToken([]byte(`{"access_token":"a","token_type":"bearer","expires_in":60,"refresh_token":null,"scope":["public.contact:read","public.unit:read"]}`), sent, life)
	if err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "Bearer" || tok.RefreshToken != "" || tok.Scope != "public.contact:read public.unit:read" {
		t.Errorf("token %+v", tok)
	}
}

func TestParseTokenRejectsBlankTokens(t *testing.T) {
	life := Lifetimes{Default: 2 * time.Hour, Max: 24 * time.Hour}
	for _, tc := range []struct{ name, body string }{ // scripts/reliability counts these
		{"blank access token", `{"access_token":"   ","token_type":"Bearer","expires_in":60}`},
		{"empty access token", `{"access_token":"","token_type":"Bearer","expires_in":60}`},
		{"newline in the access token", `{"access_token":"a\nb","token_type":"Bearer","expires_in":60}`},
		{"NUL in the refresh token", `{"access_token":"ok","token_type":"Bearer","expires_in":60,"refresh_token":"r\u0000"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseToken([]byte(tc.body), sent, life); err == nil {
				t.Errorf("%s: accepted", tc.body)
			}
		})
	}
	tok, err := parseToken([]byte(`{"access_token":"ok","token_type":"Bearer","expires_in":60,"refresh_token":"  "}`), sent, life)
	if err != nil || tok.RefreshToken != "" {
		t.Errorf("blank refresh_token: %+v %v, want treated as absent", tok, err)
	}
}
