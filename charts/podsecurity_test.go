package charts

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// restricted evaluates a pod template with the Pod Security admission library's own checks, at
// the restricted level of the newest policy version, as the admission controller does in a
// namespace labelled pod-security.kubernetes.io/enforce=restricted. It returns why the pod would
// be forbidden, or "".
func restricted(t *testing.T, obj runtime.Object) (name, forbidden string) {
	t.Helper()
	tmpl, name := podSpecOf(obj)
	if tmpl == nil {
		return "", ""
	}
	ev, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	res := policy.AggregateCheckResults(ev.EvaluatePod(psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}, &tmpl.ObjectMeta, &tmpl.Spec))
	if res.Allowed {
		return name, ""
	}
	return name, res.ForbiddenReason() + ": " + res.ForbiddenDetail()
}

// TestRestrictedPodSecurity: every pod the chart (each mode, with its options) and deploy/ (each
// variant) would create is admitted under the restricted Pod Security profile.
func TestRestrictedPodSecurity(t *testing.T) {
	sources := map[string][]object{
		"chart cronjob":            mustRender(t, map[string]any{"vault": map[string]any{"caCert": map[string]any{"secretName": "vault-ca"}}}).objects,
		"chart sharded":            mustRender(t, map[string]any{"mode": "sharded"}).objects,
		"chart daemon":             mustRender(t, map[string]any{"mode": "daemon"}).objects,
		"deploy/ cronjob.yaml":     kustomizeBuild(t),
		"deploy/ indexed-job.yaml": kustomizeBuild(t, "serviceaccount.yaml", "configmap.yaml", "indexed-job.yaml"),
		"deploy/ deployment.yaml":  kustomizeBuild(t, "serviceaccount.yaml", "configmap.yaml", "deployment.yaml"),
	}
	for source, objs := range sources {
		pods := 0
		for _, obj := range decodeAll(t, objs) {
			name, forbidden := restricted(t, obj)
			if name == "" {
				continue
			}
			pods++
			if forbidden != "" {
				t.Errorf("%s: %s is forbidden by the restricted profile: %s", source, name, forbidden)
			}
		}
		if pods != 1 {
			t.Errorf("%s: %d pod templates checked, want 1", source, pods)
		}
	}
}

// TestRestrictedPodSecurityRefuses shows the check above can fail: values that loosen the
// security context are refused by the same evaluator, naming what is wrong.
func TestRestrictedPodSecurityRefuses(t *testing.T) {
	for name, values := range map[string]map[string]any{
		"privilege escalation": {"securityContext": map[string]any{"allowPrivilegeEscalation": true}},
		"capabilities kept":    {"securityContext": map[string]any{"capabilities": map[string]any{"drop": []any{}}}},
		"root allowed":         {"podSecurityContext": map[string]any{"runAsNonRoot": false, "runAsUser": 0}, "securityContext": map[string]any{"runAsNonRoot": false}},
		"no seccomp profile":   {"podSecurityContext": map[string]any{"seccompProfile": nil}},
		"a hostPath volume":    {"extraVolumes": []any{map[string]any{"name": "host", "hostPath": map[string]any{"path": "/etc"}}}},
	} {
		forbidden := ""
		for _, obj := range decodeAll(t, mustRender(t, values).objects) {
			if _, f := restricted(t, obj); f != "" {
				forbidden = f
			}
		}
		if forbidden == "" {
			t.Errorf("%s: admitted under the restricted profile", name)
		} else {
			t.Logf("%s: %s", name, forbidden)
		}
	}
}
