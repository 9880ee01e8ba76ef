package deploy

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"token-rotator/internal/testenv"
	"token-rotator/metrics"
	"token-rotator/rotate"
)

// The alert rules (alerts/) and their promtool unit tests.
const (
	alertRules     = "alerts/token-rotator.rules.yaml"
	alertRuleTests = "alerts/token-rotator.rules.test.yaml"
)

// ruleFile is a Prometheus rules file: groups of rules. Strict decoding rejects anything else at
// the top level, so the file stays one the Helm chart can embed as a PrometheusRule's spec.
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for,omitempty"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// ruleTests is the part of a `promtool test rules` file this test reads: which alerts each test
// expects at each time.
type ruleTests struct {
	Tests []struct {
		Name          string `json:"name"`
		AlertRuleTest []struct {
			EvalTime  string           `json:"eval_time"`
			Alertname string           `json:"alertname"`
			ExpAlerts []map[string]any `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// promtoolBinary finds promtool: $PROMTOOL_BIN, `promtool` on PATH, or the copy scripts/promtool-bin
// caches. It returns "" when there is none.
func promtoolBinary() string {
	return testenv.Binary("PROMTOOL_BIN", "promtool", filepath.Join("prometheus-*", "usr", "bin", "promtool"))
}

// TestAlertRulesPromtool runs promtool over the rules: `check rules` (syntax, templates, lint) and
// `test rules`, whose tests pin the minute each alert starts firing, the minute before, and that
// healthy series fire nothing.
func TestAlertRulesPromtool(t *testing.T) {
	bin := promtoolBinary()
	if bin == "" {
		msg := "no promtool: run `make test`, which fetches Debian's (scripts/promtool-bin), or set PROMTOOL_BIN"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	for _, args := range [][]string{{"check", "rules", alertRules}, {"test", "rules", alertRuleTests}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// readRules decodes the rules file strictly.
func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", alertRules, err)
	}
	if len(f.Groups) != 1 || len(f.Groups[0].Rules) == 0 {
		t.Fatalf("%s: want one group with rules, got %d groups", alertRules, len(f.Groups))
	}
	return f
}

// TestAlertRulesShape: every rule is an alert with a severity and the three annotations, and
// every alert has a promtool test that sees it fire and one that sees it not fire.
func TestAlertRulesShape(t *testing.T) {
	f := readRules(t)
	b, err := os.ReadFile(alertRuleTests)
	if err != nil {
		t.Fatal(err)
	}
	var tests ruleTests
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatalf("%s: %v", alertRuleTests, err)
	}
	fires, quiet := map[string]int{}, map[string]int{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname]++
			} else {
				quiet[a.Alertname]++
			}
		}
	}
	for _, r := range f.Groups[0].Rules {
		if r.Alert == "" {
			t.Errorf("rule %q is not an alert", r.Expr)
			continue
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
		}
		for _, k := range []string{"summary", "description", "runbook"} {
			if strings.TrimSpace(r.Annotations[k]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, k)
			}
		}
		if fires[r.Alert] == 0 || quiet[r.Alert] == 0 {
			t.Errorf("%s: %s expects it to fire %d time(s) and not to fire %d time(s); want both", r.Alert, alertRuleTests, fires[r.Alert], quiet[r.Alert])
		}
	}
}

// gatheredNames is every metric name the job's registry exposes once a pass has recorded a rotation,
// a failure waiting for re-authorization, a token endpoint answer and its end: the names Prometheus sees (a histogram's with
// their _bucket, _sum and _count).
func gatheredNames(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New()
	expires := time.Now().Add(2 * time.Hour)
	m.Rotation(rotate.Result{Client: "acme", Grant: "client_credentials", Outcome: rotate.Rotated, ExpiresAt: expires}, time.Second)
	m.Rotation(rotate.Result{Client: "partner", Grant: "refresh_token", Outcome: rotate.Failed, Status: rotate.StatusReauthorizationRequired, ExpiresAt: expires}, time.Second)
	m.TokenResponse(http.StatusOK)
	m.PassDone()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+s] = true
			}
		}
	}
	return names
}

var (
	promqlStrings  = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promqlLabels   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlWords    = regexp.MustCompile(`[A-Za-z0-9_:.]+\s*\(?`)
	promqlIdent    = regexp.MustCompile(`^[A-Za-z_:][A-Za-z0-9_:]*$`)
	promqlKeywords = []string{"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring", "group_left", "group_right"}
)

// metricNames are the metric names a PromQL expression selects: its identifiers, once strings,
// label matchers, ranges and by/without/on clauses are taken out, that are neither a keyword nor
// called as a function or aggregation.
func metricNames(expr string) []string {
	s := promqlStrings.ReplaceAllString(expr, " ")
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlLabels.ReplaceAllString(s, " ")
	var names []string
	for _, w := range promqlWords.FindAllString(s, -1) {
		if strings.HasSuffix(w, "(") {
			continue // a function or aggregation
		}
		w = strings.TrimSpace(w)
		if promqlIdent.MatchString(w) && !slices.Contains(promqlKeywords, w) {
			names = append(names, w)
		}
	}
	return names
}

// TestAlertRulesUseTheJobsMetrics: every metric an alert reads is one the job registers, every
// result value it matches is an outcome that counts as a failure (and every failure outcome is
// matched), and the job label that tells the CronJob's pushes from the daemon's scrapes is the
// one the job pushes as. A renamed metric or outcome fails here.
func TestAlertRulesUseTheJobsMetrics(t *testing.T) {
	f := readRules(t)
	registered := gatheredNames(t)

	outcomes := []rotate.Outcome{rotate.Rotated, rotate.NotDue, rotate.DryRun, rotate.Reused,
		rotate.ClaimedElsewhere, rotate.RotatedElsewhere, rotate.Deleted, rotate.AccessTokenRefused,
		rotate.Skipped, rotate.Failed}
	var failures []string
	for _, o := range outcomes {
		if o.Failure() {
			failures = append(failures, string(o))
		}
	}
	resultRe := regexp.MustCompile(`\bresult\s*(=~|=|!=|!~)\s*"([^"]*)"`)
	jobRe := regexp.MustCompile(`\bjob\s*(?:=|!=)\s*"([^"]*)"`)

	used := map[string]bool{}
	var jobs []string
	for _, r := range f.Groups[0].Rules {
		names := metricNames(r.Expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric found in %q", r.Alert, r.Expr)
		}
		for _, n := range names {
			used[n] = true
			if !registered[n] {
				t.Errorf("%s reads %s, which the job does not register", r.Alert, n)
			}
		}
		for _, m := range resultRe.FindAllStringSubmatch(r.Expr, -1) {
			if m[1] != "=~" {
				t.Errorf("%s: result%s%q: want result=~ over the failure outcomes", r.Alert, m[1], m[2])
				continue
			}
			got := strings.Split(m[2], "|")
			slices.Sort(got)
			want := slices.Sorted(slices.Values(failures))
			if !slices.Equal(got, want) {
				t.Errorf("%s matches result=~%q; the outcomes that count as failures are %v", r.Alert, m[2], want)
			}
		}
		for _, m := range jobRe.FindAllStringSubmatch(r.Expr, -1) {
			jobs = append(jobs, m[1])
		}
	}
	for _, n := range []string{"token_rotator_access_token_expiry_timestamp_seconds", "token_rotator_rotations_total", "token_rotator_last_pass_timestamp_seconds"} {
		if !used[n] {
			t.Errorf("no alert reads %s (the extraction of metric names is broken, or an alert is gone)", n)
		}
	}

	// The job --pushgateway pushes as, and the shard label of a sharded run's group.
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
	}))
	defer srv.Close()
	m := metrics.New()
	m.PassDone()
	ctx := context.Background()
	if err := m.Push(ctx, srv.URL, rotate.Shard{}); err != nil {
		t.Fatal(err)
	}
	if err := m.Push(ctx, srv.URL, rotate.Shard{Index: 1, Count: 4}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"/metrics/job/token_rotator", "/metrics/job/token_rotator/shard/1_of_4"}; !slices.Equal(paths, want) {
		t.Fatalf("pushes went to %q, want %q: the rules and their tests name the job and shard labels", paths, want)
	}
	if len(jobs) == 0 {
		t.Error("no alert tells the CronJob's pushes (job=\"token_rotator\") from the daemon's scrapes")
	}
	for _, j := range jobs {
		if j != "token_rotator" {
			t.Errorf("an alert matches job %q; --pushgateway pushes as job token_rotator", j)
		}
	}
}

// TestMetricNamesFromPromQL: the extraction the test above relies on finds selected metrics and
// nothing else.
func TestMetricNamesFromPromQL(t *testing.T) {
	for expr, want := range map[string][]string{
		`count without (grant, result) (increase(a_total{job!="x", result=~"f|g"}[10m]) > 0 or (a_total unless a_total offset 10m))`: {"a_total", "a_total", "a_total"},
		`time() - (b > c or (c and b)) > 15 * 60`:                  {"b", "c", "c", "b"},
		`absent(d{le="0.5"})`:                                      {"d"},
		`sum by (client) (rate(e[5m])) / on (client) group_left f`: {"e", "f"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}

// TestAlertsInReadme: README's "### Alerts" table lists exactly the alerts the rules file has,
// each with its severity, and says where the rules are and how the chart ships them.
func TestAlertsInReadme(t *testing.T) {
	f := readRules(t)
	section := testenv.DocSection(t, "../README.md", "Alerts")
	listed := map[string]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Za-z]+)` \\(([a-z]+)\\) \\|").FindAllStringSubmatch(section, -1) {
		listed[m[1]] = m[2]
	}
	rules := map[string]string{}
	for _, r := range f.Groups[0].Rules {
		rules[r.Alert] = r.Labels["severity"]
	}
	if !maps.Equal(listed, rules) {
		t.Errorf("README's Alerts table lists (alert: severity) %v; %s has %v", listed, alertRules, rules)
	}
	for _, want := range []string{"deploy/" + alertRules, "prometheusRule.enabled=true"} {
		if !strings.Contains(section, want) {
			t.Errorf("README's Alerts section does not say %q", want)
		}
	}
}
