package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const valid = `token_url: https://public-api.stora.co/oauth2/token
schedule: "*/5 * * * *"
renew_before: 30m
vault:
  address: http://127.0.0.1:8200
  auth: {method: token}
  kv_mount: secret
clients:
  - name: acme
    grant: client_credentials
    scope: "public.contact:read public.invoice:read"
    secret: stora/acme
    output: stora/acme/token
  - name: partner
    grant: authorization_code
    secret: stora/partner
`

func TestParseValid(t *testing.T) {
	c, err := Parse("config.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if c.RenewBefore != 30*time.Minute || len(c.Clients) != 2 {
		t.Fatalf("config %+v", c)
	}
	p := c.Client("partner")
	if p.Output != "stora/partner" || p.TokenURL != DefaultTokenURL {
		t.Errorf("partner defaults: output %q token_url %q", p.Output, p.TokenURL)
	}
	next := c.Cron.Next(time.Date(2026, 1, 1, 10, 2, 0, 0, time.UTC))
	if want := time.Date(2026, 1, 1, 10, 5, 0, 0, time.UTC); !next.Equal(want) {
		t.Errorf("next run %v, want %v (UTC)", next, want)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse("c.yaml", []byte("clients:\n  - {name: a, grant: authorization_code, secret: s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.TokenURL != DefaultTokenURL || c.Schedule != "*/5 * * * *" || c.RenewBefore != 30*time.Minute ||
		c.Vault.KVMount != "secret" || c.Vault.Auth.Method != AuthToken {
		t.Errorf("defaults %+v", c)
	}
	// README's configuration table states these defaults too.
	if c.Concurrency != 4 || c.RateLimit != (RateLimit{PerSecond: 10, PerMinute: 60}) || c.PassDeadline != 10*time.Minute {
		t.Errorf("concurrency %d, rate_limit %+v, pass_deadline %v; README says 4, 10/s and 60/min, 10m", c.Concurrency, c.RateLimit, c.PassDeadline)
	}
	if c.RefreshWarning != 24*time.Hour {
		t.Errorf("refresh_token_warning %v; README says 24h", c.RefreshWarning)
	}
}

func TestScheduleZone(t *testing.T) {
	c, err := Parse("c.yaml", []byte("schedule: \"CRON_TZ=Europe/London 0 * * * *\"\nrenew_before: 90m\nclients:\n  - {name: a, grant: authorization_code, secret: s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	// 10:30 UTC in July is 11:30 in London; the next run is 12:00 London = 11:00 UTC.
	next := c.Cron.Next(time.Date(2026, 7, 1, 10, 30, 0, 0, time.UTC)).UTC()
	if want := time.Date(2026, 7, 1, 11, 0, 0, 0, time.UTC); !next.Equal(want) {
		t.Errorf("next %v, want %v", next, want)
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("TR_TEST_ADDR", "https://vault.internal:8200")
	c, err := Parse("c.yaml", []byte("vault:\n  address: ${TR_TEST_ADDR}\n  kv_mount: ${TR_TEST_UNSET:-kv}\nclients:\n  - {name: a, grant: authorization_code, secret: s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Vault.Address != "https://vault.internal:8200" || c.Vault.KVMount != "kv" {
		t.Errorf("expanded %q %q", c.Vault.Address, c.Vault.KVMount)
	}
}

func TestErrors(t *testing.T) {
	client := "clients:\n  - name: a\n    grant: client_credentials\n    scope: public.contact:read\n    secret: s\n"
	cases := []struct {
		name, yaml string
		// want is how the error starts: the file, then line:column where the error has a place
		// in the file, then the field at fault, then (part of) the message.
		want string
	}{
		{"unknown key", "renew_before: 30m\nrenew_befor: 1h\n" + client, `c.yaml:2:1: renew_befor: unknown field "renew_befor"`},
		{"unknown key in a flow mapping", "clients:\n  - {name: a, grant: authorization_code, secret: s, bogus: 1}\n", `c.yaml:2:53: clients[0].bogus: unknown field "bogus"`},
		{"empty client", "clients: [{}]\n", "c.yaml:1:11: clients[0].name: required"},
		{"empty mapping for a string", "token_url: {}\n" + client, "c.yaml:1:12: token_url: want a string, not a mapping"},
		{"unknown nested key", client + "    outputs: x\n", `c.yaml:6:5: clients[0].outputs: unknown field "outputs"`},
		{"bad cron", "schedule: \"61 * * * *\"\n" + client, "c.yaml:1:11: schedule: not a cron schedule"},
		{"zone without schedule", "schedule: \"CRON_TZ=UTC\"\n" + client, "c.yaml:1:11: schedule: not a cron schedule"},
		{"bad duration", "renew_before: 30 minutes\n" + client, `c.yaml:1:15: renew_before: "30 minutes" is not a duration; write one such as 30m`},
		// A number where a duration belongs is told the duration to write at once, not to quote it
		// and then that the quoted number is not a duration.
		{"number for a duration", "renew_before: 30\n" + client, "c.yaml:1:15: renew_before: 30 is a number; write a duration such as 30m or 30s"},
		{"quoted number for a duration", "renew_before: \"30\"\n" + client, `c.yaml:1:15: renew_before: "30" is not a duration; write one such as 30m or 30s`},
		{"fraction for a duration", "pass_deadline: 1.5\n" + client, "c.yaml:1:16: pass_deadline: 1.5 is a number; write a duration such as 1.5m or 1.5s"},
		{"negative number for a duration", "pass_deadline: -1\n" + client, "c.yaml:1:16: pass_deadline: -1 is a number; write a duration such as 30m"},
		{"quoted number for pass_deadline", "pass_deadline: '600'\n" + client, `c.yaml:1:16: pass_deadline: "600" is not a duration; write one such as 600m or 600s`},
		{"word for pass_deadline", "pass_deadline: ten minutes\n" + client, `c.yaml:1:16: pass_deadline: "ten minutes" is not a duration; write one such as 10m`},
		{"boolean for a duration", "renew_before: true\n" + client, "c.yaml:1:15: renew_before: want a duration such as 30m, not true or false"},
		{"@every a number", "schedule: \"@every 30\"\n" + client, `c.yaml:1:11: schedule: not a cron schedule: @every needs a duration such as 30m or 30s, not "30"`},
		{"negative duration", "renew_before: -5m\n" + client, "c.yaml:1:15: renew_before: must be positive"},
		{"zero duration", "renew_before: 0s\n" + client, "c.yaml:1:15: renew_before: must be positive"},
		{"renew_before shorter than the schedule gap", "schedule: \"0 * * * *\"\nrenew_before: 30m\n" + client, "c.yaml:2:15: renew_before: 30m0s is shorter than the 1h0m0s between two scheduled runs"},
		{"weekday schedule has a weekend gap", "schedule: \"*/5 * * * 1-5\"\nrenew_before: 1h59m\n" + client, "c.yaml:2:15: renew_before: 1h59m0s is shorter than the 48h5m0s between"},
		{"January only", "schedule: \"* * * 1 *\"\n" + client, "c.yaml: renew_before: 30m0s is shorter than the"},
		{"first half of each month", "schedule: \"* * 1-15 * *\"\n" + client, "c.yaml: renew_before: 30m0s is shorter than the"},
		{"leap day", "schedule: \"0 0 29 2 *\"\n" + client, "c.yaml: renew_before: 30m0s is shorter than the"},
		{"never runs", "schedule: \"0 0 30 2 *\"\n" + client, "c.yaml:1:11: schedule: not a cron schedule: the schedule never runs"},
		{"@every 0s", "schedule: \"@every 0s\"\n" + client, "c.yaml:1:11: schedule: not a cron schedule: @every needs an interval of at least 1s"},
		{"@every negative", "schedule: \"@every -5m\"\n" + client, "c.yaml:1:11: schedule: not a cron schedule: @every needs an interval of at least 1s"},
		{"@every 1ns", "schedule: \"CRON_TZ=UTC @every 1ns\"\n" + client, "c.yaml:1:11: schedule: not a cron schedule: @every needs an interval of at least 1s"},
		{"renew_before as long as the token life", "renew_before: 2h\n" + client, "c.yaml:1:15: renew_before: 2h0m0s is not shorter than the 2h0m0s life of an access token"},
		{"@every gap", "schedule: \"@every 2h\"\nrenew_before: 1h\n" + client, "c.yaml:2:15: renew_before: 1h0m0s is shorter than the 2h0m0s"},
		{"duplicate names", client + "  - {name: a, grant: authorization_code, secret: t}\n", `c.yaml:6:12: clients[1].name: duplicate client name "a"`},
		{"bad name", "clients:\n  - {name: Acme Corp, grant: authorization_code, secret: t}\n", `c.yaml:2:12: clients[0].name: "Acme Corp" may hold only`},
		{"unknown grant", "clients:\n  - name: a\n    grant: password\n    secret: s\n", `c.yaml:3:12: clients[0].grant: unknown grant "password"`},
		{"missing grant", "clients:\n  - name: a\n    secret: s\n", "c.yaml:2:5: clients[0].grant: required"},
		{"missing secret path", "clients:\n  - name: a\n    grant: authorization_code\n", "c.yaml:2:5: clients[0].secret: required"},
		{"client_credentials without scope", "clients:\n  - name: a\n    grant: client_credentials\n    secret: s\n", "c.yaml:2:5: clients[0].scope: required"},
		{"http token_url not loopback", "token_url: http://public-api.stora.co/oauth2/token\n" + client, `c.yaml:1:12: token_url: "http://public-api.stora.co/oauth2/token": http is allowed only to a loopback address`},
		{"http client token_url not loopback", client + "    token_url: http://10.0.0.1/oauth2/token\n", "c.yaml:6:16: clients[0].token_url:"},
		{"ftp token_url", "token_url: ftp://x/\n" + client, `c.yaml:1:12: token_url: "ftp://x/": scheme must be https`},
		{"no clients", "renew_before: 30m\n", "c.yaml: clients: at least one client is required"},
		{"unknown auth method", "vault:\n  auth: {method: userpass}\n" + client, `c.yaml:2:18: vault.auth.method: unknown auth method "userpass"`},
		{"kubernetes without role", "vault:\n  auth: {method: kubernetes}\n" + client, "c.yaml:2:10: vault.auth.role: required"},
		{"approle without secret_id_file", "vault:\n  auth: {method: approle, role_id: r}\n" + client, "c.yaml:2:10: vault.auth.secret_id_file: required"},
		{"http authorize_url not loopback", "authorize_url: http://example.com/oauth2/authorize\n" + client, `c.yaml:1:16: authorize_url: "http://example.com/oauth2/authorize": http is allowed only to a loopback address`},
		{"approle without role_id", "vault:\n  auth: {method: approle, secret_id_file: /run/secret_id}\n" + client, "c.yaml:2:10: vault.auth.role_id: required"},
		{"unset environment variable", "vault:\n  address: ${TR_TEST_SURELY_UNSET}\n" + client, "c.yaml:2:12: vault.address: environment variable TR_TEST_SURELY_UNSET is not set"},
		// An alias is type-checked by the decoder, which places the error at the anchored value.
		{"wrong type", "renew_before: [1, 2]\n" + client, "c.yaml:1:15: renew_before: want a duration such as 30m, not a list"},
		{"list for a string", "token_url: [1]\n" + client, "c.yaml:1:12: token_url: want a string, not a list"},
		{"string for a section", "vault: yes\n" + client, "c.yaml:1:8: vault: want a mapping"},
		{"clients not a list", "clients: acme\n", "c.yaml:1:10: clients: want a list"},
		{"mapping for a name", "clients:\n  - name: {a: b}\n    grant: authorization_code\n    secret: s\n", "c.yaml:2:12: clients[0].name: want a string, not a mapping"},
		{"number for a name", "clients:\n  - {name: 42, grant: authorization_code, secret: s}\n", "c.yaml:2:12: clients[0].name: want a string (put it in quotes), not a number"},
		{"boolean for a path", "clients:\n  - {name: a, grant: authorization_code, secret: true}\n", "c.yaml:2:50: clients[0].secret: want a string (put it in quotes), not true or false"},
		{"quoted number for a count", "concurrency: '4'\n" + client, "c.yaml:1:14: concurrency: want a whole number, not a string"},
		{"fraction for a count", "concurrency: 4.9\n" + client, "c.yaml:1:14: concurrency: want a whole number, not a number"},
		{"concurrency out of range", "concurrency: 0\n" + client, "c.yaml:1:14: concurrency: 0 is out of range 1..256"},
		{"rate limit NaN", "rate_limit: {per_second: .nan}\n" + client, "c.yaml:1:26: rate_limit.per_second: want a number, not infinity or NaN"},
		{"rate limit string", "rate_limit: {per_second: '10'}\n" + client, "c.yaml:1:26: rate_limit.per_second: want a number, not a string"},
		{"rate limit too small to send anything", "rate_limit: {per_second: 0.0000001}\n" + client, "c.yaml:1:26: rate_limit.per_second: 1e-07 is out of range"},
		{"pass_deadline 1ns", "pass_deadline: 1ns\n" + client, "c.yaml:1:16: pass_deadline: 1ns is under 1s, the shortest allowed; write a duration such as 10m"},
		{"refresh_token_warning negative", "refresh_token_warning: -1h\n" + client, "c.yaml:1:24: refresh_token_warning: must not be negative (0s turns the warning off)"},
		{"refresh_token_warning a word", "refresh_token_warning: a day\n" + client, `c.yaml:1:24: refresh_token_warning: "a day" is not a duration; write one such as 24h`},
		{"refresh_token_warning a bare number", "refresh_token_warning: 24\n" + client, "c.yaml:1:24: refresh_token_warning: 24 is a number; write a duration such as 24m or 24s"},
		{"two clients, one output", client + "  - {name: b, grant: client_credentials, scope: public.contact:read, secret: t, output: s}\n", `c.yaml:6:89: clients[1].output: "s" is also a's secret (clients[0].secret)`},
		{"output_prefix over its own connections", "clients:\n  - {name: p, grant: authorization_code, secret: stora/p, connections: apps/p/conns, output_prefix: apps/p}\n", `c.yaml:2:101: clients[0].output_prefix: "apps/p" contains connections "apps/p/conns"`},
		{"output_prefix over the credentials", "clients:\n  - {name: p, grant: authorization_code, secret: p/partner, connections: p/partner/conns, output_prefix: p}\n", "c.yaml:2:106: clients[0].output_prefix:"},
		{"concurrency over 256", "concurrency: 257\n" + client, "c.yaml:1:14: concurrency: 257 is out of range 1..256"},
		{"rate limit over a million a second", "rate_limit: {per_second: 1000001}\n" + client, "c.yaml:1:26: rate_limit.per_second: 1.000001e+06 is out of range"},
		{"per-minute limit under one", "rate_limit: {per_minute: 0.5}\n" + client, "c.yaml:1:26: rate_limit.per_minute: 0.5 is out of range"},
		{"per-minute limit over 60 million", "rate_limit: {per_minute: 60000001}\n" + client, "c.yaml:1:26: rate_limit.per_minute: 6.0000001e+07 is out of range"},
		{"output_prefix over the credentials, connections elsewhere", "clients:\n  - {name: p, grant: authorization_code, secret: apps/p/cred, connections: conns/p, output_prefix: apps/p}\n", `c.yaml:2:100: clients[0].output_prefix: "apps/p" would put access tokens over the client's credentials "apps/p/cred"`},
		{"empty file", "", "c.yaml: the file is empty"},
		{"only a comment", "# nothing\n", "c.yaml: the file is empty"},
		{"two documents", client + "---\n" + client, "c.yaml:7:1: more than one YAML document"},
		{"a list at the top", "- a\n- b\n", "c.yaml:1:1: the top level must be a mapping"},
		{"syntax error", "clients: [\n", "c.yaml:1:10: "},
	}
	var placed, placedOnly, fieldOnly, fileOnly []string // case names by what their error names
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error\n  %v\nwant it to start\n  %s", err, tc.want)
			}
			var ce *Error
			var ces Errors
			if errors.As(err, &ces) && len(ces) > 0 {
				ce = ces[0]
			} else if !errors.As(err, &ce) {
				t.Fatalf("error is %T, want *Error or Errors", err)
			}
			switch {
			case ce.Line > 0 && ce.Field != "":
				placed = append(placed, tc.name)
			case ce.Line > 0:
				placedOnly = append(placedOnly, tc.name)
			case ce.Field != "":
				fieldOnly = append(fieldOnly, tc.name)
			default:
				fileOnly = append(fileOnly, tc.name)
			}
		})
	}
	t.Logf("RELIABILITY rejected | malformed configuration (`config.TestErrors`) | %d | an error that starts with file:line:column and the field at fault (%d); file:line:column alone, no one field being at fault (%d: %s); the file and the field, that field not being in the file (%d: %s); the file alone (%d: %s). The job exits 2 on it: asserted for one case (`TestMalformedConfigExits2NamingLine`)",
		len(cases), len(placed), len(placedOnly), strings.Join(placedOnly, ", "), len(fieldOnly), strings.Join(fieldOnly, ", "), len(fileOnly), strings.Join(fileOnly, ", "))
}

func TestSeveralErrorsReportedTogether(t *testing.T) {
	_, err := Parse("c.yaml", []byte("renew_before: nope\nclients:\n  - {name: a, grant: x, secret: s}\n"))
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Fatalf("error %v, want two errors", err)
	}
}

func TestByteOrderMark(t *testing.T) {
	if _, err := Parse("c.yaml", []byte("\xef\xbb\xbfclients:\n  - {name: a, grant: authorization_code, secret: s}\n")); err != nil {
		t.Fatal(err)
	}
}

func TestAnchorsAndAliases(t *testing.T) {
	// An alias holds its anchor's value, ${ENV} expanded. Both fields may be empty without an
	// error (token_url then falls back to the top-level one), so only the values decoded show
	// whether the aliases resolved.
	t.Setenv("TR_TEST_TOKEN_URL", "https://auth.example/oauth2/token")
	c, err := Parse("c.yaml", []byte(`clients:
  - name: a
    grant: authorization_code
    scope: &scope "public.contact:read public.invoice:read"
    secret: stora/a
    token_url: &url ${TR_TEST_TOKEN_URL}
  - {name: b, grant: authorization_code, scope: *scope, secret: stora/b, token_url: *url}
`))
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Client("b"); b.Scope != "public.contact:read public.invoice:read" || b.TokenURL != "https://auth.example/oauth2/token" {
		t.Errorf("client b: scope %q token_url %q, want the anchored values", b.Scope, b.TokenURL)
	}

	// An alias does not make an unknown key acceptable.
	c, err = Parse("c.yaml", []byte("clients:\n  - &base {name: a, grant: authorization_code, secret: s}\n  - {name: b, grant: authorization_code, secret: t}\nx_unused: *base\n"))
	if err == nil || !strings.Contains(err.Error(), `unknown field "x_unused"`) {
		t.Errorf("config %v error %v", c, err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load("/nonexistent/config.yaml"); err == nil || !strings.Contains(err.Error(), "/nonexistent/config.yaml") {
		t.Errorf("error %v", err)
	}
}

func TestGapOver(t *testing.T) {
	from := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		spec  string
		limit time.Duration
		want  time.Duration // 0: no gap over limit
	}{
		{"*/5 * * * *", 5 * time.Minute, 0},
		{"*/5 * * * *", 4 * time.Minute, 5 * time.Minute},
		{"0 * * * *", 30 * time.Minute, time.Hour},
		{"0,10 * * * *", 49 * time.Minute, 50 * time.Minute},
		{"0,10 * * * *", 50 * time.Minute, 0},
		{"*/5 8-17 * * *", time.Hour, 14*time.Hour + 5*time.Minute},
		{"@every 10m", 10 * time.Minute, 0},
		{"@every 10m", 9 * time.Minute, 10 * time.Minute},
	} {
		s, err := parseSchedule(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := gapOver(s, from, tc.limit); got != tc.want {
			t.Errorf("gapOver(%q, %v) = %v, want %v", tc.spec, tc.limit, got, tc.want)
		}
	}
}

func TestURLPasswordStaysOutOfErrors(t *testing.T) {
	_, err := Parse("c.yaml", []byte("token_url: http://user:s3cr3t-pass@example.com/oauth2/token\nvault:\n  kv_mount: secret\nclients:\n  - name: a\n    grant: client_credentials\n    scope: x\n    secret: a\n"))
	if err == nil || strings.Contains(err.Error(), "s3cr3t-pass") {
		t.Errorf("error %v holds the URL's password", err)
	}
}

// TestEdgesOfTheRangesAccepted: every documented bound is inclusive, and the loopback exception to
// https covers IP addresses as well as localhost, so each of these files loads.
func TestEdgesOfTheRangesAccepted(t *testing.T) {
	client := "clients:\n  - {name: a, grant: authorization_code, secret: s}\n"
	for _, tc := range []struct{ name, yaml string }{
		{"per_second 1/60", "rate_limit: {per_second: 0.016666666666666666}\n"},
		{"per_second a million", "rate_limit: {per_second: 1000000}\n"},
		{"per_minute off", "rate_limit: {per_minute: 0}\n"},
		{"per_minute 1", "rate_limit: {per_minute: 1}\n"},
		{"per_minute 60 million", "rate_limit: {per_minute: 60000000}\n"},
		{"concurrency 1", "concurrency: 1\n"},
		{"concurrency 256", "concurrency: 256\n"},
		{"https authorize_url of its own", "authorize_url: https://auth.example.com/oauth2/authorize\n"},
		{"pass_deadline 1s", "pass_deadline: 1s\n"},
		{"refresh_token_warning off", "refresh_token_warning: 0s\n"},
		{"refresh_token_warning a week", "refresh_token_warning: 168h\n"},
		{"@every 1s", "schedule: \"@every 1s\"\n"},
		{"runs at :00 and :45 every other hour, 75m apart at most", "schedule: \"0,45 */2 * * *\"\nrenew_before: 90m\n"},
		{"http to 127.0.0.1", "token_url: http://127.0.0.1:8080/oauth2/token\n"},
		{"http to ::1", "token_url: http://[::1]:8080/oauth2/token\n"},
		{"approle with both", "vault:\n  auth: {method: approle, role_id: r, secret_id_file: /run/secret_id}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse("c.yaml", []byte(tc.yaml+client)); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestLoadReadsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(valid), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.File != path || len(c.Clients) != 2 {
		t.Errorf("loaded %q with %d clients, want %q with 2", c.File, len(c.Clients), path)
	}
}

// TestPathsAreRelativeToTheMount: a path that repeats the KV mount or carries the KV v2 API's
// data/ or metadata/ segment names a secret nobody wrote (the job would read
// secret/data/secret/stora/acme); every path field is refused at load, at the value, with the
// path meant. A path that merely starts like the mount's name is fine.
func TestPathsAreRelativeToTheMount(t *testing.T) {
	partner := func(secret, connections, outputPrefix string) string {
		return "clients:\n  - name: p\n    grant: authorization_code\n    secret: " + secret +
			"\n    connections: " + connections + "\n    output_prefix: " + outputPrefix + "\n"
	}
	acme := func(secret, output string) string {
		return "clients:\n  - name: a\n    grant: client_credentials\n    scope: x\n    secret: " + secret + "\n    output: " + output + "\n"
	}
	for _, tc := range []struct{ name, mount, yaml, want string }{
		{"secret repeats the mount", "secret", acme("secret/stora/acme", "apps/acme"),
			`c.yaml:7:13: clients[0].secret: "secret/stora/acme" repeats the KV mount: paths are relative to vault.kv_mount ("secret"); write "stora/acme"`},
		{"secret with mount and data/", "secret", acme("secret/data/stora/acme", "apps/acme"),
			`c.yaml:7:13: clients[0].secret: "secret/data/stora/acme" repeats the KV mount and carries the KV API's data/ segment, which the job adds itself: paths are relative to vault.kv_mount ("secret"); write "stora/acme"`},
		{"secret with data/", "secret", acme("data/stora/acme", "apps/acme"),
			`c.yaml:7:13: clients[0].secret: "data/stora/acme" carries the KV API's data/ segment, which the job adds itself: paths are relative to vault.kv_mount ("secret"); write "stora/acme"`},
		{"leading slash", "secret", acme("/secret/stora/acme", "apps/acme"),
			`c.yaml:7:13: clients[0].secret: "secret/stora/acme" repeats the KV mount`},
		{"output with metadata/", "secret", acme("stora/acme", "metadata/apps/acme"),
			`c.yaml:8:13: clients[0].output: "metadata/apps/acme" carries the KV API's metadata/ segment, which the job adds itself: paths are relative to vault.kv_mount ("secret"); write "apps/acme"`},
		{"output repeats a mount of two segments", "kv/prod", acme("stora/acme", "kv/prod/apps/acme"),
			`c.yaml:8:13: clients[0].output: "kv/prod/apps/acme" repeats the KV mount: paths are relative to vault.kv_mount ("kv/prod"); write "apps/acme"`},
		{"shared secret with the mount", "secret", partner("secret/stora/partner", "stora/partner/connections", "apps/partner"),
			`c.yaml:6:13: clients[0].secret: "secret/stora/partner" repeats the KV mount: paths are relative to vault.kv_mount ("secret"); write "stora/partner"`},
		{"connections with data/", "secret", partner("stora/partner", "secret/data/stora/partner/connections", "apps/partner"),
			`c.yaml:7:18: clients[0].connections: "secret/data/stora/partner/connections" repeats the KV mount and carries the KV API's data/ segment, which the job adds itself: paths are relative to vault.kv_mount ("secret"); write "stora/partner/connections"`},
		{"output_prefix with the mount", "secret", partner("stora/partner", "stora/partner/connections", "secret/apps/partner"),
			`c.yaml:8:20: clients[0].output_prefix: "secret/apps/partner" repeats the KV mount: paths are relative to vault.kv_mount ("secret"); write "apps/partner"`},
		{"the mount itself", "secret", acme("secret/data", "apps/acme"),
			`c.yaml:7:13: clients[0].secret: "secret/data" repeats the KV mount and carries the KV API's data/ segment, which the job adds itself: paths are relative to vault.kv_mount ("secret"); name a path inside the mount`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte("vault:\n  kv_mount: "+tc.mount+"\n"+tc.yaml))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Count(err.Error(), "\n") > 0 {
				t.Errorf("got %v\nwant one error starting %s", err, tc.want)
			}
		})
	}
	for _, ok := range []string{acme("secrets/acme", "datastore/acme"), acme("stora/secret/acme", "apps/data/acme"), partner("stora/metadata-svc", "stora/p/connections", "apps/p")} {
		if _, err := Parse("c.yaml", []byte("vault:\n  kv_mount: secret\n"+ok)); err != nil {
			t.Errorf("a path relative to the mount was refused: %v", err)
		}
	}
}

// TestAuthorizeURLPerClient: a client with a token endpoint of its own is authorized at the
// authorize endpoint beside it, not at the one beside the global token_url; a client's own
// authorize_url wins over both.
func TestAuthorizeURLPerClient(t *testing.T) {
	c, err := Parse("c.yaml", []byte(`token_url: https://public-api.stora.co/oauth2/token
authorize_url: https://login.stora.co/oauth2/authorize
clients:
  - {name: global, grant: authorization_code, secret: a}
  - {name: same, grant: authorization_code, secret: b, token_url: https://public-api.stora.co/oauth2/token}
  - {name: own-token, grant: authorization_code, secret: c, token_url: https://sandbox.stora.co/oauth2/token}
  - {name: own-both, grant: authorization_code, secret: d, token_url: https://sandbox.stora.co/oauth2/token, authorize_url: https://sso.sandbox.stora.co/authorize}
  - {name: own-authorize, grant: authorization_code, secret: e, authorize_url: https://sso.stora.co/authorize}
`))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"global":        "https://login.stora.co/oauth2/authorize",
		"same":          "https://login.stora.co/oauth2/authorize",
		"own-token":     "https://sandbox.stora.co/oauth2/authorize",
		"own-both":      "https://sso.sandbox.stora.co/authorize",
		"own-authorize": "https://sso.stora.co/authorize",
	} {
		if got := c.Client(name).AuthorizeURL; got != want {
			t.Errorf("%s: authorize URL %s, want %s", name, got, want)
		}
	}
	for _, tc := range []struct{ yaml, want string }{
		{"clients:\n  - {name: a, grant: authorization_code, secret: s, authorize_url: http://sso.example/authorize}\n",
			`c.yaml:2:68: clients[0].authorize_url: "http://sso.example/authorize": http is allowed only to a loopback address`},
		{"clients:\n  - {name: a, grant: client_credentials, scope: x, secret: s, authorize_url: https://sso.example/authorize}\n",
			"c.yaml:2:78: clients[0].authorize_url: only an authorization_code client is authorized"},
	} {
		if _, err := Parse("c.yaml", []byte(tc.yaml)); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("got %v, want %s", err, tc.want)
		}
	}
}
