package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"token-rotator/internal/testenv"
)

// TestOffboardingAConnection follows README's "Offboarding an operator" with the real vault CLI:
// the commands it prints, run with the policy it prints (and refused with the job's), offboard
// one connection metadata and all (op-4711) and another by a soft delete (op-4712), beside one
// that stays (op-4713). Then the pass, status and validate, run with the job's own policy, agree:
// op-4711 is named by none of them, op-4712 is deleted and skipped, neither is a problem (exit 0),
// and nothing is written for either. An undelete brings op-4712 back.
func TestOffboardingAConnection(t *testing.T) {
	e := newEnv(t)
	const redirect = "https://partner.example/callback"
	id, secret := e.stora.AddClient()
	e.put("stora/partner", map[string]any{"client_id": id, "client_secret": secret})
	ops := []string{"op-4711", "op-4712", "op-4713"}
	for _, op := range ops {
		e.put("stora/partner/connections/"+op, map[string]any{"code": e.stora.IssueCode(id, redirect, "public.contact:read", ""), "redirect_uri": redirect})
	}
	cfg := e.config("  - name: partner\n    grant: authorization_code\n    secret: stora/partner\n    connections: stora/partner/connections\n    output_prefix: apps/partner\n")
	if code, out := e.run("--config", cfg, "--once"); code != 0 {
		t.Fatalf("onboarding pass: exit %d:\n%s", code, out)
	}

	handedOut := str(e.get("apps/partner/op-4711"), "access_token")

	section := testenv.DocSection(t, "README.md", "Offboarding an operator")
	commands := codeBlock(t, section, "sh")
	adminPolicy := codeBlock(t, section, "hcl")
	jobPolicy, err := os.ReadFile("deploy/vault/token-rotator.hcl")
	if err != nil {
		t.Fatal(err)
	}
	job, admin := e.tokenWithPolicy("token-rotator", string(jobPolicy)), e.tokenWithPolicy("offboarding", adminPolicy)
	vault := func(token string, args ...string) (string, error) {
		cmd := exec.Command(testenv.RequireVault(t), args...)
		cmd.Env = append(os.Environ(), "VAULT_ADDR="+e.vault.Addr, "VAULT_TOKEN="+token, "HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(commands), "\n") {
		lines = append(lines, l)
		if args := strings.Fields(l); len(args) < 2 || args[0] != "vault" {
			t.Fatalf("README's offboarding command %q is not a vault command", l)
		}
	}
	if len(lines) != 2 || !strings.Contains(lines[0], "stora/partner/connections/op-4711") {
		t.Fatalf("README's offboarding commands: %q, want the connection's then its output's", lines)
	}
	for _, l := range lines {
		if out, err := vault(job, strings.Fields(l)[1:]...); err == nil || !strings.Contains(out, "permission denied") {
			t.Errorf("%s with the job's policy: %v\n%s\nwant permission denied", l, err, out)
		}
		if out, err := vault(admin, strings.Fields(l)[1:]...); err != nil {
			t.Fatalf("%s with README's policy: %v\n%s", l, err, out)
		}
	}
	if out, err := vault(admin, "kv", "delete", "-mount=secret", "stora/partner/connections/op-4712"); err != nil {
		t.Fatalf("vault kv delete with README's policy: %v\n%s", err, out)
	}
	outputVersion := e.get("apps/partner/op-4712").VersionMetadata.Version

	// The job, with its own policy: a forced pass would rotate anything it lists.
	t.Setenv("VAULT_TOKEN", job)
	before := len(e.stora.Requests())
	code, out := e.run("--config", cfg, "--once", "--force", "--log-format", "json")
	if code != 0 {
		t.Errorf("pass after offboarding: exit %d, want 0:\n%s", code, out)
	}
	outcomes := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		var line struct{ Client, Outcome, Reason string }
		if json.Unmarshal([]byte(l), &line) == nil && line.Client != "" {
			outcomes[line.Client] = line.Outcome + " " + line.Reason
		}
	}
	if len(outcomes) != 2 || outcomes["partner/op-4712"] != "skipped connection deleted" || !strings.HasPrefix(outcomes["partner/op-4713"], "rotated") {
		t.Errorf("pass after offboarding: %q; want op-4712 skipped as deleted, op-4713 rotated, op-4711 not named", outcomes)
	}
	if n := len(e.stora.Requests()) - before; n != 1 {
		t.Errorf("pass after offboarding sent %d token requests, want 1 (op-4713's)", n)
	}
	for _, p := range []string{"stora/partner/connections/op-4711", "apps/partner/op-4711", "stora/partner/connections/op-4712"} {
		if s, err := e.vault.Client.KVv2("secret").Get(context.Background(), p); err == nil && s.Data != nil {
			t.Errorf("%s holds version %d after the pass, want it left deleted", p, s.VersionMetadata.Version)
		}
	}
	if v := e.get("apps/partner/op-4712").VersionMetadata.Version; v != outputVersion {
		t.Errorf("op-4712's output was written after its connection was deleted: version %d, want %d", v, outputVersion)
	}

	if e.tokenInfo(handedOut) != 200 {
		t.Errorf("op-4711's last access token no longer works: README says nothing is revoked at Stora")
	}

	code, out = e.run("status", "--config", cfg)
	deleted := regexp.MustCompile(`(?m)^partner/op-4712 +authorization_code +- +- +deleted$`)
	if code != 0 || strings.Contains(out, "op-4711") || !deleted.MatchString(out) || !strings.Contains(out, "partner/op-4713") {
		t.Errorf("status after offboarding: exit %d, want 0, op-4712 deleted, op-4711 not named:\n%s", code, out)
	}
	code, out = e.run("status", "--config", cfg, "--output", "json")
	var st struct{ Targets []statusRow }
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 || len(st.Targets) != 2 || st.Targets[0].Name != "partner/op-4712" ||
		st.Targets[0].Status == nil || *st.Targets[0].Status != "deleted" || st.Targets[0].ExpiresBeforeNextRun {
		t.Errorf("status --output json after offboarding: exit %d, %v:\n%s", code, err, out)
	}
	code, out = e.run("validate", "--config", cfg)
	if code != 0 || strings.Contains(out, "op-4711") || !strings.Contains(out, "partner/op-4712: ok (deleted: skipped by the pass)\n") || !strings.Contains(out, "partner/op-4713: ok\n") {
		t.Errorf("validate after offboarding: exit %d, want 0, op-4712 ok as deleted, op-4711 not named:\n%s", code, out)
	}

	// A soft delete is undone by an undelete: the next pass that finds it due rotates it.
	m, err := e.vault.Client.KVv2("secret").GetMetadata(context.Background(), "stora/partner/connections/op-4712")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.vault.Client.KVv2("secret").Undelete(context.Background(), "stora/partner/connections/op-4712", []int{m.CurrentVersion}); err != nil {
		t.Fatal(err)
	}
	code, out = e.run("--config", cfg, "--once", "--force")
	if o := e.get("apps/partner/op-4712"); code != 0 || o.VersionMetadata.Version == outputVersion || e.tokenInfo(str(o, "access_token")) != 200 {
		t.Errorf("forced pass after an undelete: exit %d, want 0 and op-4712 rotated:\n%s", code, out)
	}
}

// codeBlock returns the first fenced code block of the given language in text.
func codeBlock(t *testing.T, text, lang string) string {
	t.Helper()
	_, rest, ok := strings.Cut(text, "```"+lang+"\n")
	block, _, closed := strings.Cut(rest, "```")
	if !ok || !closed {
		t.Fatalf("no ```%s block in:\n%s", lang, text)
	}
	return block
}

// tokenWithPolicy writes policy under name and returns a token holding it alone (and default).
func (e *env) tokenWithPolicy(name, policy string) string {
	e.t.Helper()
	if err := e.vault.Client.Sys().PutPolicy(name, policy); err != nil {
		e.t.Fatal(err)
	}
	tok, err := e.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{name}})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok.Auth.ClientToken
}
