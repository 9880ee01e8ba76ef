package deploy

import (
	"testing"
	"time"

	"token-rotator/rotate"
)

// TestGracePeriodCoversTheShutdown ties the manifests to the rotation's time budget (rotate's
// budget.go): after SIGTERM a rotation whose request is in flight runs to the end of its
// write-back, for at most rotate.ShutdownWait; a grace period shorter than that lets the kubelet
// kill the job while the only copy of a new refresh token is in its memory. And a Job's
// activeDeadlineSeconds must let a rotation started just before pass_deadline finish.
func TestGracePeriodCoversTheShutdown(t *testing.T) {
	m := loadManifests(t)
	cfg := shippedConfig(t, m)
	for f, p := range podSpecs(m) {
		if p.TerminationGracePeriodSeconds == nil {
			t.Errorf("%s: no terminationGracePeriodSeconds", f)
			continue
		}
		if grace := time.Duration(*p.TerminationGracePeriodSeconds) * time.Second; grace < rotate.ShutdownWait+10*time.Second {
			t.Errorf("%s: terminationGracePeriodSeconds %v, but a rotation may run %v after SIGTERM (rotate.ShutdownWait), plus 10s to exit", f, grace, rotate.ShutdownWait)
		}
	}
	for f, cj := range m.cronJobs {
		ads := cj.Spec.JobTemplate.Spec.ActiveDeadlineSeconds
		if ads == nil {
			t.Errorf("%s: no activeDeadlineSeconds", f)
			continue
		}
		if d := time.Duration(*ads) * time.Second; d < cfg.PassDeadline+rotate.ClaimedFor {
			t.Errorf("%s: activeDeadlineSeconds %v, but a rotation started at pass_deadline (%v) may run %v more (rotate.ClaimedFor)", f, d, cfg.PassDeadline, rotate.ClaimedFor)
		}
	}
}
