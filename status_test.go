package main

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"token-rotator/internal/testenv"
)

// TestStatusOutput runs `status` over a target in each state it can show (ok, retrying,
// reauthorization_required, deleted, error, never tried) and checks both outputs as a user would:
// the table fits a 100-column terminal, with no padding after the last column and long errors on
// indented lines of their own; and every row of --output json has exactly the keys README's table
// lists, with the types it gives.
func TestStatusOutput(t *testing.T) {
	e := newEnv(t)
	id, secret := e.stora.AddClient()
	e.put("stora/acme", map[string]any{"client_id": id, "client_secret": secret})
	e.put("stora/wrong", map[string]any{"client_id": id, "client_secret": "not-the-secret"})
	e.put("stora/stale", map[string]any{"client_id": id, "client_secret": secret, "refresh_token": "r",
		"access_token": "old", "expires_at": time.Now().Add(-3 * time.Minute).UTC().Format(time.RFC3339),
		"refresh_token_expires_at": time.Now().Add(3 * time.Hour).UTC().Format(time.RFC3339)})
	e.put("stora/partner", map[string]any{"client_id": id, "client_secret": secret})
	e.put("stora/partner/connections/op-1", map[string]any{"refresh_token": "never-issued"})
	e.put("stora/partner/connections/op-2", map[string]any{"refresh_token": "offboarded"})
	cfg := e.config("  - name: acme\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/acme\n    output: apps/acme\n" +
		"  - name: wrong\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/wrong\n" +
		"  - name: stale\n    grant: authorization_code\n    secret: stora/stale\n" +
		"  - name: missing\n    grant: client_credentials\n    scope: public.contact:read\n    secret: stora/missing\n" +
		"  - name: partner\n    grant: authorization_code\n    secret: stora/partner\n    connections: stora/partner/connections\n")
	if code, out := e.run("--config", cfg, "--once", "--client", "acme", "--client", "wrong", "--client", "partner"); code != 1 {
		t.Fatalf("pass: exit %d, want 1 (wrong and partner/op-1 fail):\n%s", code, out)
	}
	if err := e.vault.Client.KVv2("secret").Delete(t.Context(), "stora/partner/connections/op-2"); err != nil {
		t.Fatal(err)
	}

	code, table := e.run("status", "--config", cfg)
	if code != 1 {
		t.Errorf("status: exit %d, want 1", code)
	}
	rows := map[string]string{}
	for i, line := range strings.Split(strings.TrimSuffix(table, "\n"), "\n") {
		if len(line) > tableWidth || strings.TrimRight(line, " ") != line {
			t.Errorf("line %d is %d columns, or ends in spaces: %q", i+1, len(line), line)
		}
		if name, _, _ := strings.Cut(line, " "); name != "" {
			rows[name] = line
		}
	}
	want := map[string]*regexp.Regexp{
		"CLIENT":       regexp.MustCompile(`^CLIENT +GRANT +EXPIRES +LAST SUCCESS +STATE$`),
		"acme":         regexp.MustCompile(`^acme +client_credentials +in (2h|1h5\dm) +(<1m|\dm) ago +ok$`),
		"wrong":        regexp.MustCompile(`^wrong +client_credentials +- +- +retrying$`),
		"stale":        regexp.MustCompile(`^stale +authorization_code +\dm ago +- +-$`),
		"missing":      regexp.MustCompile(`^missing +client_credentials +- +- +error$`),
		"partner/op-1": regexp.MustCompile(`^partner/op-1 +authorization_code +- +- +reauthorization_required$`),
		"partner/op-2": regexp.MustCompile(`^partner/op-2 +authorization_code +- +- +deleted$`),
	}
	for name, re := range want {
		if !re.MatchString(rows[name]) {
			t.Errorf("row %s: %q, want %s", name, rows[name], re)
		}
	}
	// Under partner/op-1: the flag, then its error, wrapped, continuation lines indented further.
	_, after, _ := strings.Cut(table, rows["partner/op-1"]+"\n")
	block := regexp.MustCompile(`^    EXPIRES BEFORE NEXT RUN\n    error: the server refused the stored refresh token \(invalid_grant\)[^\n]*\n(      [^\n]+\n)+partner/op-2 `)
	if !block.MatchString(after) {
		t.Errorf("under partner/op-1, want the flag and its error wrapped on indented lines:\n%s", after)
	}
	if n := strings.Count(table, "\n    EXPIRES BEFORE NEXT RUN\n"); n != 3 {
		t.Errorf("%d rows flagged, want 3 (wrong and partner/op-1 have no token, stale's has expired)", n)
	}

	code, out := e.run("status", "--config", cfg, "--output", "json")
	if code != 1 {
		t.Errorf("status --output json: exit %d, want 1", code)
	}
	keys := statusKeys(t)
	dec := json.NewDecoder(bytes.NewReader([]byte(out)))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("status --output json: %v\n%s", err, out)
	}
	if len(doc) != 3 || !isType(doc["next_run"], "time") || !isType(doc["schedule"], "string") {
		t.Errorf("top level: %v, want next_run (a time), schedule, targets", doc)
	}
	targets, _ := doc["targets"].([]any)
	seen := map[string]map[bool]bool{} // key: seen null, seen a value
	statuses := map[any]bool{}
	for _, x := range targets {
		row, _ := x.(map[string]any)
		if len(row) != len(keys) {
			t.Errorf("row %v has %d keys, README lists %d", row["name"], len(row), len(keys))
		}
		for k, typ := range keys {
			v, ok := row[k]
			if !ok || !isType(v, typ) {
				t.Errorf("row %v: %s is %#v (present %v), README says %s", row["name"], k, v, ok, typ)
			}
			if seen[k] == nil {
				seen[k] = map[bool]bool{}
			}
			seen[k][v == nil] = true
		}
		statuses[row["status"]] = true
		if msg, _ := row["error"].(string); len(msg) > 300 {
			t.Errorf("row %v: error of %d bytes, README says at most 300", row["name"], len(msg))
		}
	}
	if len(targets) != len(want)-1 {
		t.Errorf("%d rows in JSON, want %d", len(targets), len(want)-1)
	}
	for _, s := range []any{"ok", "retrying", "reauthorization_required", "deleted", "error", nil} {
		if !statuses[s] {
			t.Errorf("no row with status %v: the rows do not cover every case", s)
		}
	}
	for k, typ := range keys { // every type README gives was met: a value, and null where allowed
		if !seen[k][false] || strings.HasSuffix(typ, " or null") != seen[k][true] {
			t.Errorf("%s (%s): seen a value %v, null %v", k, typ, seen[k][false], seen[k][true])
		}
	}
	// The exit code: 1 for a state that cannot be read alone, 0 for a client that is fine.
	if code, out := e.run("status", "--config", cfg, "--client", "missing"); code != 1 {
		t.Errorf("status --client missing: exit %d, want 1:\n%s", code, out)
	}
	if code, out := e.run("status", "--config", cfg, "--client", "acme"); code != 0 {
		t.Errorf("status --client acme: exit %d, want 0:\n%s", code, out)
	}
	assertNoSecrets(t, table+out, secret, str(e.get("apps/acme"), "access_token"))
}

// statusKeys reads the keys of a status row and their types from README's table under
// "token-rotator status".
func statusKeys(t *testing.T) map[string]string {
	t.Helper()
	section := testenv.DocSection(t, "README.md", "`token-rotator status`")
	keys := map[string]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| ([a-z ]+) \\|").FindAllStringSubmatch(section, -1) {
		keys[m[1]] = m[2]
	}
	if len(keys) < 5 {
		t.Fatalf("README's status section lists %d keys: %v", len(keys), keys)
	}
	return keys
}

// isType reports whether a decoded JSON value v is of README's type typ: string, time (an RFC 3339
// string in UTC), integer or boolean, each optionally "or null".
func isType(v any, typ string) bool {
	typ, nullable := strings.CutSuffix(typ, " or null")
	if v == nil {
		return nullable
	}
	switch typ {
	case "string":
		_, ok := v.(string)
		return ok
	case "time":
		s, _ := v.(string)
		at, err := time.Parse(time.RFC3339, s)
		return err == nil && at.Location() == time.UTC
	case "integer":
		n, ok := v.(json.Number)
		_, err := n.Int64()
		return ok && err == nil
	case "boolean":
		_, ok := v.(bool)
		return ok
	}
	return false
}
