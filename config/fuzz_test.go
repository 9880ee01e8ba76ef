package config

import (
	"errors"
	"testing"
)

// FuzzParse feeds arbitrary files to the config loader. Whatever the input, it must not panic,
// an error must be a positioned *Error or Errors naming the file, and a config it accepts must
// hold what the rest of the program relies on. Seeds: testdata/fuzz/FuzzParse and the cases here.
func FuzzParse(f *testing.F) {
	client := "clients:\n  - {name: a, grant: client_credentials, scope: public.contact:read, secret: s}\n"
	for _, s := range []string{
		valid,
		client,
		"schedule: \"@every 10m\"\nrenew_before: 15m\n" + client,
		"schedule: \"CRON_TZ=Europe/London 0 * * * *\"\nrenew_before: 90m\n" + client,
		"vault:\n  address: ${TR_FUZZ_UNSET:-http://127.0.0.1:8200}\n" + client,
		"a: &x 1\nb: *x\n",
		client + "---\n" + client,
		"",
		"- a\n",
		"clients: [\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f.yaml", data)
		if err != nil {
			var e *Error
			var es Errors
			switch {
			case errors.As(err, &e):
				if e.File != "f.yaml" {
					t.Fatalf("error without the file: %v", err)
				}
			case errors.As(err, &es):
				for _, e := range es {
					if e.File != "f.yaml" {
						t.Fatalf("error without the file: %v", err)
					}
				}
			default:
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if len(c.Clients) == 0 || c.Cron == nil || c.RenewBefore <= 0 || c.RenewBefore >= AccessTokenLifetime {
			t.Fatalf("accepted %+v", c)
		}
		seen := map[string]bool{}
		for _, cl := range c.Clients {
			if cl.Name == "" || seen[cl.Name] || cl.Secret == "" || cl.Output == "" || checkTokenURL(cl.TokenURL) != nil {
				t.Fatalf("accepted client %+v", cl)
			}
			if cl.Grant != GrantClientCredentials && cl.Grant != GrantAuthorizationCode {
				t.Fatalf("accepted grant %q", cl.Grant)
			}
			seen[cl.Name] = true
		}
	})
}
