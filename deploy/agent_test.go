package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"token-rotator/config"
	"token-rotator/internal/testenv"
	"token-rotator/oauth"
	"token-rotator/rotate"
)

// The paths agent.hcl names, as mounted in vault-agent/deployment.yaml.
const (
	agentConfigDir   = "/etc/vault-agent"
	agentTemplate    = "/etc/vault-agent/access-token.ctmpl"
	agentJWT         = "/var/run/secrets/vault/token"
	agentDestination = "/var/run/stora/access_token"
	agentRole        = "token-rotator-apps"
	agentOutput      = "apps/acme" // the output secret the template reads
)

// renderInterval is agent.hcl's template_config.static_secret_render_interval.
var renderInterval = regexp.MustCompile(`(?m)^\s*static_secret_render_interval\s*=\s*"([0-9]+s)"`)

// agentKustomization is the part of kustomize's Kustomization vault-agent/kustomization.yaml may
// use; anything else fails the strict decode.
type agentKustomization struct {
	APIVersion         string   `json:"apiVersion"`
	Kind               string   `json:"kind"`
	Namespace          string   `json:"namespace"`
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"configMapGenerator"`
}

// appsDoc is where the apps' ways to read the token are documented in full.
const appsDoc = "../docs/apps.md"

// TestVaultAgentExample checks vault-agent/ as a whole: the manifests decode strictly into the
// Kubernetes API types, mount every path agent.hcl names where it expects it, log in as the
// service account and with the audience setup.sh's apps role binds, share the token file
// read-only with the app; the template reads the output the shipped config writes; docs/apps.md
// states the interval agent.hcl sets.
func TestVaultAgentExample(t *testing.T) {
	hcl, err := os.ReadFile("vault-agent/agent.hcl")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`role       = "` + agentRole + `"`, `token_path = "` + agentJWT + `"`, `mount_path = "auth/kubernetes"`,
		`source      = "` + agentTemplate + `"`, `destination = "` + agentDestination + `"`, `perms = "0440"`,
	} {
		if !strings.Contains(string(hcl), want) {
			t.Errorf("agent.hcl: no %s", want)
		}
	}
	m := renderInterval.FindSubmatch(hcl)
	if m == nil {
		t.Fatal("agent.hcl: no static_secret_render_interval in whole seconds")
	}
	if want := "`static_secret_render_interval = \"" + string(m[1]) + "\"`"; !strings.Contains(testenv.DocSection(t, appsDoc, "Vault Agent"), want) {
		t.Errorf("docs/apps.md, Vault Agent: does not say %s, agent.hcl's setting", want)
	}

	tmpl, err := os.ReadFile("vault-agent/access-token.ctmpl")
	if err != nil {
		t.Fatal(err)
	}
	cfg := shippedConfig(t, loadManifests(t))
	if c := cfg.Client("acme"); c == nil || c.Output != agentOutput || cfg.Vault.KVMount != "secret" ||
		!strings.Contains(string(tmpl), `secret "secret/data/`+agentOutput+`"`) {
		t.Errorf("access-token.ctmpl does not read %s/data/%s, acme's output in configmap.yaml", cfg.Vault.KVMount, agentOutput)
	}

	var k agentKustomization
	if err := unmarshalExact(readFile(t, "vault-agent/kustomization.yaml"), &k); err != nil {
		t.Fatalf("vault-agent/kustomization.yaml: %v", err)
	}
	if len(k.ConfigMapGenerator) != 1 || !slices.Equal(k.ConfigMapGenerator[0].Files, []string{"agent.hcl", "access-token.ctmpl"}) {
		t.Fatalf("configMapGenerator %+v: want one ConfigMap of agent.hcl and access-token.ctmpl", k.ConfigMapGenerator)
	}
	if !slices.Equal(k.Resources, []string{"deployment.yaml"}) {
		t.Errorf("resources %q", k.Resources)
	}
	setup := string(readFile(t, "vault/setup.sh"))
	if !strings.Contains(setup, "APP_NAMESPACES=${APP_NAMESPACES:-"+k.Namespace+"}") {
		t.Errorf("namespace %q is not the apps' namespace setup.sh binds", k.Namespace)
	}

	var sa *corev1.ServiceAccount
	var d *appsv1.Deployment
	for i, doc := range docSeparator.Split(string(readFile(t, "vault-agent/deployment.yaml")), -1) {
		if isBlank(doc) {
			continue
		}
		_, obj, err := decodeStrict([]byte(doc))
		if err != nil {
			t.Fatalf("vault-agent/deployment.yaml, document %d: %v", i+1, err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			sa = o
		case *appsv1.Deployment:
			d = o
		default:
			t.Errorf("vault-agent/deployment.yaml: unexpected %T", obj)
		}
	}
	if sa == nil || d == nil {
		t.Fatal("vault-agent/deployment.yaml: want a ServiceAccount and a Deployment")
	}
	p := &d.Spec.Template.Spec
	if p.ServiceAccountName != sa.Name || !strings.Contains(setup, "APP_SERVICE_ACCOUNTS=${APP_SERVICE_ACCOUNTS:-"+sa.Name+"}") {
		t.Errorf("service account %q: not setup.sh's default app service account", p.ServiceAccountName)
	}
	if p.AutomountServiceAccountToken == nil || *p.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken is not false: only the Vault-audience token should be mounted")
	}
	sc := p.SecurityContext
	if sc == nil || !isTrue(sc.RunAsNonRoot) || sc.FSGroup == nil {
		t.Error("pod securityContext: want runAsNonRoot and an fsGroup (the file is 0440, read through the group)")
	}
	if len(p.InitContainers) != 1 || len(p.Containers) != 1 {
		t.Fatalf("%d init containers, %d containers: want the agent and the app", len(p.InitContainers), len(p.Containers))
	}
	agent, app := p.InitContainers[0], p.Containers[0]
	if agent.RestartPolicy == nil || *agent.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("the agent is not a native sidecar (restartPolicy Always): it would have to exit before the app starts")
	}
	if got := append(slices.Clone(agent.Command), agent.Args...); !slices.Equal(got, []string{"vault", "agent", "-config=" + agentConfigDir + "/agent.hcl"}) {
		t.Errorf("agent runs %q", got)
	}
	if envValue(agent.Env, "VAULT_ADDR") == "" {
		t.Error("agent: no VAULT_ADDR (agent.hcl names no address)")
	}
	if agent.StartupProbe == nil || agent.StartupProbe.Exec == nil || !strings.Contains(strings.Join(agent.StartupProbe.Exec.Command, " "), agentDestination) {
		t.Error("agent: no startupProbe waiting for the token file: the app could start before it exists")
	}
	for _, c := range []corev1.Container{agent, app} {
		s := c.SecurityContext
		if s == nil || !isTrue(s.ReadOnlyRootFilesystem) || s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation ||
			s.Capabilities == nil || !slices.Equal(s.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s: securityContext is not locked down", c.Name)
		}
	}
	if v := mountFor(t, p, agent, agentTemplate); v.ConfigMap == nil || v.ConfigMap.Name != k.ConfigMapGenerator[0].Name {
		t.Errorf("%s: not the generated ConfigMap %s", agentConfigDir, k.ConfigMapGenerator[0].Name)
	}
	if v := mountFor(t, p, agent, agentJWT); v.Projected == nil || len(v.Projected.Sources) != 1 ||
		v.Projected.Sources[0].ServiceAccountToken == nil || v.Projected.Sources[0].ServiceAccountToken.Audience != "vault" ||
		v.Projected.Sources[0].ServiceAccountToken.Path != path.Base(agentJWT) {
		t.Errorf("%s: want a projected service account token for audience vault (the role's)", agentJWT)
	}
	// The token file: written by the agent, read by the app, the same emptyDir.
	var agentVol, appVol string
	for _, vm := range agent.VolumeMounts {
		if vm.MountPath == path.Dir(agentDestination) {
			agentVol = vm.Name
			if vm.ReadOnly {
				t.Error("the agent's mount of the token file's directory is read-only")
			}
		}
	}
	if v := mountFor(t, p, app, agentDestination); v.EmptyDir == nil || v.Name != agentVol || v.EmptyDir.Medium != corev1.StorageMediumMemory {
		t.Errorf("the app's %s is not the agent's in-memory emptyDir", path.Dir(agentDestination))
	} else {
		appVol = v.Name
	}
	if envValue(app.Env, "STORA_TOKEN_FILE") != agentDestination {
		t.Errorf("app: STORA_TOKEN_FILE is not %s", agentDestination)
	}
	t.Logf("agent.hcl: interval %s; the agent writes %s into volume %s, the app reads it from %s", m[1], agentDestination, agentVol, appVol)
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testRenderInterval replaces agent.hcl's interval in TestVaultAgentRendersRotatedToken, to keep
// the test short; the lag is a function of the setting, which the test checks. Whole seconds:
// consul-template counts a secret's lease in whole seconds.
const testRenderInterval = 2 * time.Second

// renderSlack is what the test allows on top of the interval for the agent's read and render
// and a loaded machine; what the README states is the interval itself.
const renderSlack = 3 * time.Second

// TestVaultAgentRendersRotatedToken runs the real `vault agent` (the binary of the dev server)
// with vault-agent/agent.hcl and access-token.ctmpl as shipped, but for the paths (a temporary
// directory for the pod's mounts) and a 2 s render interval. It logs in with the shipped
// kubernetes auto_auth block: setup.sh's apps role, a service account JWT checked by a TokenReview
// API the test serves. The job then rotates acme's token several times, an authorization code
// client against the bundled token endpoint in its revoke-at-once mode (the worst row of README's
// table). After each rotation the test polls the file every 10 ms and asserts:
//   - the file holds the new token, exactly (no newline), within the interval plus renderSlack;
//     it prints the lag (min/median/max) from the moment the job's write returned;
//   - until then it held the old token, exactly: never a partial or empty file; the new one is
//     a new file (replaced, not rewritten in place);
//   - the old token is refused (401) by the token endpoint while the file still holds it, and the
//     new one is accepted: what an app reading the file sees in that window;
//   - the file's mode is 0440.
//
// From Vault's audit log it counts the agent's requests: it reads the secret once every 85-95% of
// the interval, and nothing else per render.
func TestVaultAgentRendersRotatedToken(t *testing.T) {
	bin := testenv.RequireVault(t)
	v := testenv.StartVault(t)
	k8s, kubeEnv := startKube(t)
	runSetup(t, v, kubeEnv...)
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	if err := v.Client.Sys().EnableAuditWithOptions("file", &api.EnableAuditOptions{
		Type: "file", Options: map[string]string{"file_path": auditLog},
	}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// acme, an authorization code client, its output where the template reads.
	srv := testenv.StartTokenServer(t, "fake", true)
	id, secret := srv.AddClient(t, "https://app.example/callback", "public.contact:read")
	_, rt := srv.IssueTokenPair(t, id, "public.contact:read")
	if _, err := v.Client.KVv2("secret").Put(ctx, "stora/acme", map[string]any{
		"client_id": id, "client_secret": secret, "refresh_token": rt,
	}); err != nil {
		t.Fatal(err)
	}
	rot := &rotate.Rotator{
		Store:  openWithToken(t, v, tokenWith(t, v, "token-rotator").Token()),
		Tokens: &oauth.Client{},
		Clients: []config.Client{{
			Name: "acme", Grant: config.GrantAuthorizationCode, Secret: "stora/acme", Output: agentOutput, TokenURL: srv.Endpoint(),
		}},
		RenewBefore: 30 * time.Minute, Force: true,
	}
	rotateNow := func() string {
		t.Helper()
		if res := rot.Pass(ctx); len(res) != 1 || res[0].Outcome != rotate.Rotated {
			t.Fatalf("rotation: %+v", res)
		}
		s, err := v.Client.KVv2("secret").Get(ctx, agentOutput)
		if err != nil {
			t.Fatal(err)
		}
		at, _ := s.Data["access_token"].(string)
		if at == "" {
			t.Fatalf("%s: no access_token after the rotation", agentOutput)
		}
		return at
	}
	current := rotateNow()

	// agent.hcl as shipped, its paths moved into a temporary directory.
	dir := t.TempDir()
	jwt := writeFile(t, "token", saToken(t, k8s, "default", "stora-client", "vault"))
	tmpl, err := filepath.Abs("vault-agent/access-token.ctmpl")
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, "stora", "access_token")
	hcl := string(readFile(t, "vault-agent/agent.hcl"))
	for _, r := range []struct{ old, new string }{
		{`"` + agentJWT + `"`, `"` + jwt + `"`},
		{`"` + agentTemplate + `"`, `"` + tmpl + `"`},
		{`"` + agentDestination + `"`, `"` + dest + `"`},
		{renderInterval.FindString(hcl), fmt.Sprintf(`static_secret_render_interval = "%ds"`, int(testRenderInterval.Seconds()))},
	} {
		if r.old == "" || strings.Count(hcl, r.old) != 1 {
			t.Fatalf("agent.hcl: %q is not there exactly once", r.old)
		}
		hcl = strings.Replace(hcl, r.old, r.new, 1)
	}
	cfgFile := writeFile(t, "agent.hcl", hcl)

	var out testenv.SyncBuffer
	cmd := exec.Command(bin, "agent", "-config="+cfgFile)
	// VAULT_ADDR as the pod sets it; no VAULT_TOKEN: the agent must log in by itself.
	cmd.Env = []string{"VAULT_ADDR=" + v.Addr, "HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("vault agent:\n%s", out.String())
		}
	})

	readDest := func() string {
		b, err := os.ReadFile(dest)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return string(b)
	}
	// waitFor polls the file every 10 ms until it holds want, failing on anything but want or
	// old, and returns how long that took.
	waitFor := func(old, want string, limit time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			got := readDest()
			if got == want {
				return time.Since(start)
			}
			if got != old {
				t.Fatalf("the file holds %d bytes that are neither the old token nor the new one", len(got))
			}
			if time.Since(start) > limit {
				t.Fatalf("the file does not hold the token in Vault after %s", limit)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	checkMode := func() {
		t.Helper()
		fi, err := os.Stat(dest)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o440 {
			t.Errorf("the file's mode is %v, want 0440 (agent.hcl perms): owner and group read, nobody else", fi.Mode().Perm())
		}
	}

	first := waitFor("", current, 30*time.Second)
	t.Logf("first render %s after the agent started", first.Round(time.Millisecond))
	checkMode()
	reviews := k8s.Reviews(t)
	if app := username("default", "stora-client"); len(reviews) == 0 || !reviews[len(reviews)-1].Authenticated || reviews[len(reviews)-1].User != app {
		t.Errorf("TokenReviews %+v: want the agent's kubernetes login as %s", reviews, app)
	}

	const rotations = 6
	var lags []time.Duration
	refusedSeen := 0
	for i := range rotations {
		// Rotate at a different point of the agent's cycle each time.
		time.Sleep(testRenderInterval * time.Duration(i) / rotations)
		old := readDest()
		before, err := os.Stat(dest)
		if err != nil {
			t.Fatal(err)
		}
		next := rotateNow()
		written := time.Now()
		if readDest() == old {
			// The window README speaks of: the file still holds the old token, which the token
			// endpoint already refuses.
			if code := srv.TokenInfo(t, old); code != 401 {
				t.Errorf("rotation %d: the token still in the file: HTTP %d, want 401 (revoked at the refresh)", i+1, code)
			}
			refusedSeen++
		}
		waitFor(old, next, testRenderInterval+renderSlack+30*time.Second)
		lags = append(lags, time.Since(written))
		if after, err := os.Stat(dest); err != nil || os.SameFile(before, after) {
			t.Errorf("rotation %d: the agent rewrote the file in place (%v): a reader could see it half-written", i+1, err)
		}
		if code := srv.TokenInfo(t, next); code != 200 {
			t.Errorf("rotation %d: the token the file now holds: HTTP %d, want 200", i+1, code)
		}
		checkMode()
	}
	slices.Sort(lags)
	minLag, median, maxLag := lags[0], lags[len(lags)/2], lags[len(lags)-1]
	t.Logf("FIGURE vault agent lag | static_secret_render_interval %s | %d rotations: min %s, median %s, max %s (from the job's write to the new token in the file); the old token, refused with 401, still in the file right after %d of them",
		testRenderInterval, rotations, minLag.Round(time.Millisecond), median.Round(time.Millisecond), maxLag.Round(time.Millisecond), refusedSeen)
	if maxLag > testRenderInterval+renderSlack {
		t.Errorf("lag %s: over the interval %s plus %s", maxLag, testRenderInterval, renderSlack)
	}
	if refusedSeen == 0 {
		t.Error("no rotation left the old token in the file long enough to present it: the window was not observed")
	}

	// What the agent asked of Vault, from the audit log.
	reads, others := agentRequests(t, auditLog, "default", "stora-client")
	if len(reads) < 3 {
		t.Fatalf("%d reads of secret/data/%s by the agent", len(reads), agentOutput)
	}
	span := reads[len(reads)-1].Sub(reads[0])
	gap := span / time.Duration(len(reads)-1)
	t.Logf("FIGURE vault agent reads | %d reads of secret/data/%s in %s: one every %s (%.2f × the interval); other requests: %v",
		len(reads), agentOutput, span.Round(time.Millisecond), gap.Round(time.Millisecond), gap.Seconds()/testRenderInterval.Seconds(), others)
	// consul-template waits 85-95% of the interval between reads; the read itself adds a little,
	// more on a loaded machine.
	if f := gap.Seconds() / testRenderInterval.Seconds(); f < 0.8 || f > 1.1 {
		t.Errorf("the agent read the secret every %.2f × the interval, want 0.85-0.95 (0.8-1.1 allowed)", f)
	}
	for p, n := range others {
		if n > 1 {
			t.Errorf("the agent requested %s %d times: only the secret's read should repeat", p, n)
		}
	}
}

// agentRequests reads Vault's file audit log and returns the times of the agent's reads of the
// output secret, and how many of each other request it made. The agent's requests are those made
// with a token from the kubernetes login as sa, and the login itself.
func agentRequests(t *testing.T, auditLog, namespace, serviceAccount string) (reads []time.Time, others map[string]int) {
	t.Helper()
	others = map[string]int{}
	name := "kubernetes-" + namespace + "-" + serviceAccount
	for line := range strings.Lines(string(readFile(t, auditLog))) {
		var e struct {
			Type string    `json:"type"`
			Time time.Time `json:"time"`
			Auth struct {
				DisplayName string `json:"display_name"`
			} `json:"auth"`
			Request struct {
				Operation string `json:"operation"`
				Path      string `json:"path"`
			} `json:"request"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit log: %v", err)
		}
		switch {
		case e.Type != "request":
		case e.Auth.DisplayName == name && e.Request.Path == "secret/data/"+agentOutput && e.Request.Operation == "read":
			reads = append(reads, e.Time)
		case e.Auth.DisplayName == name || e.Request.Path == "auth/kubernetes/login":
			others[e.Request.Operation+" "+e.Request.Path]++
		}
	}
	return reads, others
}
