package charts

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"token-rotator/config"
)

// strictDecoder decodes YAML into the Kubernetes API types and the Prometheus Operator's, as the
// API server does with fieldValidation=Strict: an unknown or duplicated field is an error.
var strictDecoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := monitoringv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// decodeAll strict-decodes every object, failing the test on the first that does not decode.
func decodeAll(t *testing.T, objs []object) []runtime.Object {
	t.Helper()
	var out []runtime.Object
	for _, o := range objs {
		obj, _, err := strictDecoder.Decode(o.yamlDoc(t), nil, nil)
		if err != nil {
			t.Fatalf("%s does not decode strictly: %v\n%s", o.key(), err, dump(o))
		}
		out = append(out, obj)
	}
	return out
}

// podSpecOf is the pod spec of a CronJob, Job or Deployment, or nil.
func podSpecOf(obj runtime.Object) (*corev1.PodTemplateSpec, string) {
	switch o := obj.(type) {
	case *batchv1.CronJob:
		return &o.Spec.JobTemplate.Spec.Template, "CronJob/" + o.Name
	case *batchv1.Job:
		return &o.Spec.Template, "Job/" + o.Name
	case *appsv1.Deployment:
		return &o.Spec.Template, "Deployment/" + o.Name
	}
	return nil, ""
}

// configOf loads the rendered config.yaml with the job's own loader.
func configOf(t *testing.T, objs []runtime.Object) *config.Config {
	t.Helper()
	for _, obj := range objs {
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			cfg, err := config.Parse(cm.Name+":config.yaml", []byte(cm.Data["config.yaml"]))
			if err != nil {
				t.Fatalf("the rendered config.yaml does not load: %v", err)
			}
			return cfg
		}
	}
	t.Fatal("no ConfigMap rendered")
	return nil
}

// container is the pod's token-rotator container.
func container(t *testing.T, objs []runtime.Object) (*corev1.PodSpec, *corev1.Container) {
	t.Helper()
	for _, obj := range objs {
		if tmpl, _ := podSpecOf(obj); tmpl != nil {
			for i := range tmpl.Spec.Containers {
				if tmpl.Spec.Containers[i].Name == "token-rotator" {
					return &tmpl.Spec, &tmpl.Spec.Containers[i]
				}
			}
		}
	}
	t.Fatal("no token-rotator container rendered")
	return nil, nil
}

// TestEveryModeAndOptionDecodesStrictly renders each mode with every optional part turned on and
// checks what a user would look for in the objects: they decode strictly, the config loads with
// the job's loader, and each value lands where its comment in values.yaml says.
func TestEveryModeAndOptionDecodesStrictly(t *testing.T) {
	for _, mode := range []string{"cronjob", "sharded", "daemon"} {
		t.Run(mode, func(t *testing.T) {
			values := map[string]any{
				"mode":          mode,
				"schedule":      "*/10 * * * *",
				"shards":        8,
				"authDelegator": true,
				"image":         map[string]any{"repository": "registry.example.com/token-rotator", "tag": "v1.2.3"},
				"vault": map[string]any{
					"address":             "https://vault-active.vault.svc:8200",
					"caCert":              map[string]any{"secretName": "vault-ca"},
					"serviceAccountToken": map[string]any{"audience": "https://vault.example", "expirationSeconds": 1800},
				},
				"extraArgs":      []any{"--log-level", "debug"},
				"extraEnv":       []any{map[string]any{"name": "VAULT_NAMESPACE", "value": "team-a"}},
				"podLabels":      map[string]any{"team": "payments"},
				"prometheusRule": map[string]any{"enabled": true, "labels": map[string]any{"release": "prom"}},
			}
			if mode == "daemon" {
				values["metrics"] = map[string]any{"serviceMonitor": map[string]any{"enabled": true}}
			} else {
				values["metrics"] = map[string]any{"pushgateway": "http://pushgateway.monitoring:9091"}
			}
			r := mustRender(t, values)
			objs := decodeAll(t, r.objects)

			if got := configOf(t, objs).Schedule; got != "*/10 * * * *" {
				t.Errorf("config.yaml schedule %q, want the values' schedule", got)
			}
			pod, c := container(t, objs)
			if c.Image != "registry.example.com/token-rotator:v1.2.3" {
				t.Errorf("image %q", c.Image)
			}
			env := map[string]string{}
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
			if env["VAULT_ADDR"] != "https://vault-active.vault.svc:8200" || env["VAULT_CACERT"] != "/etc/vault-ca/ca.crt" || env["VAULT_NAMESPACE"] != "team-a" {
				t.Errorf("env %v", env)
			}
			if !mounted(pod, c, "/etc/vault-ca", func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "vault-ca" }) {
				t.Error("the CA Secret is not mounted at /etc/vault-ca")
			}
			if !mounted(pod, c, "/var/run/secrets/vault", func(v corev1.Volume) bool {
				p := v.Projected
				return p != nil && len(p.Sources) == 1 && p.Sources[0].ServiceAccountToken != nil &&
					p.Sources[0].ServiceAccountToken.Audience == "https://vault.example" && *p.Sources[0].ServiceAccountToken.ExpirationSeconds == 1800
			}) {
				t.Error("the projected token lacks the values' audience or expiry")
			}
			args := strings.Join(c.Args, " ")
			want := map[string]string{
				"cronjob": "--config /etc/token-rotator/config.yaml --once --pushgateway http://pushgateway.monitoring:9091 --log-format json --log-level debug",
				"sharded": "--config /etc/token-rotator/config.yaml --once --shard /8 --pushgateway http://pushgateway.monitoring:9091 --log-format json --log-level debug",
				"daemon":  "--config /etc/token-rotator/config.yaml --metrics-address :9090 --log-format json --log-level debug",
			}[mode]
			if args != want {
				t.Errorf("args %q, want %q", args, want)
			}
			kinds := map[string]int{}
			for _, obj := range objs {
				kinds[fmt.Sprintf("%T", obj)]++
				if tmpl, name := podSpecOf(obj); tmpl != nil && tmpl.Labels["team"] != "payments" {
					t.Errorf("%s: pod labels %v lack podLabels", name, tmpl.Labels)
				}
				if cj, ok := obj.(*batchv1.CronJob); ok && mode == "sharded" {
					js := cj.Spec.JobTemplate.Spec
					if *js.Completions != 8 || *js.Parallelism != 8 || *js.CompletionMode != batchv1.IndexedCompletion {
						t.Errorf("sharded: completions %d, parallelism %d, mode %s; want 8, 8, Indexed", *js.Completions, *js.Parallelism, *js.CompletionMode)
					}
				}
			}
			wantKinds := []string{"*v1.ClusterRoleBinding", "*v1.ConfigMap", "*v1.PrometheusRule", "*v1.ServiceAccount"}
			if mode == "daemon" {
				wantKinds = append(wantKinds, "*v1.Deployment", "*v1.Service", "*v1.ServiceMonitor")
			} else {
				wantKinds = append(wantKinds, "*v1.CronJob")
			}
			var got []string
			for k, n := range kinds {
				for range n {
					got = append(got, k)
				}
			}
			slices.Sort(got)
			slices.Sort(wantKinds)
			if !slices.Equal(got, wantKinds) {
				t.Errorf("rendered %v, want %v", got, wantKinds)
			}
		})
	}
}

// mounted reports whether the container mounts, read-only at path, a volume that ok accepts.
func mounted(pod *corev1.PodSpec, c *corev1.Container, path string, ok func(corev1.Volume) bool) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath != path || !m.ReadOnly {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && ok(v) {
				return true
			}
		}
	}
	return false
}

// TestExistingConfigMap: with existingConfigMap the chart renders no ConfigMap and the pods mount
// the one named.
func TestExistingConfigMap(t *testing.T) {
	objs := decodeAll(t, mustRender(t, map[string]any{"existingConfigMap": "my-config"}).objects)
	pod, c := container(t, objs)
	for _, obj := range objs {
		if _, ok := obj.(*corev1.ConfigMap); ok {
			t.Error("a ConfigMap was rendered although existingConfigMap is set")
		}
	}
	if !mounted(pod, c, "/etc/token-rotator", func(v corev1.Volume) bool { return v.ConfigMap != nil && v.ConfigMap.Name == "my-config" }) {
		t.Error("the pods do not mount existingConfigMap at /etc/token-rotator")
	}
}

// TestBadValuesFailWithTheirPath: a value values.schema.json or the templates refuse fails the
// render (as `helm install` and `helm template` fail) with a message naming the value.
func TestBadValuesFailWithTheirPath(t *testing.T) {
	for _, c := range []struct {
		name   string
		values map[string]any
		want   []string // each must be in the error
	}{
		{"unknown mode", map[string]any{"mode": "cron"}, []string{"/mode", "cronjob"}},
		{"misspelt top-level value", map[string]any{"shedule": "*/5 * * * *"}, []string{"shedule"}},
		{"misspelt nested value", map[string]any{"image": map[string]any{"repo": "x"}}, []string{"/image", "repo"}},
		{"string for a number", map[string]any{"shards": "4"}, []string{"/shards"}},
		{"one shard", map[string]any{"shards": 1}, []string{"/shards"}},
		{"address without a scheme", map[string]any{"vault": map[string]any{"address": "vault:8200"}}, []string{"/vault/address"}},
		{"short projected token", map[string]any{"vault": map[string]any{"serviceAccountToken": map[string]any{"expirationSeconds": 60}}}, []string{"/vault/serviceAccountToken/expirationSeconds"}},
		{"bad pull policy", map[string]any{"image": map[string]any{"pullPolicy": "always"}}, []string{"/image/pullPolicy"}},
		{"bad digest", map[string]any{"image": map[string]any{"digest": "latest"}}, []string{"/image/digest"}},
		{"boolean as a string", map[string]any{"prometheusRule": map[string]any{"enabled": "yes"}}, []string{"/prometheusRule/enabled"}},
		{"no clients", map[string]any{"config": map[string]any{"clients": []any{}}}, []string{"/config/clients"}},
		{"a second schedule in config", map[string]any{"config": map[string]any{"schedule": "0 * * * *"}}, []string{"config.schedule", "schedule"}},
		{"ServiceMonitor for a CronJob", map[string]any{"metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}}}, []string{"metrics.serviceMonitor.enabled", "mode daemon", "metrics.pushgateway"}},
		{"no service account name", map[string]any{"serviceAccount": map[string]any{"create": false}}, []string{"serviceAccount.name"}},
		{"jwt_file not the mounted token", map[string]any{"config": map[string]any{"vault": map[string]any{"auth": map[string]any{"jwt_file": "/var/run/secrets/kubernetes.io/serviceaccount/token"}}}}, []string{"config.vault.auth.jwt_file", "/var/run/secrets/vault/token"}},
		{"Job deadline under pass_deadline + a rotation", map[string]any{"config": map[string]any{"pass_deadline": "30m"}}, []string{"cronjob.activeDeadlineSeconds 1800", "config.pass_deadline (30m)"}},
		{"alerts with no metrics to read", map[string]any{"prometheusRule": map[string]any{"enabled": true}}, []string{"prometheusRule.enabled", "metrics.pushgateway"}},
		{"a time zone the config's schedule is not in", map[string]any{"timeZone": "Europe/London"}, []string{"/timeZone"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := renderChart(t, c.values)
			if err == nil {
				t.Fatalf("rendered with %v; want an error naming %v", c.values, c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
}

// TestNotesTellTheNextStep: NOTES.txt, printed by `helm install`, names what was installed, the
// service account and namespace Vault's role must bind, and the command for the first run.
func TestNotesTellTheNextStep(t *testing.T) {
	for mode, want := range map[string][]string{
		"cronjob": {"CronJob token-rotator,", "kubectl -n tools create job token-rotator-first --from=cronjob/token-rotator\n"},
		"sharded": {"CronJob token-rotator-sharded, 4 shards", "--from=cronjob/token-rotator-sharded\n"},
		"daemon":  {"Deployment token-rotator,", "exec deploy/token-rotator -- /token-rotator validate"},
	} {
		t.Run(mode, func(t *testing.T) {
			install := mustRenderIn(t, "tools", map[string]any{"mode": mode})
			for _, w := range append(want, "service account\ntoken-rotator in namespace tools", "NAMESPACE=tools SERVICE_ACCOUNT=token-rotator AUDIENCE=vault", "deploy/vault/setup.sh") {
				if !strings.Contains(install.notes, w) {
					t.Errorf("NOTES.txt lacks %q:\n%s", w, install.notes)
				}
			}
		})
	}
}

// TestPrometheusRuleIsDeployRules: the chart's PrometheusRule holds exactly the rules of
// deploy/alerts/token-rotator.rules.yaml, the file promtool tests (deploy/alerts_test.go): the
// chart's copy is the same bytes, and the rendered object's groups are that file's.
func TestPrometheusRuleIsDeployRules(t *testing.T) {
	deployRules, err := os.ReadFile(deployDir + "/alerts/token-rotator.rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	chartRules, err := os.ReadFile(chartDir + "/files/token-rotator.rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(deployRules, chartRules) {
		t.Fatal("charts/token-rotator/files/token-rotator.rules.yaml differs from deploy/alerts/token-rotator.rules.yaml: copy it over")
	}
	var want monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(deployRules, &want); err != nil {
		t.Fatalf("deploy's rules do not decode as a PrometheusRule's spec: %v", err)
	}
	if len(want.Groups) == 0 || len(want.Groups[0].Rules) < 5 {
		t.Fatalf("deploy's rules hold %d groups", len(want.Groups))
	}
	var rule *monitoringv1.PrometheusRule
	for _, obj := range decodeAll(t, mustRender(t, map[string]any{"prometheusRule": map[string]any{"enabled": true, "labels": map[string]any{"release": "prom"}}, "metrics": map[string]any{"pushgateway": "http://pushgateway:9091"}}).objects) {
		if r, ok := obj.(*monitoringv1.PrometheusRule); ok {
			rule = r
		}
	}
	if rule == nil {
		t.Fatal("prometheusRule.enabled rendered no PrometheusRule")
	}
	if rule.Labels["release"] != "prom" {
		t.Errorf("labels %v lack prometheusRule.labels", rule.Labels)
	}
	if diff := cmp.Diff(want, rule.Spec); diff != "" {
		t.Errorf("the PrometheusRule's spec differs from deploy's rules (-deploy +chart):\n%s", diff)
	}
	if has(mustRender(t, nil).objects, "PrometheusRule") {
		t.Error("a PrometheusRule was rendered with prometheusRule.enabled false")
	}
}

// renderAs renders with a release name of its own (`helm install <release>`).
func renderAs(t *testing.T, releaseName string, values map[string]any) []runtime.Object {
	t.Helper()
	r, err := renderRelease(t, releaseName, namespace, values)
	if err != nil {
		t.Fatalf("render as %s: %v", releaseName, err)
	}
	return decodeAll(t, r.objects)
}

// TestNamesFitAndStayApart: with the longest release name Helm allows (53 characters) every
// object's name fits its kind's limit (a CronJob's 52, so that its Jobs' names fit 63), the
// sharded CronJob's included; the cluster-wide ClusterRoleBinding carries the namespace, so two
// releases of one name in two namespaces do not collide.
func TestNamesFitAndStayApart(t *testing.T) {
	long := strings.Repeat("r", 53)
	for _, mode := range []string{"cronjob", "sharded", "daemon"} {
		for _, obj := range renderAs(t, long, map[string]any{"mode": mode, "authDelegator": true}) {
			m, err := meta.Accessor(obj)
			if err != nil {
				t.Fatal(err)
			}
			limit := 63
			if _, ok := obj.(*batchv1.CronJob); ok {
				limit = 52
			}
			if len(m.GetName()) > limit {
				t.Errorf("%s: %T %q is %d characters, over %d", mode, obj, m.GetName(), len(m.GetName()), limit)
			}
			if crb, ok := obj.(*rbacv1.ClusterRoleBinding); ok && !strings.HasPrefix(crb.Name, namespace+"-") {
				t.Errorf("ClusterRoleBinding %q does not carry the namespace", crb.Name)
			}
		}
	}
}

// TestDaemonRestartsOnANewConfig: the daemon reads its config once, so its pod template changes
// (checksum/config) when the config does, and `helm upgrade` rolls it; it does not change
// otherwise.
func TestDaemonRestartsOnANewConfig(t *testing.T) {
	checksum := func(values map[string]any) string {
		values["mode"] = "daemon"
		for _, obj := range decodeAll(t, mustRender(t, values).objects) {
			if d, ok := obj.(*appsv1.Deployment); ok {
				return d.Spec.Template.Annotations["checksum/config"]
			}
		}
		t.Fatal("no Deployment")
		return ""
	}
	a, b := checksum(map[string]any{}), checksum(map[string]any{"config": map[string]any{"renew_before": "40m"}})
	if a == "" || a == b {
		t.Errorf("checksum/config %q, then %q after a config change: want two different values", a, b)
	}
	if c := checksum(map[string]any{"resources": map[string]any{"limits": map[string]any{"memory": "256Mi"}}}); c != a {
		t.Errorf("checksum/config changed with the resources alone")
	}
}

// TestImageAndPullSecrets: a tag and a digest give repository:tag@digest; a digest alone
// repository@digest; a parent chart's global.imagePullSecrets are used with the chart's own.
func TestImageAndPullSecrets(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for values, want := range map[*map[string]any]string{
		{"image": map[string]any{"tag": "v1", "digest": digest}}: "token-rotator:v1@" + digest,
		{"image": map[string]any{"digest": digest}}:              "token-rotator@" + digest,
	} {
		_, c := container(t, decodeAll(t, mustRender(t, *values).objects))
		if c.Image != want {
			t.Errorf("image %q, want %q", c.Image, want)
		}
	}
	pod, _ := container(t, decodeAll(t, mustRender(t, map[string]any{
		"imagePullSecrets": []any{map[string]any{"name": "own"}},
		"global":           map[string]any{"imagePullSecrets": []any{map[string]any{"name": "parent"}}},
	}).objects))
	var names []string
	for _, s := range pod.ImagePullSecrets {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"own", "parent"}) {
		t.Errorf("imagePullSecrets %v, want [own parent]", names)
	}
}

// TestJWTFileIsTheMountedToken: with kubernetes auth and no jwt_file, the rendered config names the
// token the pods mount, not the loader's default (the API token, which the pods do not mount).
func TestJWTFileIsTheMountedToken(t *testing.T) {
	objs := decodeAll(t, mustRender(t, map[string]any{"config": map[string]any{"vault": map[string]any{"auth": map[string]any{"jwt_file": nil}}}}).objects)
	if got := configOf(t, objs).Vault.Auth.JWTFile; got != "/var/run/secrets/vault/token" {
		t.Errorf("jwt_file %q, want the mounted /var/run/secrets/vault/token", got)
	}
}

// TestObjectsPointAtEachOther: what the normalisation against deploy/ sets aside (the release's
// instance label) must still wire the objects together: the Deployment's selector and the
// Service's select the pods; the ServiceMonitor selects the Service, in its namespace, on a port
// the Service has; the ClusterRoleBinding's subject is the pods' service account.
func TestObjectsPointAtEachOther(t *testing.T) {
	objs := renderAs(t, "tr", map[string]any{
		"mode": "daemon", "authDelegator": true,
		"metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true, "namespace": "monitoring"}},
	})
	var (
		dep *appsv1.Deployment
		svc *corev1.Service
		sm  *monitoringv1.ServiceMonitor
		crb *rbacv1.ClusterRoleBinding
	)
	for _, obj := range objs {
		switch o := obj.(type) {
		case *appsv1.Deployment:
			dep = o
		case *corev1.Service:
			svc = o
		case *monitoringv1.ServiceMonitor:
			sm = o
		case *rbacv1.ClusterRoleBinding:
			crb = o
		}
	}
	if dep == nil || svc == nil || sm == nil || crb == nil {
		t.Fatalf("want a Deployment, Service, ServiceMonitor and ClusterRoleBinding, got %v", objs)
	}
	pod := dep.Spec.Template.Labels
	within := func(sel, labels map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	if !within(dep.Spec.Selector.MatchLabels, pod) {
		t.Errorf("the Deployment's selector %v does not select its pods %v", dep.Spec.Selector.MatchLabels, pod)
	}
	if !within(svc.Spec.Selector, pod) {
		t.Errorf("the Service's selector %v does not select the pods %v", svc.Spec.Selector, pod)
	}
	if !within(sm.Spec.Selector.MatchLabels, svc.Labels) {
		t.Errorf("the ServiceMonitor's selector %v does not select the Service %v", sm.Spec.Selector.MatchLabels, svc.Labels)
	}
	if sm.Namespace != "monitoring" || !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) {
		t.Errorf("the ServiceMonitor in %s looks in %v, not the Service's namespace %s", sm.Namespace, sm.Spec.NamespaceSelector.MatchNames, svc.Namespace)
	}
	ports := map[string]bool{}
	for _, p := range svc.Spec.Ports {
		ports[p.Name] = true
	}
	for _, e := range sm.Spec.Endpoints {
		if !ports[e.Port] {
			t.Errorf("the ServiceMonitor scrapes port %q, which the Service does not have (%v)", e.Port, svc.Spec.Ports)
		}
	}
	sa := dep.Spec.Template.Spec.ServiceAccountName
	if len(crb.Subjects) != 1 || crb.Subjects[0].Name != sa || crb.Subjects[0].Namespace != dep.Namespace {
		t.Errorf("the ClusterRoleBinding binds %+v, not the pods' service account %s/%s", crb.Subjects, dep.Namespace, sa)
	}
}
