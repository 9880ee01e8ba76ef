package main

import (
	"path/filepath"
	"strings"
	"testing"
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
