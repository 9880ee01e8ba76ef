//go:build linux

package charts

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"token-rotator/apptoken"
	"token-rotator/internal/testenv"
)

// TestPodRunsAsTheKubeletWouldRunIt installs deploy/ on a real control plane as a user would
// (kustomize, with an overlay pointing config.yaml's token_url at the real Doorkeeper and
// VAULT_ADDR at the real Vault), sets Vault up
// with deploy/vault/setup.sh against the real API server, creates a Job from the CronJob as
// `kubectl create job --from=cronjob/token-rotator` does, and then plays the kubelet with the Pod
// the job controller made: the container's args and env, the ConfigMap's files and a projected
// service account token from TokenRequest at the mount paths, the pod's user, group and
// privileges, in a root filesystem holding what the image holds. That process rotates every
// client; an app logged in as the apps' service account reads an access token and nothing else.
//
// Needs root (a private mount namespace, chroot and a change of user), unshare, setpriv and
// chroot: skipped without them, failed under CI=true.
func TestPodRunsAsTheKubeletWouldRunIt(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "playing the kubelet needs root (a private mount namespace, chroot, a change of user)")
	}
	for _, tool := range []string{"unshare", "setpriv", "chroot", "mount", "env"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Unavailable(t, "playing the kubelet needs "+tool+" (util-linux, coreutils)")
		}
	}
	ctx := context.Background()
	start := time.Now()
	step := start
	timing := func(what string) {
		t.Logf("timing: %s in %v", what, time.Since(step).Round(time.Millisecond))
		step = time.Now()
	}

	// The image: a root filesystem holding what the Dockerfile's scratch image holds, the binary
	// built as it builds it (static, CGO_ENABLED=0) and the CA bundle, plus the mount points of
	// the container's volumes (made by playKubelet inside this directory: the host's /etc and
	// /var/run are not touched).
	rootfs := t.TempDir()
	if err := os.Chmod(rootfs, 0o755); err != nil { // the image's / is everyone's to traverse
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(rootfs, "token-rotator"), ".")
	build.Dir = ".." // the tool's own module, as the Dockerfile builds it
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		writeFileAt(t, filepath.Join(rootfs, "etc/ssl/certs/ca-certificates.crt"), ca, 0o644, -1, -1)
	}
	timing("built the image's binary (CGO_ENABLED=0, as the Dockerfile)")

	v := testenv.StartVault(t)
	dk := testenv.StartDoorkeeper(t, testenv.DoorkeeperOptions{RevokeImmediately: true})
	k := testenv.StartKube(t, testenv.KubeOptions{})
	timing("Vault, Doorkeeper and the control plane up")

	// The install: the namespace enforcing restricted Pod Security (as runClusterCase labels it),
	// then deploy/ with a user's overlay.
	const ns = "token-rotator"
	nsObj := corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}},
	}
	if status := k.Do(t, http.MethodPost, "/api/v1/namespaces", nsObj, nil); status != http.StatusCreated {
		t.Fatalf("create namespace %s: status %d", ns, status)
	}
	objs := userOverlay(t, dk.TokenURL, v.Addr)
	var docs strings.Builder
	for _, o := range objs {
		docs.WriteString("---\n")
		docs.Write(o.yamlDoc(t))
	}
	k.Apply(t, []byte(docs.String()), "")
	timing("applied " + keys(objs))

	// The Vault side, by setup.sh as the README tells an admin: the reviewer a service account of
	// Vault's own (vault/vault-auth), bound to system:auth-delegator, its token for the API
	// server's audience from TokenRequest (TOKEN_REVIEWER_JWT_FILE).
	reviewer := k.ReviewerToken(t)
	setupDir := t.TempDir()
	writeFileAt(t, filepath.Join(setupDir, "ca.crt"), []byte(k.CACertPEM), 0o644, -1, -1)
	writeFileAt(t, filepath.Join(setupDir, "reviewer.jwt"), []byte(reviewer), 0o600, -1, -1)
	if err := os.Symlink(testenv.RequireVault(t), filepath.Join(setupDir, "vault")); err != nil {
		t.Fatal(err)
	}
	setup := exec.Command("sh", filepath.Join(deployDir, "vault", "setup.sh"))
	setup.Env = []string{
		"PATH=" + setupDir + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.Token,
		"KUBERNETES_HOST=" + k.URL,
		"KUBERNETES_CA_CERT=" + filepath.Join(setupDir, "ca.crt"),
		"TOKEN_REVIEWER_JWT_FILE=" + filepath.Join(setupDir, "reviewer.jwt"),
	}
	if out, err := setup.CombinedOutput(); err != nil {
		t.Fatalf("deploy/vault/setup.sh: %v\n%s", err, out)
	}

	// The credentials config.yaml names, as an operator puts them: acme (client credentials),
	// partner (a refresh token from an earlier authorization), partner-fleet (a shared client and
	// one operator's connection).
	kv := v.Client.KVv2("secret")
	put := func(p string, data map[string]any) {
		t.Helper()
		if _, err := kv.Put(ctx, p, data); err != nil {
			t.Fatalf("put %s: %v", p, err)
		}
	}
	acmeID, acmeSecret := dk.AddClient(t, "", "")
	put("stora/acme", map[string]any{"client_id": acmeID, "client_secret": acmeSecret})
	partnerID, partnerSecret := dk.AddClient(t, "", "")
	partnerAT, partnerRT := dk.IssueTokenPair(t, partnerID, "")
	put("stora/partner", map[string]any{"client_id": partnerID, "client_secret": partnerSecret, "refresh_token": partnerRT})
	fleetID, fleetSecret := dk.AddClient(t, "", "")
	fleetAT, fleetRT := dk.IssueTokenPair(t, fleetID, "")
	put("stora/fleet", map[string]any{"client_id": fleetID, "client_secret": fleetSecret})
	put("stora/fleet/connections/operator-1", map[string]any{"refresh_token": fleetRT})
	timing("Vault set up by setup.sh and the credentials seeded")

	job := jobFromCronJob(t, k, ns, "token-rotator")
	var pods []corev1.Pod
	k.WaitFor(t, 60*time.Second, func() bool {
		pods = k.Pods(t, ns, "batch.kubernetes.io/job-name="+job)
		return len(pods) > 0
	})
	var pod corev1.Pod
	if status := k.Do(t, http.MethodGet, "/api/v1/namespaces/"+ns+"/pods/"+pods[0].Name, nil, &pod); status != http.StatusOK {
		t.Fatalf("get pod %s: status %d", pods[0].Name, status)
	}
	timing("the job controller created pod " + pod.Name)

	run := playKubelet(t, k, &pod, rootfs)
	timing("prepared the pod's env and volumes")
	// A pod that does not end (a daemon's args, a hung pass) is killed rather than left running.
	runCtx, cancelRun := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelRun()
	cmd := run.command(runCtx)
	t.Logf("the pod's process: %s", strings.Join(cmd.Args, " "))
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	timing("ran the pod's container")
	t.Logf("the pod's exit code: %d; its logs:\n%s", code, out)
	if code != 0 {
		t.Fatalf("the pod exited %d, want 0", code)
	}

	// Its logs: every client and connection rotated.
	outcomes := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			Client     string `json:"client"`
			Connection string `json:"connection"`
			Outcome    string `json:"outcome"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Client != "" && l.Outcome != "" {
			outcomes[strings.TrimSuffix(l.Client+"/"+l.Connection, "/")] = l.Outcome
		}
	}
	t.Logf("outcomes in the pod's logs: %v", outcomes)
	rotatedFleet := false
	for c, o := range outcomes {
		if strings.HasPrefix(c, "partner-fleet") && strings.Contains(c, "operator-1") && o == "rotated" {
			rotatedFleet = true
		}
	}
	if outcomes["acme"] != "rotated" || outcomes["partner"] != "rotated" || !rotatedFleet {
		t.Errorf("outcomes %v: want acme, partner and partner-fleet's operator-1 rotated", outcomes)
	}

	// Vault holds a new access token for each, which Doorkeeper accepts; the partners' refresh
	// tokens were spent and replaced.
	for _, c := range []struct{ output, old string }{
		{"apps/acme", ""}, {"apps/partner", partnerAT}, {"apps/fleet/operator-1", fleetAT},
	} {
		s, err := kv.Get(ctx, c.output)
		if err != nil {
			t.Errorf("read %s: %v", c.output, err)
			continue
		}
		at, _ := s.Data["access_token"].(string)
		if at == "" || at == c.old {
			t.Errorf("%s: no new access token", c.output)
			continue
		}
		if status := dk.TokenInfo(t, at); status != http.StatusOK {
			t.Errorf("%s: Doorkeeper answers %d to its access token, want 200", c.output, status)
		}
	}
	for _, c := range []struct{ secret, old string }{{"stora/partner", partnerRT}, {"stora/fleet/connections/operator-1", fleetRT}} {
		s, err := kv.Get(ctx, c.secret)
		if err != nil {
			t.Fatalf("read %s: %v", c.secret, err)
		}
		if rt, _ := s.Data["refresh_token"].(string); rt == "" || rt == c.old || dk.RefreshTokenRevoked(t, rt) {
			t.Errorf("%s: the refresh token was not replaced by a live one", c.secret)
		}
		if !dk.RefreshTokenRevoked(t, c.old) {
			t.Errorf("%s: the old refresh token is still live", c.secret)
		}
	}
	// Doorkeeper saw one client_credentials grant and two refreshes, all answered 200.
	grants := map[string]int{}
	for _, r := range dk.TokenRequestLog(t) {
		grants[fmt.Sprintf("%s %d", r.GrantType, r.Status)]++
	}
	if want := map[string]int{"client_credentials 200": 1, "refresh_token 200": 2}; !maps.Equal(grants, want) {
		t.Errorf("Doorkeeper's token endpoint saw %v, want %v", grants, want)
	}

	// An app pod: the apps' service account (setup.sh's default, stora-client in default), a
	// projected token for vault, logs in with the apps' role as docs/apps.md's login does.
	k.ServiceAccount(t, "default", "stora-client")
	appJWT := filepath.Join(t.TempDir(), "token")
	writeFileAt(t, appJWT, []byte(k.TokenRequest(t, "default", "stora-client", "vault", time.Hour)), 0o600, -1, -1)
	src, err := apptoken.Open(ctx, apptoken.Options{Address: v.Addr, Path: "apps/acme",
		Login: &apptoken.Login{Method: apptoken.MethodKubernetes, Role: "token-rotator-apps", JWTFile: appJWT}})
	if err != nil {
		t.Fatalf("the app's login: %v", err)
	}
	tok, err := src.Token()
	stored, gerr := kv.Get(ctx, "apps/acme")
	if gerr != nil {
		t.Fatalf("read apps/acme: %v", gerr)
	}
	if err != nil || tok.AccessToken == "" || tok.AccessToken != stored.Data["access_token"] {
		t.Errorf("the app does not read the access token Vault holds at apps/acme (%v)", err)
	}
	// The same login's Vault token is refused the credential secret.
	app, err := v.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	app.ClearToken()
	jwt, _ := os.ReadFile(appJWT)
	login, err := app.Logical().Write("auth/kubernetes/login", map[string]any{"role": "token-rotator-apps", "jwt": string(jwt)})
	if err != nil || login.Auth == nil {
		t.Fatalf("the app's login: %v", err)
	}
	app.SetToken(login.Auth.ClientToken)
	_, err = app.KVv2("secret").Get(ctx, "stora/acme")
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
		t.Errorf("the app reading stora/acme: %v; want 403", err)
	}
	t.Logf("timing: whole test %v", time.Since(start).Round(time.Millisecond))
}

// userOverlay is deploy/ as a user installs it against this test's servers: deploy/'s
// kustomization as shipped, and an overlay over it patching config.yaml's token_url and the
// CronJob's VAULT_ADDR.
func userOverlay(t *testing.T, tokenURL, vaultAddr string) []object {
	t.Helper()
	fs := filesys.MakeFsInMemory()
	entries, err := os.ReadDir(deployDir)
	if err != nil {
		t.Fatal(err)
	}
	var config string
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(deployDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		switch e.Name() {
		case "kustomization.yaml":
			var kz struct {
				Resources []string `json:"resources"`
			}
			if err := yaml.Unmarshal(b, &kz); err != nil {
				t.Fatal(err)
			}
			b = replaceResources(t, b, kz.Resources)
		case "configmap.yaml":
			var cm corev1.ConfigMap
			if err := yaml.Unmarshal(b, &cm); err != nil {
				t.Fatal(err)
			}
			config = cm.Data["config.yaml"]
		}
		if err := fs.WriteFile(filepath.Join("/deploy", e.Name()), b); err != nil {
			t.Fatal(err)
		}
	}
	const shipped = "token_url: https://public-api.stora.co/oauth2/token\n"
	if strings.Count(config, shipped) != 1 {
		t.Fatalf("deploy/configmap.yaml's config.yaml no longer has the line %q once", shipped)
	}
	config = strings.Replace(config, shipped, "token_url: "+tokenURL+"\n", 1)
	patch := func(ops ...map[string]any) string {
		b, err := json.Marshal(ops)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	overlay := map[string]any{
		"apiVersion": "kustomize.config.k8s.io/v1beta1",
		"kind":       "Kustomization",
		"resources":  []string{"../deploy"},
		"patches": []map[string]any{
			{"target": map[string]any{"kind": "ConfigMap", "name": "token-rotator"},
				"patch": patch(map[string]any{"op": "replace", "path": "/data/config.yaml", "value": config})},
			{"target": map[string]any{"kind": "CronJob", "name": "token-rotator"},
				"patch": patch(
					map[string]any{"op": "test", "path": "/spec/jobTemplate/spec/template/spec/containers/0/env/0/name", "value": "VAULT_ADDR"},
					map[string]any{"op": "replace", "path": "/spec/jobTemplate/spec/template/spec/containers/0/env/0/value", "value": vaultAddr})},
		},
	}
	b, err := yaml.Marshal(overlay)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.WriteFile("/overlay/kustomization.yaml", b); err != nil {
		t.Fatal(err)
	}
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, "/overlay")
	if err != nil {
		t.Fatalf("kustomize build of the overlay: %v", err)
	}
	y, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return splitObjects(t, string(y))
}

// podRun is what playKubelet prepared for the pod's one container.
type podRun struct {
	rootfs   string
	env      []string          // NAME=VALUE, in the kubelet's order
	mounts   []volumeMountPrep // in the container's order
	uid, gid int64
	groups   []int64 // supplementary: runAsGroup and fsGroup, as the runtime sets them
	readOnly bool    // readOnlyRootFilesystem
	entry    []string
	hostname string
}

type volumeMountPrep struct {
	src, dst string // dst inside the root filesystem
	readOnly bool
}

// playKubelet prepares the pod's only container as a kubelet would start it: the env (values,
// fieldRefs resolved against the pod, the kubernetes service's variables, HOSTNAME and the
// runtime's default PATH), each volume's files in a directory of its own laid out as the
// kubelet's atomic writer lays them out, and the user, groups and entrypoint. A field of the pod
// spec that would change what runs (envFrom, subPath, $(VAR), other volume types, workingDir)
// fails the test: it must not run something else than what the pod says. Resource limits,
// seccomp and the pod network are not played (see the test's doc).
func playKubelet(t *testing.T, k *testenv.Kube, pod *corev1.Pod, rootfs string) podRun {
	t.Helper()
	if len(pod.Spec.Containers) != 1 || len(pod.Spec.InitContainers) != 0 {
		t.Fatalf("pod %s: %d containers and %d init containers; the test plays one container", pod.Name, len(pod.Spec.Containers), len(pod.Spec.InitContainers))
	}
	ctr := pod.Spec.Containers[0]
	psc := pod.Spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if ctr.WorkingDir != "" {
		t.Fatalf("pod %s: workingDir is not played by the test", pod.Name)
	}
	r := podRun{rootfs: rootfs, hostname: pod.Name}

	// The user: the container's securityContext over the pod's; the image's USER is 65532:65532.
	uid, gid := int64(65532), int64(65532)
	if psc.RunAsUser != nil {
		uid = *psc.RunAsUser
	}
	if psc.RunAsGroup != nil {
		gid = *psc.RunAsGroup
	}
	csc := ctr.SecurityContext
	if csc != nil && csc.RunAsUser != nil {
		uid = *csc.RunAsUser
	}
	if csc != nil && csc.RunAsGroup != nil {
		gid = *csc.RunAsGroup
	}
	nonRoot := (psc.RunAsNonRoot != nil && *psc.RunAsNonRoot) || (csc != nil && csc.RunAsNonRoot != nil && *csc.RunAsNonRoot)
	if nonRoot && uid == 0 {
		t.Fatalf("pod %s: runAsNonRoot with user 0: the kubelet would refuse to start it", pod.Name)
	}
	if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
		csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) != 0 {
		t.Fatalf("pod %s: the test plays a container without privilege escalation and with every capability dropped; the pod's is %+v", pod.Name, csc)
	}
	r.uid, r.gid = uid, gid
	r.readOnly = csc.ReadOnlyRootFilesystem != nil && *csc.ReadOnlyRootFilesystem
	r.groups = []int64{gid}
	if psc.FSGroup != nil && *psc.FSGroup != gid {
		r.groups = append(r.groups, *psc.FSGroup)
	}
	fileGID := gid
	if psc.FSGroup != nil {
		fileGID = *psc.FSGroup
	}

	// The entrypoint: the image's (ENTRYPOINT ["/token-rotator"]) unless the pod sets command;
	// then the pod's args (the image's CMD is replaced by them).
	r.entry = []string{"/token-rotator"}
	if len(ctr.Command) > 0 {
		r.entry = ctr.Command
	}
	r.entry = append(r.entry, ctr.Args...)
	for _, a := range r.entry {
		if strings.Contains(a, "$(") {
			t.Fatalf("pod %s: argument %q refers to a variable; the test does not expand $(VAR) as the kubelet does", pod.Name, a)
		}
	}

	// The env: the runtime's default PATH (a scratch image sets none), HOSTNAME, the kubernetes
	// service's variables (enableServiceLinks or not, the kubelet always adds the master
	// service's), then the container's own.
	r.env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=" + pod.Name}
	var svc corev1.Service
	if k.Do(t, http.MethodGet, "/api/v1/namespaces/default/services/kubernetes", nil, &svc) == http.StatusOK && len(svc.Spec.Ports) > 0 {
		ip, port := svc.Spec.ClusterIP, strconv.Itoa(int(svc.Spec.Ports[0].Port))
		r.env = append(r.env,
			"KUBERNETES_SERVICE_HOST="+ip, "KUBERNETES_SERVICE_PORT="+port, "KUBERNETES_SERVICE_PORT_HTTPS="+port,
			"KUBERNETES_PORT=tcp://"+ip+":"+port, "KUBERNETES_PORT_"+port+"_TCP=tcp://"+ip+":"+port,
			"KUBERNETES_PORT_"+port+"_TCP_PROTO=tcp", "KUBERNETES_PORT_"+port+"_TCP_PORT="+port, "KUBERNETES_PORT_"+port+"_TCP_ADDR="+ip)
	}
	if len(ctr.EnvFrom) > 0 {
		t.Fatalf("pod %s: envFrom is not played by the test", pod.Name)
	}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			if strings.Contains(e.Value, "$(") {
				t.Fatalf("pod %s: env %s refers to a variable; the test does not expand $(VAR)", pod.Name, e.Name)
			}
			r.env = append(r.env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil:
			r.env = append(r.env, e.Name+"="+podField(t, pod, e.ValueFrom.FieldRef.FieldPath))
		default:
			t.Fatalf("pod %s: env %s from %+v is not played by the test", pod.Name, e.Name, e.ValueFrom)
		}
	}

	// The volumes.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range ctr.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok || m.SubPath != "" || m.SubPathExpr != "" {
			t.Fatalf("pod %s: mount %+v: no such volume, or a subPath (not played)", pod.Name, m)
		}
		files := map[string][]byte{}
		modes := map[string]os.FileMode{}
		owner := map[string]int64{}
		switch {
		case v.ConfigMap != nil:
			var cm corev1.ConfigMap
			if status := k.Do(t, http.MethodGet, "/api/v1/namespaces/"+pod.Namespace+"/configmaps/"+v.ConfigMap.Name, nil, &cm); status != http.StatusOK {
				t.Fatalf("pod %s: configmap %s: status %d (the kubelet would not start the pod)", pod.Name, v.ConfigMap.Name, status)
			}
			mode := os.FileMode(0o644)
			if v.ConfigMap.DefaultMode != nil {
				mode = os.FileMode(*v.ConfigMap.DefaultMode)
			}
			if len(v.ConfigMap.Items) > 0 || len(cm.BinaryData) > 0 {
				t.Fatalf("pod %s: configmap volume %s with items is not played", pod.Name, v.Name)
			}
			for key, value := range cm.Data {
				files[key], modes[key], owner[key] = []byte(value), mode, 0
			}
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				st := s.ServiceAccountToken
				if st == nil {
					t.Fatalf("pod %s: projected volume %s: a source other than serviceAccountToken is not played", pod.Name, v.Name)
				}
				// The kubelet's request: the pod's service account, the projected audience and
				// expiry, bound to the pod. The file is the user's alone: the kubelet makes it
				// 0600 and owned by runAsUser when every container runs as the same user.
				files[st.Path], modes[st.Path], owner[st.Path] = []byte(podToken(t, k, pod, st)), 0o600, uid
			}
		default:
			t.Fatalf("pod %s: volume %s: only configMap and projected serviceAccountToken volumes are played", pod.Name, v.Name)
		}
		dir := t.TempDir()
		atomicWrite(t, dir, files, modes, owner, fileGID)
		r.mounts = append(r.mounts, volumeMountPrep{src: dir, dst: m.MountPath, readOnly: m.ReadOnly})
		// The mount point, inside the image's root filesystem (a runtime makes it likewise).
		if err := os.MkdirAll(filepath.Join(rootfs, m.MountPath), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// command is the pod's process: in a private mount namespace, the volumes bind-mounted at their
// mount paths (read-only as mounted), the root filesystem read-only when the container says so,
// no new privileges and no inheritable capabilities, then chroot to the image's root filesystem
// as the pod's user and groups, and exec the entrypoint with exactly the pod's env.
func (r podRun) command(ctx context.Context) *exec.Cmd {
	script := []string{"set -eu", `root=$1; shift`, `hostname "$POD_HOSTNAME"`, `mount --bind "$root" "$root"`}
	for i, m := range r.mounts {
		script = append(script, fmt.Sprintf(`mount --bind "$MOUNT_SRC_%d" "$root%s"`, i, m.dst))
		if m.readOnly {
			script = append(script, fmt.Sprintf(`mount -o remount,bind,ro "$root%s"`, m.dst))
		}
	}
	if r.readOnly { // readOnlyRootFilesystem: the root filesystem's own mount, not the volumes'
		script = append(script, `mount -o remount,bind,ro "$root"`)
	}
	script = append(script, `exec env -i "$@"`)
	args := []string{"--mount", "--uts", "--propagation", "private", "--", "sh", "-c", strings.Join(script, "\n"), "sh", r.rootfs}
	args = append(args, r.env...)
	groups := make([]string, len(r.groups))
	for i, g := range r.groups {
		groups[i] = strconv.FormatInt(g, 10)
	}
	args = append(args, "setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all,+sys_chroot,+setuid,+setgid", "--",
		"chroot", fmt.Sprintf("--userspec=%d:%d", r.uid, r.gid), "--groups="+strings.Join(groups, ","), r.rootfs)
	args = append(args, r.entry...)
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test process
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	for i, m := range r.mounts {
		cmd.Env = append(cmd.Env, fmt.Sprintf("MOUNT_SRC_%d=%s", i, m.src))
	}
	cmd.Env = append(cmd.Env, "POD_HOSTNAME="+r.hostname)
	cmd.Dir = "/" // the image sets no WORKDIR
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// podToken asks the API server for the projected token the kubelet would: a TokenRequest for
// the pod's service account with the source's audience and expiry, bound to the pod.
func podToken(t *testing.T, k *testenv.Kube, pod *corev1.Pod, st *corev1.ServiceAccountTokenProjection) string {
	t.Helper()
	req := authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
		ExpirationSeconds: st.ExpirationSeconds,
		BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if st.Audience != "" {
		req.Spec.Audiences = []string{st.Audience}
	}
	var out authv1.TokenRequest
	p := "/api/v1/namespaces/" + pod.Namespace + "/serviceaccounts/" + pod.Spec.ServiceAccountName + "/token"
	if status := k.Do(t, http.MethodPost, p, req, &out); status != http.StatusCreated || out.Status.Token == "" {
		t.Fatalf("pod %s: token request for its service account %s: status %d", pod.Name, pod.Spec.ServiceAccountName, status)
	}
	return out.Status.Token
}

// podField resolves a downward API fieldPath against the pod as the kubelet does.
func podField(t *testing.T, pod *corev1.Pod, fieldPath string) string {
	t.Helper()
	switch fieldPath {
	case "metadata.name":
		return pod.Name
	case "metadata.namespace":
		return pod.Namespace
	case "metadata.uid":
		return string(pod.UID)
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName
	}
	if strings.HasPrefix(fieldPath, "metadata.labels['") || strings.HasPrefix(fieldPath, "metadata.annotations['") {
		return fieldRefValue(pod, fieldPath)
	}
	t.Fatalf("pod %s: fieldRef %s is not played by the test", pod.Name, fieldPath)
	return ""
}

// atomicWrite lays out files in dir as the kubelet's atomic writer does: the files in a
// timestamped directory, ..data a symlink to it, and each file a symlink through ..data; the
// group is fsGroup's.
func atomicWrite(t *testing.T, dir string, files map[string][]byte, modes map[string]os.FileMode, owner map[string]int64, gid int64) {
	t.Helper()
	ts := ".." + time.Now().UTC().Format("2006_01_02_15_04_05.000000000")
	for name, b := range files {
		writeFileAt(t, filepath.Join(dir, ts, name), b, modes[name], owner[name], gid)
	}
	if err := os.Chmod(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		top := strings.SplitN(name, "/", 2)[0]
		if _, err := os.Lstat(filepath.Join(dir, top)); err == nil {
			continue
		}
		if err := os.Symlink(path.Join("..data", top), filepath.Join(dir, top)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

// writeFileAt writes b to p with mode, making its directories (0755); uid and gid -1 leave the
// owner as it is.
func writeFileAt(t *testing.T, p string, b []byte, mode os.FileMode, uid, gid int64) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	if uid >= 0 || gid >= 0 {
		if err := os.Chown(p, int(uid), int(gid)); err != nil {
			t.Fatal(err)
		}
	}
}
