//go:build unix

package testenv

import (
	"net/http"
	"slices"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const kubeTestObjects = `
apiVersion: v1
kind: Namespace
metadata:
  name: rotator
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: token-rotator
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: token-rotator
spec:
  schedule: "0 0 1 1 *"
  jobTemplate:
    metadata:
      labels:
        app.kubernetes.io/name: token-rotator
    spec:
      backoffLimit: 0
      template:
        spec:
          serviceAccountName: token-rotator
          restartPolicy: Never
          securityContext:
            runAsNonRoot: true
            seccompProfile:
              type: RuntimeDefault
          containers:
          - name: token-rotator
            image: token-rotator:test
            args: ["--once"]
            securityContext:
              allowPrivilegeEscalation: false
              capabilities:
                drop: ["ALL"]
`

// TestKubeControlPlane starts the real control plane and checks what the Kubernetes tests lean on:
// server-side apply, TokenRequest and TokenReview with audiences, the restricted Pod Security
// profile enforced, and the controller manager turning a Job made from a CronJob (as `kubectl
// create job --from=cronjob` makes it) into a Pod.
func TestKubeControlPlane(t *testing.T) {
	yes := true
	k := StartKube(t, KubeOptions{})
	k.Apply(t, []byte(kubeTestObjects), "rotator")
	const ns, sa = "rotator", "token-rotator"
	user := "system:serviceaccount:" + ns + ":" + sa

	t.Run("TokenReviewAudience", func(t *testing.T) {
		token := k.TokenRequest(t, ns, sa, "vault", 10*time.Minute)
		got := k.TokenReview(t, token, "vault")
		if !got.Authenticated || got.User.Username != user || !slices.Equal(got.Audiences, []string{"vault"}) {
			t.Fatalf("review of a vault-audience token for audience vault: authenticated %v as %q for %v (error %q); want %q for [vault]",
				got.Authenticated, got.User.Username, got.Audiences, got.Error, user)
		}
		if got := k.TokenReview(t, token, "not-vault"); got.Authenticated {
			t.Fatalf("review of a vault-audience token for audience not-vault: authenticated as %q", got.User.Username)
		}
		// Without audiences the review is for the API server's own, which the token lacks.
		if got := k.TokenReview(t, token); got.Authenticated {
			t.Fatalf("review of a vault-audience token for the API server's audience: authenticated as %q", got.User.Username)
		}
	})

	t.Run("RestrictedPodSecurityEnforced", func(t *testing.T) {
		pod := corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: "privileged"},
			Spec: corev1.PodSpec{
				ServiceAccountName: sa,
				Containers: []corev1.Container{{Name: "c", Image: "busybox",
					SecurityContext: &corev1.SecurityContext{Privileged: &yes}}},
			},
		}
		if status := k.Do(t, http.MethodPost, "/api/v1/namespaces/"+ns+"/pods", pod, nil); status != http.StatusForbidden {
			t.Fatalf("create a privileged pod in a namespace enforcing restricted: status %d, want 403", status)
		}
	})

	t.Run("JobFromCronJobMakesPod", func(t *testing.T) {
		var cj batchv1.CronJob
		if status := k.Do(t, http.MethodGet, "/apis/batch/v1/namespaces/"+ns+"/cronjobs/"+sa, nil, &cj); status != http.StatusOK {
			t.Fatalf("get cronjob: status %d", status)
		}
		// What `kubectl create job manual --from=cronjob/token-rotator` sends.
		job := batchv1.Job{
			TypeMeta: metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
			ObjectMeta: metav1.ObjectMeta{
				Name:        "manual",
				Labels:      cj.Spec.JobTemplate.Labels,
				Annotations: map[string]string{"cronjob.kubernetes.io/instantiate": "manual"},
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "batch/v1", Kind: "CronJob", Name: cj.Name, UID: cj.UID, Controller: &yes,
				}},
			},
			Spec: cj.Spec.JobTemplate.Spec,
		}
		var created batchv1.Job
		if status := k.Do(t, http.MethodPost, "/apis/batch/v1/namespaces/"+ns+"/jobs", job, &created); status != http.StatusCreated {
			t.Fatalf("create job: status %d", status)
		}
		var pods []corev1.Pod
		k.WaitFor(t, 60*time.Second, func() bool {
			pods = k.Pods(t, ns, "batch.kubernetes.io/job-name=manual")
			return len(pods) > 0
		})
		p := pods[0]
		owner := metav1.GetControllerOf(&p)
		if owner == nil || owner.Kind != "Job" || owner.UID != created.UID {
			t.Errorf("pod %s controller = %+v, want the job %s", p.Name, owner, created.UID)
		}
		if p.Status.Phase != corev1.PodPending || p.Spec.NodeName != "" {
			t.Errorf("pod %s: phase %q on node %q, want Pending on none (no scheduler, no kubelet)", p.Name, p.Status.Phase, p.Spec.NodeName)
		}
		if p.Spec.ServiceAccountName != sa || !slices.Equal(p.Spec.Containers[0].Args, []string{"--once"}) {
			t.Errorf("pod %s: service account %q, args %q; want %q, [--once]", p.Name, p.Spec.ServiceAccountName, p.Spec.Containers[0].Args, sa)
		}
		// The ServiceAccount admission plugin gave it the projected token volume a kubelet fills.
		projected := false
		for _, v := range p.Spec.Volumes {
			if v.Projected != nil {
				for _, s := range v.Projected.Sources {
					projected = projected || s.ServiceAccountToken != nil
				}
			}
		}
		if !projected {
			t.Errorf("pod %s has no projected service account token volume: %+v", p.Name, p.Spec.Volumes)
		}
	})
}
