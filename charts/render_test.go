package charts

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// chartDir is the chart under test; deployDir the kustomize manifests it must agree with.
const (
	chartDir  = "token-rotator"
	deployDir = "../deploy"
	release   = "token-rotator"
	namespace = "token-rotator"
)

// rendered is one `helm install --dry-run` of the chart: its objects, in the order Helm sorts
// them for an install, and NOTES.txt.
type rendered struct {
	objects []object
	notes   string
}

// object is one rendered or built Kubernetes object, as generic YAML.
type object map[string]any

func (o object) kind() string { s, _ := o["kind"].(string); return s }
func (o object) name() string {
	m, _ := o["metadata"].(map[string]any)
	s, _ := m["name"].(string)
	return s
}
func (o object) key() string { return o.kind() + "/" + o.name() }

// yamlDoc is the object as YAML, for strict decoding into the API types.
func (o object) yamlDoc(t *testing.T) []byte {
	t.Helper()
	b, err := yaml.Marshal(map[string]any(o))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func loadChart(t *testing.T) *chartv2.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load the chart: %v", err)
	}
	return ch
}

// renderChart renders the chart as `helm install --dry-run=client` does, with the Helm SDK: the
// values are merged over values.yaml and checked against values.schema.json first.
func renderChart(t *testing.T, values map[string]any) (*rendered, error) {
	t.Helper()
	return renderChartIn(t, namespace, values)
}

// renderChartIn is renderChart into another namespace (`helm install -n ns`).
func renderChartIn(t *testing.T, ns string, values map[string]any) (*rendered, error) {
	t.Helper()
	return renderRelease(t, release, ns, values)
}

// renderRelease is renderChart with a release name and namespace of its own.
func renderRelease(t *testing.T, releaseName, ns string, values map[string]any) (*rendered, error) {
	t.Helper()
	install := action.NewInstall(action.NewConfiguration())
	install.DryRunStrategy = action.DryRunClient
	install.Replace = true
	install.ReleaseName = releaseName
	install.Namespace = ns
	install.APIVersions = []string{"monitoring.coreos.com/v1"}
	// The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion): backoffLimitPerIndex,
	// which the sharded mode needs, is GA from 1.33.
	kv, err := common.ParseKubeVersion("v1.33.0")
	if err != nil {
		t.Fatal(err)
	}
	install.KubeVersion = kv
	rel, err := install.Run(loadChart(t), values)
	if err != nil {
		return nil, err
	}
	r, ok := rel.(*releasev1.Release)
	if !ok {
		t.Fatalf("helm returned a %T, not a release", rel)
	}
	return &rendered{objects: splitObjects(t, r.Manifest), notes: r.Info.Notes}, nil
}

// mustRender is renderChart for values that must render.
func mustRender(t *testing.T, values map[string]any) *rendered {
	t.Helper()
	return mustRenderIn(t, namespace, values)
}

// mustRenderIn is renderChartIn for values that must render.
func mustRenderIn(t *testing.T, ns string, values map[string]any) *rendered {
	t.Helper()
	r, err := renderChartIn(t, ns, values)
	if err != nil {
		t.Fatalf("render with %v: %v", values, err)
	}
	return r
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitObjects parses a multi-document manifest, skipping documents with no object (comments).
func splitObjects(t *testing.T, manifest string) []object {
	t.Helper()
	var out []object
	for _, doc := range docSeparator.Split(manifest, -1) {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, doc)
		}
		if len(o) > 0 {
			out = append(out, o)
		}
	}
	return out
}

// kustomizeBuild runs `kustomize build` (the kustomize library, as `kubectl apply -k` does) over
// a copy of deploy/ whose kustomization lists resources instead of its own: how a kustomize user
// picks a variant.
func kustomizeBuild(t *testing.T, resources ...string) []object {
	t.Helper()
	fs := filesys.MakeFsInMemory()
	entries, err := os.ReadDir(deployDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(deployDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "kustomization.yaml" {
			b = replaceResources(t, b, resources)
		}
		if err := fs.WriteFile(filepath.Join("/deploy", e.Name()), b); err != nil {
			t.Fatal(err)
		}
	}
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, "/deploy")
	if err != nil {
		t.Fatalf("kustomize build deploy/ with %v: %v", resources, err)
	}
	out, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return splitObjects(t, string(out))
}

// replaceResources rewrites a kustomization's resources list, keeping the rest as it is.
func replaceResources(t *testing.T, kustomization []byte, resources []string) []byte {
	t.Helper()
	if resources == nil {
		return kustomization
	}
	var k map[string]any
	if err := yaml.Unmarshal(kustomization, &k); err != nil {
		t.Fatal(err)
	}
	k["resources"] = resources
	b, err := yaml.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// keys lists the objects' kind/name, sorted, for messages.
func keys(objs []object) string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.key())
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

// find returns the one object of that kind, failing the test when there is not exactly one.
func find(t *testing.T, objs []object, kind string) object {
	t.Helper()
	var found []object
	for _, o := range objs {
		if o.kind() == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s, got %d among %s", kind, len(found), keys(objs))
	}
	return found[0]
}

// has reports whether an object of that kind was rendered.
func has(objs []object, kind string) bool {
	for _, o := range objs {
		if o.kind() == kind {
			return true
		}
	}
	return false
}

// dump prints objects as YAML, for a failure's message.
func dump(objs ...object) string {
	var b bytes.Buffer
	for _, o := range objs {
		y, _ := yaml.Marshal(map[string]any(o))
		fmt.Fprintf(&b, "---\n%s", y)
	}
	return b.String()
}
