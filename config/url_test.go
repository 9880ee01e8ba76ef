package config

import (
	"strings"
	"testing"
)

// A URL's password stays out of every error, the URL parsed or not.
func TestURLPasswordStaysOutOfEveryError(t *testing.T) {
	for _, u := range []string{
		"https://user:s3cr3t-pass@/oauth2/token",        // no host
		"https://user:s3cr3t-pass%zz@example.com/token", // bad escape in the password
		"https://user:s3cr3t-pass@exa mple.com/token",   // space in the host
	} {
		if err := CheckURL(u); err == nil || strings.Contains(err.Error(), "s3cr3t-pass") {
			t.Errorf("CheckURL(%q): %v holds the URL's password", u, err)
		}
	}
}
