package charts

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// helmDocs runs helm-docs (the Go tool this module pins, as `make chart-docs` does) over the chart,
// printing the README it would write instead of writing it.
func helmDocs(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "tool", "helm-docs", "--dry-run", "--skip-version-footer", "--sort-values-order", "file", "--chart-search-root", ".", "--log-level", "warning")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm-docs: %v\n%s", err, stderr.String())
	}
	// The go command's own lines ("go: downloading ...", on a machine that has not built the tool
	// yet) are not helm-docs warnings.
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if line != "" && !strings.HasPrefix(line, "go: ") {
			t.Fatalf("helm-docs warned: %s", stderr.String())
		}
	}
	return stdout.String()
}

// TestChartREADMEIsGenerated: the chart's README, with its values table, is what helm-docs makes
// of values.yaml now, and every value in the table has a description (a `# --` comment).
func TestChartREADMEIsGenerated(t *testing.T) {
	want := helmDocs(t)
	got, err := os.ReadFile(chartDir + "/README.md")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(got)) != strings.TrimSpace(want) {
		t.Errorf("charts/token-rotator/README.md is not what helm-docs makes of values.yaml: run `make chart-docs`")
	}
	row := regexp.MustCompile(`(?m)^\| ([A-Za-z0-9_.\[\]]+) \| (\w+) \| (.*) \| (.*) \|$`)
	rows := row.FindAllStringSubmatch(want, -1)
	documented := map[string]bool{}
	for _, r := range rows {
		if strings.TrimSpace(r[4]) == "" {
			t.Errorf("value %s has no description: give it a `# --` comment in values.yaml", r[1])
		}
		documented[strings.SplitN(r[1], ".", 2)[0]] = true
	}
	var values map[string]any
	b, err := os.ReadFile(chartDir + "/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	for k := range values {
		if !documented[k] {
			t.Errorf("value %s is not in the generated table", k)
		}
	}
	if len(rows) < len(values) {
		t.Errorf("%d rows for %d top-level values", len(rows), len(values))
	}
}

// TestChartREADMEValuesFileInstalls renders the chart with the values file the chart's README
// shows: the image is the one named, the config has only the README's client (a list replaces the
// defaults' whole) and keeps the defaults' other keys.
func TestChartREADMEValuesFileInstalls(t *testing.T) {
	readme, err := os.ReadFile(chartDir + "/README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)`my-values.yaml`.*?```yaml\n(.*?)```").FindSubmatch(readme)
	if block == nil {
		t.Fatal("the chart's README shows no my-values.yaml")
	}
	var values map[string]any
	if err := yaml.Unmarshal(block[1], &values); err != nil {
		t.Fatalf("the README's my-values.yaml does not parse: %v", err)
	}
	objs := decodeAll(t, mustRender(t, values).objects)
	cfg := configOf(t, objs)
	if len(cfg.Clients) != 1 || cfg.Clients[0].Name != "acme" {
		t.Errorf("clients %+v, want only the README's acme", cfg.Clients)
	}
	var kept map[string]any
	for _, obj := range objs {
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &kept); err != nil {
				t.Fatal(err)
			}
		}
	}
	if kept["pass_deadline"] != "10m" || kept["concurrency"] != float64(4) {
		t.Errorf("config.yaml %v: the defaults' other keys (pass_deadline, concurrency) were not kept", kept)
	}
	if _, c := container(t, objs); c.Image != "registry.example.com/token-rotator:v1.0.0" {
		t.Errorf("image %q", c.Image)
	}
}
