//go:build unix

package deploy

import (
	"fmt"
	"testing"
	"time"

	"token-rotator/internal/testenv"
)

// startKube starts a real Kubernetes control plane for Vault's kubernetes auth, with the reviewer
// setup.sh's TOKEN_REVIEWER_JWT_FILE names: service account vault/vault-auth, bound to
// system:auth-delegator, its token for the API server's own audience (the only one the API server
// accepts from a caller). It returns the control plane and setup.sh's KUBERNETES_* environment.
func startKube(t *testing.T) (*testenv.Kube, []string) {
	t.Helper()
	k := testenv.StartKube(t, testenv.KubeOptions{})
	return k, reviewerEnv(t, k)
}

// reviewerEnv makes startKube's reviewer in k and returns setup.sh's KUBERNETES_* environment.
func reviewerEnv(t *testing.T, k *testenv.Kube) []string {
	t.Helper()
	reviewer := k.ReviewerToken(t)
	return []string{
		"KUBERNETES_HOST=" + k.URL,
		"KUBERNETES_CA_CERT=" + writeFile(t, "ca.crt", k.CACertPEM),
		"TOKEN_REVIEWER_JWT_FILE=" + writeFile(t, "reviewer.jwt", reviewer),
	}
}

// saToken makes the service account namespace/name (when it does not exist) and returns a token
// of it from TokenRequest for audience ("": the API server's own), as the kubelet gets a
// projected token, valid for an hour.
func saToken(t *testing.T, k *testenv.Kube, namespace, name, audience string) string {
	t.Helper()
	k.ServiceAccount(t, namespace, name)
	return k.TokenRequest(t, namespace, name, audience, time.Hour)
}

func username(namespace, name string) string {
	return fmt.Sprintf("system:serviceaccount:%s:%s", namespace, name)
}
