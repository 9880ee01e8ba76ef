package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"token-rotator/config"
)

// kustomization is the part of kustomize's Kustomization these manifests may use; anything else
// fails the strict decode.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
		IncludeTemplates bool              `json:"includeTemplates,omitempty"`
	} `json:"labels,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// manifests is every object in deploy/*.yaml, decoded strictly, by file.
type manifests struct {
	cronJobs        map[string]*batchv1.CronJob
	deployments     map[string]*appsv1.Deployment
	serviceAccounts map[string]*corev1.ServiceAccount
	configMaps      map[string]*corev1.ConfigMap
	bindings        map[string]*rbacv1.ClusterRoleBinding
	kustomization   *kustomization
	files           []string
}

// want is the apiVersion each kind must have, and a fresh object to decode it into.
var kinds = map[string]struct {
	apiVersion string
	new        func() any
}{
	"CronJob":            {"batch/v1", func() any { return &batchv1.CronJob{} }},
	"Deployment":         {"apps/v1", func() any { return &appsv1.Deployment{} }},
	"ServiceAccount":     {"v1", func() any { return &corev1.ServiceAccount{} }},
	"ConfigMap":          {"v1", func() any { return &corev1.ConfigMap{} }},
	"Namespace":          {"v1", func() any { return &corev1.Namespace{} }},
	"Service":            {"v1", func() any { return &corev1.Service{} }},
	"ClusterRoleBinding": {"rbac.authorization.k8s.io/v1", func() any { return &rbacv1.ClusterRoleBinding{} }},
	"Kustomization":      {"kustomize.config.k8s.io/v1beta1", func() any { return &kustomization{} }},
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeStrict decodes one YAML document into the typed object its kind names: unknown or
// duplicated fields, wrong types and unknown kinds are errors.
func decodeStrict(doc []byte) (kind string, obj any, err error) {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return "", nil, err
	}
	k, ok := kinds[tm.Kind]
	if !ok {
		return "", nil, fmt.Errorf("kind %q (apiVersion %q): not one these tests know", tm.Kind, tm.APIVersion)
	}
	if tm.APIVersion != k.apiVersion {
		return "", nil, fmt.Errorf("%s: apiVersion %q, want %q", tm.Kind, tm.APIVersion, k.apiVersion)
	}
	obj = k.new()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return "", nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return tm.Kind, obj, nil
}

// loadManifests decodes every document of every *.yaml in this directory.
func loadManifests(t *testing.T) *manifests {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	m := &manifests{
		cronJobs: map[string]*batchv1.CronJob{}, deployments: map[string]*appsv1.Deployment{},
		serviceAccounts: map[string]*corev1.ServiceAccount{}, configMaps: map[string]*corev1.ConfigMap{},
		bindings: map[string]*rbacv1.ClusterRoleBinding{}, files: files,
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for i, doc := range docSeparator.Split(string(data), -1) {
			if isBlank(doc) {
				continue
			}
			n++
			kind, obj, err := decodeStrict([]byte(doc))
			if err != nil {
				t.Errorf("%s, document %d: %v", f, i+1, err)
				continue
			}
			switch o := obj.(type) {
			case *batchv1.CronJob:
				m.cronJobs[f] = o
			case *appsv1.Deployment:
				m.deployments[f] = o
			case *corev1.ServiceAccount:
				m.serviceAccounts[f] = o
			case *corev1.ConfigMap:
				m.configMaps[f] = o
			case *rbacv1.ClusterRoleBinding:
				m.bindings[f] = o
			case *corev1.Namespace:
				if o.Name != "token-rotator" {
					t.Errorf("%s: namespace %q, want token-rotator (Vault's role is bound to it)", f, o.Name)
				}
			case *corev1.Service:
				if len(o.Spec.Ports) != 1 || o.Spec.Ports[0].Port != 9090 || o.Spec.Selector["app.kubernetes.io/name"] != "token-rotator" {
					t.Errorf("%s: the metrics Service does not select the daemon's pods on 9090", f)
				}
			case *kustomization:
				if m.kustomization != nil {
					t.Errorf("%s: a second Kustomization", f)
				}
				m.kustomization = o
			default:
				t.Fatalf("%s: %s decoded as %T", f, kind, obj)
			}
		}
		if n == 0 {
			t.Errorf("%s: no document", f)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return m
}

// isBlank reports whether a YAML document holds only comments and blank lines.
func isBlank(doc string) bool {
	for line := range strings.Lines(doc) {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// shippedConfig is the ConfigMap's config.yaml, loaded by the project's own loader.
func shippedConfig(t *testing.T, m *manifests) *config.Config {
	t.Helper()
	cm := m.configMaps["configmap.yaml"]
	if cm == nil {
		t.Fatal("configmap.yaml: no ConfigMap")
	}
	cfg, err := config.Parse("configmap.yaml:config.yaml", []byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("the shipped config.yaml does not load: %v", err)
	}
	return cfg
}

func TestManifestsDecodeStrictly(t *testing.T) {
	m := loadManifests(t)
	for _, f := range []string{"cronjob.yaml", "indexed-job.yaml"} {
		if m.cronJobs[f] == nil {
			t.Errorf("%s: no CronJob", f)
		}
	}
	if m.deployments["deployment.yaml"] == nil {
		t.Error("deployment.yaml: no Deployment")
	}
	if m.serviceAccounts["serviceaccount.yaml"] == nil {
		t.Error("serviceaccount.yaml: no ServiceAccount")
	}
	if m.kustomization == nil {
		t.Error("no kustomization.yaml")
	}
	t.Logf("decoded strictly: %s", strings.Join(m.files, ", "))
}

// TestStrictDecodingRejects proves the decoding above is strict: the mistakes it must catch are
// errors, not silently dropped fields.
func TestStrictDecodingRejects(t *testing.T) {
	data, err := os.ReadFile("cronjob.yaml")
	if err != nil {
		t.Fatal(err)
	}
	good := string(data)
	for name, bad := range map[string]string{
		// readOnlyRootFilesystem exists only in a container's securityContext, not the pod's:
		// a lenient decoder would drop it and the pod would run with a writable root.
		"container-only field at pod level": strings.Replace(good, "            runAsUser: 65532\n",
			"            runAsUser: 65532\n            readOnlyRootFilesystem: true\n", 1),
		"misspelt field":   strings.Replace(good, "concurrencyPolicy: Forbid", "concurencyPolicy: Forbid", 1),
		"duplicate field":  strings.Replace(good, "  concurrencyPolicy: Forbid\n", "  concurrencyPolicy: Forbid\n  concurrencyPolicy: Allow\n", 1),
		"wrong type":       strings.Replace(good, "startingDeadlineSeconds: 120", "startingDeadlineSeconds: soon", 1),
		"wrong apiVersion": strings.Replace(good, "apiVersion: batch/v1", "apiVersion: batch/v1beta1", 1),
	} {
		if bad == good {
			t.Fatalf("%s: the replacement did not apply", name)
		}
		if _, _, err := decodeStrict([]byte(bad)); err == nil {
			t.Errorf("%s: decoded without error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestShippedConfigIsValid(t *testing.T) {
	m := loadManifests(t)
	cfg := shippedConfig(t, m)
	a := cfg.Vault.Auth
	if a.Method != config.AuthKubernetes || a.Role != "token-rotator" || a.Mount != "kubernetes" {
		t.Errorf("vault.auth = %+v, want method kubernetes, role token-rotator, mount kubernetes", a)
	}
	if cfg.Vault.KVMount != "secret" {
		t.Errorf("kv_mount %q: the policies in vault/ are written for `secret`", cfg.Vault.KVMount)
	}
	if len(cfg.Clients) == 0 {
		t.Fatal("no clients")
	}
	// The layout the policies grant: credentials under stora/, outputs under apps/.
	for _, c := range cfg.Clients {
		for field, p := range map[string]string{"secret": c.Secret, "connections": c.Connections} {
			if p != "" && !strings.HasPrefix(p, "stora/") {
				t.Errorf("client %s: %s %q is not under stora/", c.Name, field, p)
			}
		}
		if c.Connections != "" {
			if !strings.HasPrefix(c.OutputPrefix, "apps/") {
				t.Errorf("client %s: output_prefix %q is not under apps/ (the connections' own secrets would be where apps read)", c.Name, c.OutputPrefix)
			}
		} else if !strings.HasPrefix(c.Output, "apps/") {
			t.Errorf("client %s: output %q is not under apps/", c.Name, c.Output)
		}
	}
}

// podSpecs returns each workload's pod template, with the file it came from.
func podSpecs(m *manifests) map[string]*corev1.PodSpec {
	out := map[string]*corev1.PodSpec{}
	for f, cj := range m.cronJobs {
		out[f] = &cj.Spec.JobTemplate.Spec.Template.Spec
	}
	for f, d := range m.deployments {
		out[f] = &d.Spec.Template.Spec
	}
	return out
}

func TestPodsAreLockedDown(t *testing.T) {
	m := loadManifests(t)
	cfg := shippedConfig(t, m)
	specs := podSpecs(m)
	if len(specs) != 3 {
		t.Errorf("%d workloads, want 3 (cronjob, indexed-job, deployment)", len(specs))
	}
	sa := m.serviceAccounts["serviceaccount.yaml"]
	for f, p := range specs {
		t.Run(f, func(t *testing.T) {
			if p.ServiceAccountName != sa.Name {
				t.Errorf("serviceAccountName %q, want %q", p.ServiceAccountName, sa.Name)
			}
			if p.TerminationGracePeriodSeconds == nil || *p.TerminationGracePeriodSeconds < 120 {
				t.Errorf("terminationGracePeriodSeconds %v: want at least 120, time for a write-back to land after SIGTERM", ptrString(p.TerminationGracePeriodSeconds))
			}
			// The restricted Pod Security profile (non-root, no privilege escalation, capabilities
			// dropped, RuntimeDefault seccomp, allowed volume types) is checked with the Pod
			// Security admission library itself, for these manifests and the Helm chart:
			// charts/podsecurity_test.go. Here: what that profile does not require.
			psc := p.SecurityContext
			if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != 65532 {
				t.Errorf("pod runAsUser %v, want 65532 (the image's user)", psc)
			}
			if len(p.Containers) != 1 || len(p.InitContainers) != 0 {
				t.Fatalf("%d containers and %d init containers, want one container", len(p.Containers), len(p.InitContainers))
			}
			c := p.Containers[0]
			if c.Image == "" || !strings.HasPrefix(c.Image, "token-rotator") {
				t.Errorf("image %q", c.Image)
			}
			if sc := c.SecurityContext; sc == nil || !isTrue(sc.ReadOnlyRootFilesystem) {
				t.Error("readOnlyRootFilesystem is not true")
			}
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
					t.Errorf("no %s request", r)
				}
			}
			if q, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok || q.IsZero() {
				t.Error("no memory limit")
			}
			for r, lim := range c.Resources.Limits {
				if req, ok := c.Resources.Requests[r]; ok && req.Cmp(lim) > 0 {
					t.Errorf("%s request %s over its limit %s", r, req.String(), lim.String())
				}
			}

			// The config: --config names a file in a read-only mount of the ConfigMap.
			cfgPath := argValue(c.Args, "--config")
			if cfgPath == "" {
				t.Fatalf("args %q: no --config", c.Args)
			}
			vol := mountFor(t, p, c, cfgPath)
			if vol.ConfigMap == nil || m.configMaps["configmap.yaml"].Name != vol.ConfigMap.Name {
				t.Errorf("%s is not from the ConfigMap in configmap.yaml", cfgPath)
			}
			if env := envValue(c.Env, "VAULT_ADDR"); !strings.HasPrefix(env, "https://") {
				t.Errorf("VAULT_ADDR %q: want an https:// address (the config leaves vault.address to it)", env)
			}

			// The Vault login: jwt_file is a projected token for Vault's audience, and no other
			// API token is mounted.
			if p.AutomountServiceAccountToken == nil || *p.AutomountServiceAccountToken {
				t.Error("automountServiceAccountToken is not false: a token for the Kubernetes API would be mounted, which the job never uses")
			}
			tok := mountFor(t, p, c, cfg.Vault.Auth.JWTFile)
			if tok.Projected == nil || len(tok.Projected.Sources) != 1 || tok.Projected.Sources[0].ServiceAccountToken == nil {
				t.Fatalf("jwt_file %s is not a projected service account token", cfg.Vault.Auth.JWTFile)
			}
			pt := tok.Projected.Sources[0].ServiceAccountToken
			if pt.Audience != "vault" || filepath.Base(cfg.Vault.Auth.JWTFile) != pt.Path {
				t.Errorf("projected token %+v: want audience vault (the roles' in vault/setup.sh) at %s", pt, cfg.Vault.Auth.JWTFile)
			}
		})
	}
}

func TestCronJobs(t *testing.T) {
	m := loadManifests(t)
	cfg := shippedConfig(t, m)
	for _, f := range []string{"cronjob.yaml", "indexed-job.yaml"} {
		t.Run(f, func(t *testing.T) {
			cj := m.cronJobs[f]
			if cj == nil {
				t.Fatal("no CronJob")
			}
			s := cj.Spec
			if s.ConcurrencyPolicy != batchv1.ForbidConcurrent {
				t.Errorf("concurrencyPolicy %q, want Forbid", s.ConcurrencyPolicy)
			}
			if s.StartingDeadlineSeconds == nil || *s.StartingDeadlineSeconds <= 0 {
				t.Errorf("startingDeadlineSeconds %s: want one set", ptrString(s.StartingDeadlineSeconds))
			}
			if s.Schedule != cfg.Schedule {
				t.Errorf("schedule %q, but config.yaml's is %q: the job checks renew_before against its own", s.Schedule, cfg.Schedule)
			}
			if s.TimeZone == nil || (*s.TimeZone != "Etc/UTC" && *s.TimeZone != "UTC") {
				t.Errorf("timeZone %s: want Etc/UTC, the zone of config.yaml's schedule", ptrString(s.TimeZone))
			}
			js := s.JobTemplate.Spec
			if js.ActiveDeadlineSeconds == nil {
				t.Fatal("activeDeadlineSeconds not set")
			}
			if d := time.Duration(*js.ActiveDeadlineSeconds) * time.Second; d <= cfg.PassDeadline {
				t.Errorf("activeDeadlineSeconds %v is not past pass_deadline %v: rotations started at the end of a pass would be cut", d, cfg.PassDeadline)
			}
			pod := js.Template.Spec
			if pod.RestartPolicy != corev1.RestartPolicyNever {
				t.Errorf("restartPolicy %q, want Never", pod.RestartPolicy)
			}
			args := pod.Containers[0].Args
			if !slices.Contains(args, "--once") {
				t.Errorf("args %q: no --once", args)
			}
			if f != "indexed-job.yaml" {
				if js.BackoffLimit == nil || *js.BackoffLimit != 0 {
					t.Errorf("backoffLimit %s, want 0: the next scheduled run is the retry", ptrString(js.BackoffLimit))
				}
				if js.CompletionMode != nil && *js.CompletionMode == batchv1.IndexedCompletion {
					t.Error("completionMode Indexed in the unsharded CronJob")
				}
				if argValue(args, "--shard") != "" {
					t.Error("--shard in the unsharded CronJob")
				}
				return
			}
			if js.CompletionMode == nil || *js.CompletionMode != batchv1.IndexedCompletion {
				t.Fatal("completionMode is not Indexed")
			}
			if js.Completions == nil || js.Parallelism == nil || *js.Completions != *js.Parallelism || *js.Completions < 2 {
				t.Errorf("completions %s, parallelism %s: want equal, at least 2", ptrString(js.Completions), ptrString(js.Parallelism))
			}
			shard := argValue(args, "--shard")
			index, count, ok := strings.Cut(shard, "/")
			if !ok || index != "" {
				t.Fatalf("--shard %q: want /COUNT, the index taken from JOB_COMPLETION_INDEX", shard)
			}
			if n, err := strconv.Atoi(count); err != nil || js.Completions == nil || int32(n) != *js.Completions {
				t.Errorf("--shard %q: COUNT is not completions (%s): a shard would never run, or two pods would share one", shard, ptrString(js.Completions))
			}
		})
	}
}

// TestIndexedJobFailuresStayInTheirIndex holds the sharded Job to its promise: whatever one
// shard's pod fails with, the other shards run on to the end of their pass. It works out what the
// Job controller does with each failure from the manifest's own settings.
func TestIndexedJobFailuresStayInTheirIndex(t *testing.T) {
	m := loadManifests(t)
	cj := m.cronJobs["indexed-job.yaml"]
	if cj == nil {
		t.Fatal("indexed-job.yaml: no CronJob")
	}
	js := cj.Spec.JobTemplate.Spec
	pod := js.Template.Spec
	if js.CompletionMode == nil || *js.CompletionMode != batchv1.IndexedCompletion {
		t.Fatal("completionMode is not Indexed: backoffLimitPerIndex needs it")
	}
	if js.Completions == nil {
		t.Fatal("completions not set")
	}
	completions := *js.Completions
	// Per-index backoff: a failed index is that index's alone, and not retried in this run.
	if js.BackoffLimitPerIndex == nil || *js.BackoffLimitPerIndex != 0 {
		t.Fatalf("backoffLimitPerIndex %s, want 0: a failed shard waits for the next scheduled run, the others run on", ptrString(js.BackoffLimitPerIndex))
	}
	// The Job-wide limits must be out of reach: going past either fails the Job and terminates
	// the shards still running. Every index can fail backoffLimitPerIndex+1 times at most
	// (failures the policy ignores are not counted).
	if most := completions * (*js.BackoffLimitPerIndex + 1); js.BackoffLimit != nil && *js.BackoffLimit < most {
		t.Errorf("backoffLimit %d: failed pod %d would fail the Job and terminate the shards still running, and the shards may fail %d times between them (leave it out: it defaults to 2147483647)", *js.BackoffLimit, *js.BackoffLimit+1, most)
	}
	if js.MaxFailedIndexes != nil && *js.MaxFailedIndexes < completions {
		t.Errorf("maxFailedIndexes %d: failed shard %d would fail the Job and terminate the shards still running (leave it out, or set it to completions, %d)", *js.MaxFailedIndexes, *js.MaxFailedIndexes+1, completions)
	}
	if pod.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %q: podFailurePolicy and backoffLimitPerIndex need Never", pod.RestartPolicy)
	}
	if js.PodFailurePolicy == nil {
		t.Fatal("no podFailurePolicy")
	}
	container := pod.Containers[0].Name
	for i, r := range js.PodFailurePolicy.Rules {
		if (r.OnExitCodes == nil) == (len(r.OnPodConditions) == 0) {
			t.Errorf("rule %d: want exactly one of onExitCodes and onPodConditions", i)
		}
		if e := r.OnExitCodes; e != nil {
			if e.ContainerName != nil && *e.ContainerName != container {
				t.Errorf("rule %d: containerName %q is not the pod's container %q: the rule would never match", i, *e.ContainerName, container)
			}
			if !slices.IsSorted(e.Values) || len(slices.Compact(slices.Clone(e.Values))) != len(e.Values) ||
				(e.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn && slices.Contains(e.Values, 0)) {
				t.Errorf("rule %d: exit codes %v: the API wants them sorted, unique, and no 0 with In", i, e.Values)
			}
		}
	}

	// Each way a shard's pod can fail, and what must follow.
	disrupted := []corev1.PodConditionType{corev1.DisruptionTarget}
	for _, tc := range []struct {
		name       string
		exitCode   int32
		conditions []corev1.PodConditionType
		want       batchv1.PodFailurePolicyAction
	}{
		{"exit 1: a client failed, e.g. a connection to re-authorize", 1, nil, batchv1.PodFailurePolicyActionFailIndex},
		{"exit 2: config or start-up error", 2, nil, batchv1.PodFailurePolicyActionFailIndex},
		{"exit 3: a second signal", 3, nil, batchv1.PodFailurePolicyActionFailIndex},
		{"killed: OOM, or the grace period ran out", 137, nil, batchv1.PodFailurePolicyActionCount},
		{"evicted by a node drain", 1, disrupted, batchv1.PodFailurePolicyActionIgnore},
	} {
		got := podFailureAction(js, container, tc.exitCode, tc.conditions)
		if got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	for code := int32(1); code <= 255; code++ {
		for _, conds := range [][]corev1.PodConditionType{nil, disrupted} {
			if a := podFailureAction(js, container, code, conds); a == batchv1.PodFailurePolicyActionFailJob {
				t.Errorf("exit %d (conditions %v): FailJob would terminate the other shards", code, conds)
			}
		}
	}
}

// podFailureAction is what the Job controller does with a pod of js that failed with exitCode and
// the conditions given (status True), as Kubernetes documents podFailurePolicy: the first rule whose
// requirement the pod meets decides; when none does, the failure is counted against the backoff
// limits.
func podFailureAction(js batchv1.JobSpec, container string, exitCode int32, conditions []corev1.PodConditionType) batchv1.PodFailurePolicyAction {
	if js.PodFailurePolicy == nil {
		return batchv1.PodFailurePolicyActionCount
	}
	for _, r := range js.PodFailurePolicy.Rules {
		if e := r.OnExitCodes; e != nil && (e.ContainerName == nil || *e.ContainerName == container) {
			in := slices.Contains(e.Values, exitCode)
			if (e.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn && in) || (e.Operator == batchv1.PodFailurePolicyOnExitCodesOpNotIn && !in) {
				return r.Action
			}
		}
		for _, p := range r.OnPodConditions {
			if (p.Status == "" || p.Status == corev1.ConditionTrue) && slices.Contains(conditions, p.Type) {
				return r.Action
			}
		}
	}
	return batchv1.PodFailurePolicyActionCount
}

func TestDeployment(t *testing.T) {
	m := loadManifests(t)
	d := m.deployments["deployment.yaml"]
	if d == nil {
		t.Fatal("no Deployment")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("replicas %s, want 1", ptrString(d.Spec.Replicas))
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("strategy %q, want Recreate: two daemons would overlap during a rollout", d.Spec.Strategy.Type)
	}
	if d.Spec.Selector == nil {
		t.Fatal("no selector")
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels", k, v)
		}
	}
	c := d.Spec.Template.Spec.Containers[0]
	if slices.Contains(c.Args, "--once") || slices.Contains(c.Args, "--dry-run") {
		t.Errorf("args %q: a daemon runs without --once", c.Args)
	}
	addr := argValue(c.Args, "--metrics-address")
	if addr != ":9090" {
		t.Fatalf("--metrics-address %q, want :9090", addr)
	}
	for name, probe := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if probe == nil || probe.HTTPGet == nil {
			t.Errorf("no HTTP probe on %s", name)
			continue
		}
		if probe.HTTPGet.Path != name {
			t.Errorf("probe path %q, want %s", probe.HTTPGet.Path, name)
		}
		if port := resolvePort(c, probe.HTTPGet.Port); port != 9090 {
			t.Errorf("probe on %s: port %v resolves to %d, want 9090 (--metrics-address)", name, probe.HTTPGet.Port.String(), port)
		}
	}
}

func TestKustomization(t *testing.T) {
	m := loadManifests(t)
	k := m.kustomization
	for _, r := range []string{"serviceaccount.yaml", "configmap.yaml", "cronjob.yaml"} {
		if !slices.Contains(k.Resources, r) {
			t.Errorf("resources %q: no %s", k.Resources, r)
		}
	}
	for _, r := range k.Resources {
		if _, err := os.Stat(r); err != nil {
			t.Errorf("resource %s: %v", r, err)
		}
	}
	// Only one of the three workloads at a time.
	n := 0
	for _, w := range []string{"cronjob.yaml", "indexed-job.yaml", "deployment.yaml"} {
		if slices.Contains(k.Resources, w) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d workloads among the resources, want one", n)
	}
	// Every other manifest is named in its comments as a variant or an option.
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.files {
		if f != "kustomization.yaml" && !slices.Contains(k.Resources, f) && !strings.Contains(string(raw), f) {
			t.Errorf("%s is neither a resource nor mentioned in kustomization.yaml", f)
		}
	}
	// The namespace is the one Vault's role binds (vault/setup.sh's default) and the one the
	// optional ClusterRoleBinding names.
	setup, err := os.ReadFile("vault/setup.sh")
	if err != nil {
		t.Fatal(err)
	}
	if want := "NAMESPACE=${NAMESPACE:-" + k.Namespace + "}"; k.Namespace == "" || !strings.Contains(string(setup), want) {
		t.Errorf("namespace %q: vault/setup.sh does not default to it (%s)", k.Namespace, want)
	}
	for f, b := range m.bindings {
		for _, s := range b.Subjects {
			if s.Kind == rbacv1.ServiceAccountKind && (s.Namespace != k.Namespace || s.Name != "token-rotator") {
				t.Errorf("%s: subject %s/%s, want %s/token-rotator", f, s.Namespace, s.Name, k.Namespace)
			}
		}
		if b.RoleRef.Name != "system:auth-delegator" {
			t.Errorf("%s: roleRef %q", f, b.RoleRef.Name)
		}
	}
}

// mountFor returns the volume mounted read-only over path in container c of pod p.
func mountFor(t *testing.T, p *corev1.PodSpec, c corev1.Container, path string) *corev1.Volume {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		if strings.HasPrefix(path, strings.TrimSuffix(vm.MountPath, "/")+"/") {
			if !vm.ReadOnly {
				t.Errorf("the mount at %s is not read-only", vm.MountPath)
			}
			for i := range p.Volumes {
				if p.Volumes[i].Name == vm.Name {
					return &p.Volumes[i]
				}
			}
			t.Fatalf("mount %s: no volume %q", vm.MountPath, vm.Name)
		}
	}
	t.Fatalf("%s is in no volume mount", path)
	return nil
}

func argValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

func envValue(env []corev1.EnvVar, name string) string {
	for _, e := range env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func resolvePort(c corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}

func isTrue(b *bool) bool { return b != nil && *b }

func ptrString[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}
