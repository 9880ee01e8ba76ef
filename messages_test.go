package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"token-rotator/internal/testenv"
)

// TestSubcommandAfterFlags runs the job with the subcommand after its flags, as a newcomer types
// it: the error says the subcommand comes first and gives the line to run, and that line runs the
// subcommand (here to the config it cannot read, before any Vault). A value that happens to be a
// subcommand's name is a value; the code an operator pasted is never repeated.
func TestSubcommandAfterFlags(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "x.yaml")
	for _, tc := range []struct {
		args []string
		want string // the line the error suggests, after "token-rotator "
	}{
		{[]string{"--config", missing, "validate"}, "validate --config " + missing},
		{[]string{"--config", missing, "--output", "json", "status"}, "status --config " + missing + " --output json"},
		{[]string{"--once", "--config=" + missing, "authorize", "--client", "acme"}, "authorize --once --config=" + missing + " --client acme"},
	} {
		code, out := runRotator(tc.args...)
		sub := strings.Fields(tc.want)[0]
		want := `token-rotator: "` + sub + `" is a subcommand and comes first: token-rotator ` + tc.want + "\n"
		if code != 2 || out != want {
			t.Errorf("%q: exit %d, output\n%s\nwant exit 2 and\n%s", tc.args, code, out, want)
			continue
		}
		if sub == "authorize" {
			continue // its flags differ: --once is not one of them
		}
		code, out = runRotator(strings.Fields(tc.want)...)
		if wantRun := "token-rotator: read config: open " + missing; code != 2 || !strings.HasPrefix(out, wantRun) {
			t.Errorf("the suggested %q: exit %d, output\n%s\nwant exit 2 and %q", tc.want, code, out, wantRun)
		}
	}

	code, out := runRotator("--client", "status", "--config", missing)
	if code != 2 || !strings.HasPrefix(out, "token-rotator: read config: open "+missing) {
		t.Errorf("--client status: exit %d, output\n%s\nwant the config read, status taken as the client's name", code, out)
	}

	code, out = runRotator("--client", "acme", "--code", "c0de-from-the-redirect", "--code-verifier=v3rifier", "--redirect-uri", "https://app.example/cb", "authorize")
	want := `token-rotator: "authorize" is a subcommand and comes first: token-rotator authorize --client acme --code ... --code-verifier=... --redirect-uri https://app.example/cb` + "\n"
	if code != 2 || out != want {
		t.Errorf("authorize with a code: exit %d, output\n%s\nwant exit 2 and\n%s", code, out, want)
	}
	if strings.Contains(out, "c0de") || strings.Contains(out, "v3rifier") {
		t.Errorf("the error repeats the code or the verifier:\n%s", out)
	}
}

// TestDefaultVaultAddressNamedAfterTheWait runs the built job with neither VAULT_ADDR nor
// vault.address, so that the vault client takes its default, https://127.0.0.1:8200, where nothing
// listens. The job's start waits out an unavailable Vault (30 s, rotate.UntilVault), then exits 2
// with an error that names the address, why it was used and what to set. In parallel: the wait is
// time only (the vault package's TestDefaultAddressNamedWhenUnreachable holds the cases).
func TestDefaultVaultAddressNamedAfterTheWait(t *testing.T) {
	t.Parallel()
	if c, err := net.DialTimeout("tcp", "127.0.0.1:8200", time.Second); err == nil {
		c.Close()
		t.Skip("something listens on 127.0.0.1:8200, the vault client's default address")
	}
	cfg := writeConfig(t, "clients:\n  - {name: acme, grant: client_credentials, scope: public.contact:read, secret: stora/acme}\n")
	cmd := exec.Command(testenv.JobBinary(t), "--once", "--config", cfg, "--log-format", "json")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "VAULT_TOKEN=x")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2:\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(stderr.String(), `"msg":"vault unavailable; waiting"`) {
		t.Errorf("the job did not wait for Vault before giving up:\n%s", stderr.String())
	}
	const want = "127.0.0.1:8200: connect: connection refused (https://127.0.0.1:8200 is the vault client's default address, used because VAULT_ADDR is unset and the config has no vault.address: set either to your Vault's address)"
	if !strings.HasPrefix(last, "token-rotator: vault at https://127.0.0.1:8200") || !strings.HasSuffix(last, want) {
		t.Errorf("last line\n  %s\nwant it to name https://127.0.0.1:8200 and end\n  %s", last, want)
	}
}
