package charts

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

// TestChartMatchesDeploy is the guard against drift between the two ways to install: for each
// mode, the chart with default values renders the same objects as `kustomize build` of deploy/
// with that variant's resources, once both are normalised. The normalisation removes only what
// differs by design:
//   - the labels Helm adds to identify a release (app.kubernetes.io/instance, version,
//     managed-by, helm.sh/chart), in metadata and in selectors;
//   - deploy/'s Namespace object (`helm install --create-namespace` makes it);
//   - the image tag (kustomize users set theirs with `images:`, the chart defaults to appVersion);
//   - the daemon's checksum/config pod annotation, with which `helm upgrade` restarts it on a new
//     config (kubectl apply -k users restart it themselves);
//   - config.yaml's formatting: both are parsed, so comments and key order do not count.
func TestChartMatchesDeploy(t *testing.T) {
	for _, c := range []struct {
		mode      string
		resources []string
	}{
		{"cronjob", nil}, // deploy/kustomization.yaml as shipped
		{"sharded", []string{"namespace.yaml", "serviceaccount.yaml", "configmap.yaml", "indexed-job.yaml"}},
		{"daemon", []string{"namespace.yaml", "serviceaccount.yaml", "configmap.yaml", "deployment.yaml", "service.yaml"}},
	} {
		t.Run(c.mode, func(t *testing.T) {
			values := map[string]any{}
			if c.mode != "cronjob" {
				values["mode"] = c.mode
			}
			chart := normalise(t, mustRender(t, values).objects)
			deploy := normalise(t, kustomizeBuild(t, c.resources...))
			if got, want := keys(chart), keys(deploy); got != want {
				t.Fatalf("the chart renders %s; deploy/ builds %s", got, want)
			}
			byKey := map[string]object{}
			for _, o := range deploy {
				byKey[o.key()] = o
			}
			for _, o := range chart {
				if diff := cmp.Diff(byKey[o.key()], o); diff != "" {
					t.Errorf("%s differs between deploy/ (-) and the chart (+):\n%s", o.key(), diff)
				}
			}
		})
	}
}

// TestNormalisationKeepsDifferences makes sure the comparison above can fail: a setting the
// normalisation must not hide (the schedule, the grace period, a security context field, a
// config value) makes the chart differ from deploy/.
func TestNormalisationKeepsDifferences(t *testing.T) {
	deploy := normalise(t, kustomizeBuild(t))
	for name, values := range map[string]map[string]any{
		"schedule":     {"schedule": "*/10 * * * *"},
		"grace period": {"terminationGracePeriodSeconds": 900},
		"read-only root filesystem": {"securityContext": map[string]any{
			"runAsNonRoot": true, "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": false,
			"privileged": false, "capabilities": map[string]any{"drop": []any{"ALL"}}}},
		"config": {"config": map[string]any{"renew_before": "20m"}},
		"image":  {"image": map[string]any{"repository": "registry.example.com/token-rotator"}},
	} {
		chart := normalise(t, mustRender(t, values).objects)
		if cmp.Equal(chart, deploy) {
			t.Errorf("%s: a chart rendered with %v still compares equal to deploy/", name, values)
		}
	}
}

// helmLabels are the labels Helm charts add to name the release; kustomize has no release.
var helmLabels = []string{"app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"}

// normalise applies TestChartMatchesDeploy's normalisation, in place, and drops Namespaces.
func normalise(t *testing.T, objs []object) []object {
	t.Helper()
	var out []object
	for _, o := range objs {
		if o.kind() == "Namespace" {
			continue
		}
		walk(o, func(path string, m map[string]any) {
			if strings.HasSuffix(path, "/labels") || strings.HasSuffix(path, "/matchLabels") || strings.HasSuffix(path, "/spec/selector") && o.kind() == "Service" {
				for _, l := range helmLabels {
					delete(m, l)
				}
			}
			if a, ok := m["annotations"].(map[string]any); ok && strings.HasSuffix(path, "/template/metadata") {
				delete(a, "checksum/config")
				if len(a) == 0 {
					delete(m, "annotations")
				}
			}
			if img, ok := m["image"].(string); ok && strings.HasSuffix(path, "/containers[]") {
				if i := strings.LastIndexAny(img, ":@"); i > 0 {
					m["image"] = img[:i]
				}
			}
		})
		if o.kind() == "ConfigMap" {
			data := o["data"].(map[string]any)
			var cfg map[string]any
			if err := yaml.Unmarshal([]byte(data["config.yaml"].(string)), &cfg); err != nil {
				t.Fatalf("%s: config.yaml does not parse: %v", o.key(), err)
			}
			data["config.yaml"] = cfg
		}
		out = append(out, o)
	}
	return out
}

// walk calls f for every map in v, with its path ("/spec/template/spec/containers[]").
func walk(v any, f func(path string, m map[string]any)) {
	var rec func(path string, v any)
	rec = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			f(path, x)
			for k, c := range x {
				rec(path+"/"+k, c)
			}
		case []any:
			for _, c := range x {
				rec(path+"[]", c)
			}
		}
	}
	switch x := v.(type) {
	case object:
		rec("", map[string]any(x))
	default:
		rec("", x)
	}
}
