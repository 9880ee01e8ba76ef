package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"token-rotator/rotate"
)

var (
	// quotedSeconds is a comment quoting a manifest's setting: "terminationGracePeriodSeconds 660",
	// "activeDeadlineSeconds (1800)".
	quotedSeconds = regexp.MustCompile(`\b(\w+Seconds)\W{1,2}(\d+)\b`)
	// setSeconds is the setting itself, in a line's YAML: "terminationGracePeriodSeconds: 660",
	// also inside a flow mapping.
	setSeconds = regexp.MustCompile(`\b(\w+Seconds):\s*(\d+)\b`)
	// quotedBudget is a comment quoting a bound of rotate's budget: "rotate.ShutdownWait (10.5
	// minutes)", "rotate.ClaimedFor, 11.5 minutes".
	quotedBudget = regexp.MustCompile(`\brotate\.(\w+)\W{1,2}(\d+(?:\.\d+)?) minutes\b`)
	// quotedConfig is a comment quoting the shipped config: "pass_deadline (10m)", "renew_before 30m".
	quotedConfig = regexp.MustCompile(`\b(pass_deadline|renew_before)\W{1,2}(\d+[smh])\b`)
)

// TestCommentsQuoteTheSpec: a figure a manifest's comment quotes (a grace period, a deadline, a
// bound of rotate's budget, a config value) is the one the manifests and the code hold. A comment
// explains the setting beside it; one that says 120 beside a 660 misleads whoever changes it next.
func TestCommentsQuoteTheSpec(t *testing.T) {
	files, _ := filepath.Glob("*.yaml")
	more, _ := filepath.Glob("*/*.yaml")
	files = append(files, more...)
	comments, settings := map[string]string{}, map[string]map[string][]string{} // by file; setting: values
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var text []string
		settings[f] = map[string][]string{}
		for _, line := range strings.Split(string(data), "\n") {
			code := line
			if i := strings.Index(line, "#"); i == 0 || i > 0 && line[i-1] == ' ' {
				code, text = line[:i], append(text, strings.TrimSpace(line[i+1:]))
			}
			for _, m := range setSeconds.FindAllStringSubmatch(code, -1) {
				settings[f][m[1]] = append(settings[f][m[1]], m[2])
			}
		}
		comments[f] = strings.Join(text, " ") // a figure may wrap onto the next comment line
	}
	budget := map[string]time.Duration{
		"ShutdownWait": rotate.ShutdownWait, "ClaimedFor": rotate.ClaimedFor, "AfterSpend": rotate.AfterSpend,
		"DefaultGrantRetry": rotate.DefaultGrantRetry, "DefaultWriteDeadline": rotate.DefaultWriteDeadline,
		"DefaultClaimTTL": rotate.DefaultClaimTTL,
	}
	cfg := shippedConfig(t, loadManifests(t))
	shipped := map[string]time.Duration{"pass_deadline": cfg.PassDeadline, "renew_before": cfg.RenewBefore}
	quotes := 0
	for _, f := range files {
		for _, m := range quotedSeconds.FindAllStringSubmatch(comments[f], -1) {
			quotes++
			// The setting in the same file; one the file does not set, wherever the manifests set it.
			where := map[string][]string{f: settings[f][m[1]]}
			if len(where[f]) == 0 {
				where = map[string][]string{}
				for g := range settings {
					if v := settings[g][m[1]]; len(v) > 0 {
						where[g] = v
					}
				}
			}
			if len(where) == 0 {
				t.Errorf("%s: a comment quotes %s %s, which no manifest sets", f, m[1], m[2])
			}
			for g, vs := range where {
				for _, v := range vs {
					if v != m[2] {
						t.Errorf("%s: a comment says %s %s, but %s sets %s", f, m[1], m[2], g, v)
					}
				}
			}
		}
		for _, m := range quotedBudget.FindAllStringSubmatch(comments[f], -1) {
			quotes++
			d, ok := budget[m[1]]
			minutes, _ := strconv.ParseFloat(m[2], 64)
			switch {
			case !ok:
				t.Errorf("%s: a comment quotes rotate.%s, which this test does not know: add it to budget", f, m[1])
			case minutes != d.Minutes():
				t.Errorf("%s: a comment says rotate.%s is %s minutes; it is %v", f, m[1], m[2], d)
			}
		}
		for _, m := range quotedConfig.FindAllStringSubmatch(comments[f], -1) {
			quotes++
			if d, err := time.ParseDuration(m[2]); err != nil || d != shipped[m[1]] {
				t.Errorf("%s: a comment says %s %s; the shipped config.yaml has %v", f, m[1], m[2], shipped[m[1]])
			}
		}
	}
	if quotes < 8 { // cronjob.yaml, deployment.yaml and configmap.yaml quote at least these
		t.Errorf("found %d quoted figures in the comments; the patterns no longer match them", quotes)
	}
}
