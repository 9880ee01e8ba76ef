//go:build unix

package charts

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"token-rotator/internal/testenv"
)

// clusterCase is one way to install token-rotator, applied to a real control plane.
type clusterCase struct {
	name    string
	objects func(t *testing.T, ns string) []object
	// args are the container's arguments every pod must carry.
	args []string
	// pods is the number of pods the controllers must create: the Indexed Job's completions.
	pods int
	// indexed: the pods come from an Indexed Job and carry JOB_COMPLETION_INDEX.
	indexed bool
	// daemon: a Deployment (ReplicaSet, Pod), not a CronJob (Job, Pods).
	daemon bool
	// caCert: VAULT_CACERT and the vault-ca Secret's mount are expected.
	caCert bool
}

// TestManifestsOnKubernetes applies deploy/ (each variant) and the chart (each mode) to a real
// kube-apiserver with server-side apply and fieldValidation=Strict, each into a namespace of its
// own that enforces the restricted Pod Security profile. The real kube-controller-manager then
// turns each CronJob (through a Job made from it as `kubectl create job --from=cronjob/NAME`
// does) or Deployment (through its ReplicaSet) into Pods, which Pod Security admission admits;
// no kubelet runs them, so they stay Pending, and the test checks their specs: what the pods
// would run with is what the manifests promise.
func TestManifestsOnKubernetes(t *testing.T) {
	start := time.Now()
	k := testenv.StartKube(t, testenv.KubeOptions{})
	t.Logf("timing: control plane up in %v", time.Since(start).Round(time.Millisecond))

	deployArgs := []string{"--config", "/etc/token-rotator/config.yaml", "--once", "--log-format", "json"}
	cases := []clusterCase{
		{
			name: "deploy/ cronjob.yaml",
			objects: func(t *testing.T, ns string) []object {
				// The shipped kustomization plus the optional auth-delegator.yaml, so that its
				// ClusterRoleBinding is applied too.
				return kustomizeBuild(t, "namespace.yaml", "serviceaccount.yaml", "configmap.yaml", "cronjob.yaml", "auth-delegator.yaml")
			},
			args: deployArgs, pods: 1,
		},
		{
			name: "deploy/ indexed-job.yaml",
			objects: func(t *testing.T, ns string) []object {
				return kustomizeBuild(t, "namespace.yaml", "serviceaccount.yaml", "configmap.yaml", "indexed-job.yaml")
			},
			args: []string{"--config", "/etc/token-rotator/config.yaml", "--once", "--shard", "/4", "--log-format", "json"},
			pods: 4, indexed: true,
		},
		{
			name: "deploy/ deployment.yaml",
			objects: func(t *testing.T, ns string) []object {
				return kustomizeBuild(t, "namespace.yaml", "serviceaccount.yaml", "configmap.yaml", "deployment.yaml", "service.yaml")
			},
			args: []string{"--config", "/etc/token-rotator/config.yaml", "--metrics-address", ":9090", "--log-format", "json"},
			pods: 1, daemon: true,
		},
		{
			name: "chart cronjob",
			objects: func(t *testing.T, ns string) []object {
				return mustRenderIn(t, ns, map[string]any{
					"authDelegator":  true,
					"vault":          map[string]any{"caCert": map[string]any{"secretName": "vault-ca"}},
					"metrics":        map[string]any{"pushgateway": "http://pushgateway.monitoring:9091"},
					"prometheusRule": map[string]any{"enabled": true},
				}).objects
			},
			args:   []string{"--config", "/etc/token-rotator/config.yaml", "--once", "--pushgateway", "http://pushgateway.monitoring:9091", "--log-format", "json"},
			pods:   1,
			caCert: true,
		},
		{
			name: "chart sharded",
			objects: func(t *testing.T, ns string) []object {
				return mustRenderIn(t, ns, map[string]any{"mode": "sharded", "shards": 3}).objects
			},
			args: []string{"--config", "/etc/token-rotator/config.yaml", "--once", "--shard", "/3", "--log-format", "json"},
			pods: 3, indexed: true,
		},
		{
			name: "chart daemon",
			objects: func(t *testing.T, ns string) []object {
				return mustRenderIn(t, ns, map[string]any{
					"mode":           "daemon",
					"metrics":        map[string]any{"serviceMonitor": map[string]any{"enabled": true}},
					"prometheusRule": map[string]any{"enabled": true},
				}).objects
			},
			args: []string{"--config", "/etc/token-rotator/config.yaml", "--metrics-address", ":9090", "--log-format", "json"},
			pods: 1, daemon: true,
		},
	}
	var firstPod *corev1.Pod
	for i, c := range cases {
		ns := fmt.Sprintf("tr-%d", i)
		t.Run(c.name, func(t *testing.T) {
			pod := runClusterCase(t, k, ns, c)
			if firstPod == nil {
				firstPod = pod
			}
		})
	}

	// The admission that let the pods above in is real and enforcing: the same pod with a
	// privileged container is refused in the same namespace.
	t.Run("privileged pod refused", func(t *testing.T) {
		if firstPod == nil {
			t.Skip("no pod was created above")
		}
		bad := corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: "privileged", Namespace: firstPod.Namespace},
			Spec:       *firstPod.Spec.DeepCopy(),
		}
		bad.Spec.NodeName = ""
		privileged := true
		bad.Spec.Containers[0].SecurityContext.Privileged = &privileged
		// Validation refuses privileged with allowPrivilegeEscalation false before admission sees it.
		bad.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil
		// Refused by Pod Security admission, not by anything else that answers 403.
		status, body := postRaw(t, k, "/api/v1/namespaces/"+firstPod.Namespace+"/pods", bad)
		var refusal metav1.Status
		_ = json.Unmarshal([]byte(body), &refusal)
		if status != http.StatusForbidden || !strings.Contains(refusal.Message, `violates PodSecurity "restricted:latest": privileged`) {
			t.Fatalf("a privileged pod in a namespace enforcing restricted: status %d %s; want 403 from Pod Security admission", status, body)
		}
		t.Logf("refused: %s", refusal.Message)
		// The label is what refuses it: the same pod is accepted in a namespace without it.
		open := "tr-unlabelled"
		if status := k.Do(t, http.MethodPost, "/api/v1/namespaces", corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: open}}, nil); status != http.StatusCreated {
			t.Fatalf("create namespace %s: status %d", open, status)
		}
		sa := corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: bad.Spec.ServiceAccountName}}
		if status := k.Do(t, http.MethodPost, "/api/v1/namespaces/"+open+"/serviceaccounts", sa, nil); status != http.StatusCreated {
			t.Fatalf("create service account in %s: status %d", open, status)
		}
		bad.Namespace = open
		if status, body := postRaw(t, k, "/api/v1/namespaces/"+open+"/pods", bad); status != http.StatusCreated {
			t.Fatalf("the privileged pod in a namespace without the restricted label: status %d %s, want 201", status, body)
		}
	})
}

// runClusterCase applies one case into namespace ns, makes the controllers create its pods and
// checks them; it returns one of the pods.
func runClusterCase(t *testing.T, k *testenv.Kube, ns string, c clusterCase) *corev1.Pod {
	t.Helper()
	// The namespace first, labelled as the restricted profile needs: deploy/namespace.yaml and
	// `helm install --create-namespace` make it without the label (the cluster's default level
	// applies), so the test sets it, as an operator enforcing restricted would.
	nsObj := corev1.Namespace{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{
			"pod-security.kubernetes.io/enforce": "restricted",
		}},
	}
	if status := k.Do(t, http.MethodPost, "/api/v1/namespaces", nsObj, nil); status != http.StatusCreated {
		t.Fatalf("create namespace %s: status %d", ns, status)
	}

	step := time.Now()
	var apply, skipped []object
	for _, o := range c.objects(t, ns) {
		// ServiceMonitor and PrometheusRule are the Prometheus Operator's kinds: their CRDs are not
		// installed on this control plane, so they are left out of the apply. Everything else
		// must be accepted.
		if strings.HasPrefix(apiVersion(o), "monitoring.coreos.com/") {
			skipped = append(skipped, o)
			continue
		}
		apply = append(apply, o)
	}
	var docs strings.Builder
	for _, o := range apply {
		docs.WriteString("---\n")
		docs.Write(o.yamlDoc(t))
	}
	k.Apply(t, []byte(docs.String()), ns)
	// Apply skips any group the server does not serve; every object left in must now exist.
	for _, o := range apply {
		p := objectPath(t, o, ns)
		if status := k.Do(t, http.MethodGet, p, nil, nil); status != http.StatusOK {
			t.Fatalf("%s applied but GET %s: status %d", o.key(), p, status)
		}
	}
	t.Logf("timing: applied %s in %v (left out, no CRD: %s)", keys(apply), time.Since(step).Round(time.Millisecond), cmp.Or(keys(skipped), "none"))

	step = time.Now()
	var selector string
	if c.daemon {
		var d struct {
			Spec struct {
				Selector metav1.LabelSelector `json:"selector"`
			} `json:"spec"`
		}
		name := find(t, apply, "Deployment").name()
		if status := k.Do(t, http.MethodGet, "/apis/apps/v1/namespaces/"+ns+"/deployments/"+name, nil, &d); status != http.StatusOK {
			t.Fatalf("get deployment %s: status %d", name, status)
		}
		selector = metav1.FormatLabelSelector(&d.Spec.Selector)
	} else {
		job := jobFromCronJob(t, k, ns, find(t, apply, "CronJob").name())
		selector = "batch.kubernetes.io/job-name=" + job
	}
	var pods []corev1.Pod
	k.WaitFor(t, 60*time.Second, func() bool {
		pods = k.Pods(t, ns, selector)
		return len(pods) >= c.pods
	})
	time.Sleep(500 * time.Millisecond) // no more than c.pods: a surplus would show by now
	pods = k.Pods(t, ns, selector)
	t.Logf("timing: the controllers created %d pod(s) in %v: %s", len(pods), time.Since(step).Round(time.Millisecond), podNames(pods))
	if len(pods) != c.pods {
		t.Fatalf("%d pods match %s, want %d", len(pods), selector, c.pods)
	}

	step = time.Now()
	sa := find(t, apply, "ServiceAccount").name()
	cm := find(t, apply, "ConfigMap")
	jwtFile := configJWTFile(t, k, ns, cm.name())
	var indexes []string
	for i := range pods {
		checkPod(t, &pods[i], c, sa, cm.name(), jwtFile)
		indexes = append(indexes, pods[i].Annotations[batchv1.JobCompletionIndexAnnotation])
	}
	if c.indexed {
		sort.Strings(indexes)
		var want []string
		for i := range c.pods {
			want = append(want, strconv.Itoa(i))
		}
		if !slices.Equal(indexes, want) {
			t.Errorf("completion indexes %v, want %v", indexes, want)
		}
	}
	t.Logf("timing: checked the pods in %v", time.Since(step).Round(time.Millisecond))
	return &pods[0]
}

// jobFromCronJob creates a Job from the CronJob as `kubectl create job --from=cronjob/NAME` does:
// the CronJob's jobTemplate, the annotation cronjob.kubernetes.io/instantiate=manual and the
// CronJob as its controlling owner. It returns the Job's name.
func jobFromCronJob(t *testing.T, k *testenv.Kube, ns, name string) string {
	t.Helper()
	var cj batchv1.CronJob
	if status := k.Do(t, http.MethodGet, "/apis/batch/v1/namespaces/"+ns+"/cronjobs/"+name, nil, &cj); status != http.StatusOK {
		t.Fatalf("get cronjob %s: status %d", name, status)
	}
	annotations := map[string]string{"cronjob.kubernetes.io/instantiate": "manual"}
	for k, v := range cj.Spec.JobTemplate.Annotations {
		annotations[k] = v
	}
	controller := true
	job := batchv1.Job{
		TypeMeta: metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        name + "-manual",
			Namespace:   ns,
			Labels:      cj.Spec.JobTemplate.Labels,
			Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "batch/v1", Kind: "CronJob", Name: cj.Name, UID: cj.UID, Controller: &controller,
			}},
		},
		Spec: cj.Spec.JobTemplate.Spec,
	}
	if status := k.Do(t, http.MethodPost, "/apis/batch/v1/namespaces/"+ns+"/jobs", job, nil); status != http.StatusCreated {
		t.Fatalf("create job from cronjob %s: status %d", name, status)
	}
	return job.Name
}

// configJWTFile reads config.yaml from the ConfigMap as the API server stores it and returns its
// vault.auth.jwt_file: where the job reads its token.
func configJWTFile(t *testing.T, k *testenv.Kube, ns, name string) string {
	t.Helper()
	var cm corev1.ConfigMap
	if status := k.Do(t, http.MethodGet, "/api/v1/namespaces/"+ns+"/configmaps/"+name, nil, &cm); status != http.StatusOK {
		t.Fatalf("get configmap %s: status %d", name, status)
	}
	var cfg struct {
		Vault struct {
			Auth struct {
				Method  string `json:"method"`
				JWTFile string `json:"jwt_file"`
			} `json:"auth"`
		} `json:"vault"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("configmap %s: config.yaml: %v", name, err)
	}
	if cfg.Vault.Auth.Method != "kubernetes" {
		t.Fatalf("configmap %s: vault.auth.method %q, want kubernetes", name, cfg.Vault.Auth.Method)
	}
	if cfg.Vault.Auth.JWTFile == "" {
		return "/var/run/secrets/kubernetes.io/serviceaccount/token" // the job's default
	}
	return cfg.Vault.Auth.JWTFile
}

// checkPod checks one pod the controllers created against what the manifests promise.
func checkPod(t *testing.T, p *corev1.Pod, c clusterCase, sa, configMap, jwtFile string) {
	t.Helper()
	errorf := func(format string, a ...any) { t.Errorf("pod %s: "+format, append([]any{p.Name}, a...)...) }
	if p.Status.Phase != corev1.PodPending || p.Spec.NodeName != "" {
		errorf("phase %q on node %q: want Pending and unscheduled (no scheduler, no kubelet)", p.Status.Phase, p.Spec.NodeName)
	}
	if p.Spec.ServiceAccountName != sa {
		errorf("serviceAccountName %q, want %q", p.Spec.ServiceAccountName, sa)
	}
	if a := p.Spec.AutomountServiceAccountToken; a == nil || *a {
		errorf("automountServiceAccountToken %v, want false", a)
	}
	if psc := p.Spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		errorf("pod securityContext %+v: want runAsNonRoot and seccomp RuntimeDefault", psc)
	}
	if len(p.Spec.Containers) != 1 {
		errorf("%d containers, want 1", len(p.Spec.Containers))
		return
	}
	ctr := p.Spec.Containers[0]
	if !slices.Equal(ctr.Args, c.args) {
		errorf("args %q, want %q", ctr.Args, c.args)
	}
	sc := ctr.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Privileged == nil || *sc.Privileged ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		errorf("container securityContext %+v: want runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, not privileged, drop ALL", sc)
	}

	env := map[string]corev1.EnvVar{}
	for _, e := range ctr.Env {
		env[e.Name] = e
	}
	if v := env["VAULT_ADDR"].Value; v != "https://vault.vault.svc:8200" {
		errorf("VAULT_ADDR %q", v)
	}
	mounts := map[string]corev1.VolumeMount{} // by volume name
	for _, m := range ctr.VolumeMounts {
		mounts[m.Name] = m
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range p.Spec.Volumes {
		volumes[v.Name] = v
		// automountServiceAccountToken false: the ServiceAccount admission plugin added no token
		// for the Kubernetes API.
		if strings.HasPrefix(v.Name, "kube-api-access-") {
			errorf("volume %s: a Kubernetes API token is mounted", v.Name)
		}
	}
	if c.caCert {
		caFile := env["VAULT_CACERT"].Value
		m := mounts["vault-ca"]
		if v := volumes["vault-ca"]; v.Secret == nil || v.Secret.SecretName != "vault-ca" || m.MountPath == "" || path.Dir(caFile) != m.MountPath {
			errorf("VAULT_CACERT %q is not in the vault-ca Secret's mount (%+v, %+v)", caFile, m, v.VolumeSource)
		}
	} else if _, ok := env["VAULT_CACERT"]; ok {
		errorf("VAULT_CACERT set without a CA")
	}
	if c.indexed {
		// The job controller sets it with the downward API, from the pod's label (Kubernetes 1.28
		// and later) or annotation holding the index: what the kubelet would put in the env.
		index, ok := p.Annotations[batchv1.JobCompletionIndexAnnotation]
		if !ok {
			errorf("no annotation %s", batchv1.JobCompletionIndexAnnotation)
		}
		e := env["JOB_COMPLETION_INDEX"]
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
			errorf("JOB_COMPLETION_INDEX %+v: not from the downward API", e)
		} else if got := fieldRefValue(p, e.ValueFrom.FieldRef.FieldPath); got != index {
			errorf("JOB_COMPLETION_INDEX from %s is %q, want the completion index %q", e.ValueFrom.FieldRef.FieldPath, got, index)
		}
	} else if _, ok := env["JOB_COMPLETION_INDEX"]; ok {
		errorf("JOB_COMPLETION_INDEX set outside an Indexed Job")
	}

	if m := mounts["config"]; m.MountPath != "/etc/token-rotator" || !m.ReadOnly {
		errorf("config mount %+v, want read-only at /etc/token-rotator", m)
	}
	if v := volumes["config"]; v.ConfigMap == nil || v.ConfigMap.Name != configMap {
		errorf("config volume %+v, want ConfigMap %s", v.VolumeSource, configMap)
	}
	// The projected token: audience vault, an hour, at the path config.yaml's jwt_file names.
	var tokenPath string
	for name, v := range volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			st := s.ServiceAccountToken
			if st == nil {
				continue
			}
			if st.Audience != "vault" || st.ExpirationSeconds == nil || *st.ExpirationSeconds != 3600 {
				exp := "unset"
				if st.ExpirationSeconds != nil {
					exp = strconv.FormatInt(*st.ExpirationSeconds, 10)
				}
				errorf("projected token in %s: audience %q, expirationSeconds %s; want vault, 3600", name, st.Audience, exp)
			}
			if m, ok := mounts[name]; ok && m.ReadOnly {
				tokenPath = path.Join(m.MountPath, st.Path)
			}
		}
	}
	if tokenPath != jwtFile {
		errorf("the projected token is mounted at %q; config.yaml's jwt_file is %q", tokenPath, jwtFile)
	}
}

// fieldRefValue resolves a downward API fieldPath of the forms metadata.labels['KEY'] and
// metadata.annotations['KEY'] against the pod, as the kubelet does; "" for any other path.
func fieldRefValue(p *corev1.Pod, fieldPath string) string {
	for prefix, m := range map[string]map[string]string{"metadata.labels": p.Labels, "metadata.annotations": p.Annotations} {
		if key, ok := strings.CutPrefix(fieldPath, prefix+"['"); ok {
			if key, ok := strings.CutSuffix(key, "']"); ok {
				return m[key]
			}
		}
	}
	return ""
}

func apiVersion(o object) string { s, _ := o["apiVersion"].(string); return s }

// objectPath is the API path of an applied object; a kind missing here fails the test (add it).
func objectPath(t *testing.T, o object, ns string) string {
	t.Helper()
	resources := map[string]struct {
		plural     string
		namespaced bool
	}{
		"Namespace": {"namespaces", false}, "ClusterRoleBinding": {"clusterrolebindings", false},
		"ServiceAccount": {"serviceaccounts", true}, "ConfigMap": {"configmaps", true}, "Service": {"services", true},
		"CronJob": {"cronjobs", true}, "Deployment": {"deployments", true},
	}
	r, ok := resources[o.kind()]
	if !ok {
		t.Fatalf("objectPath: no resource for kind %s (add it)", o.kind())
	}
	p := "/api/" + apiVersion(o)
	if strings.Contains(apiVersion(o), "/") {
		p = "/apis/" + apiVersion(o)
	}
	if r.namespaced {
		p += "/namespaces/" + url.PathEscape(ns)
	}
	return p + "/" + r.plural + "/" + url.PathEscape(o.name())
}

// postRaw POSTs obj as JSON as the admin and returns the status and the body, for a refusal's
// reason (Kube.Do only logs it).
func postRaw(t *testing.T, k *testenv.Kube, p string, obj any) (int, string) {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(k.CACertPEM))
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	req, err := http.NewRequest(http.MethodPost, k.URL+p, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+k.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(bytes.TrimSpace(body))
}

func podNames(pods []corev1.Pod) string {
	var names []string
	for _, p := range pods {
		names = append(names, p.Name)
	}
	return strings.Join(names, ", ")
}
