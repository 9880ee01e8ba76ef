//go:build unix

package testenv

import (
	"bufio"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
)

// TokenReviewPath is where the Kubernetes API serves TokenReview, the endpoint Vault's kubernetes
// auth method asks whether a service account JWT is valid.
const TokenReviewPath = "/apis/authentication.k8s.io/v1/tokenreviews"

// DefaultAudience is the API server's service account issuer, and so the audience it puts in a
// service account token when none is asked for.
const DefaultAudience = "https://kubernetes.default.svc.cluster.local"

// kubeAuditPolicy has the API server log every TokenReview request with its response (who asked,
// and whom the reviewed token authenticated), and nothing else.
const kubeAuditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: RequestResponse
  resources:
  - group: authentication.k8s.io
    resources: ["tokenreviews"]
- level: None
`

// ServiceAccount makes namespace (when it does not exist) and the service account name in it, and
// returns the service account's UID.
func (k *Kube) ServiceAccount(tb testing.TB, namespace, name string) string {
	tb.Helper()
	k.Apply(tb, []byte(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", namespace)), "")
	k.Apply(tb, []byte(fmt.Sprintf("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: %s\n", name)), namespace)
	var sa corev1.ServiceAccount
	if status := k.Do(tb, http.MethodGet, saPath(namespace, name), nil, &sa); status != http.StatusOK {
		tb.Fatalf("get service account %s/%s: status %d", namespace, name, status)
	}
	return string(sa.UID)
}

// DeleteServiceAccount deletes the service account: every token bound to it (its UID) is invalid
// from then on, even once a service account of the same name is made again.
func (k *Kube) DeleteServiceAccount(tb testing.TB, namespace, name string) {
	tb.Helper()
	// The API server checks a bound token's service account in an informer's cache, which learns
	// of the deletion a moment later: wait until a token of it no longer authenticates, so that
	// the caller sees what a cluster shows once the deletion has taken.
	probe := k.TokenRequest(tb, namespace, name, "", 0)
	if status := k.Do(tb, http.MethodDelete, saPath(namespace, name), nil, nil); status != http.StatusOK {
		tb.Fatalf("delete service account %s/%s: status %d", namespace, name, status)
	}
	k.WaitFor(tb, 15*time.Second, func() bool { return !k.TokenReview(tb, probe).Authenticated })
}

func saPath(namespace, name string) string {
	return "/api/v1/namespaces/" + url.PathEscape(namespace) + "/serviceaccounts/" + url.PathEscape(name)
}

// LegacyToken makes a Secret of type kubernetes.io/service-account-token for the service account,
// as clusters before 1.24 made one per service account, waits until the controller manager's
// token controller has put the token in it, and returns that token: iss kubernetes/serviceaccount,
// no audience, no expiry.
func (k *Kube) LegacyToken(tb testing.TB, namespace, serviceAccount string) string {
	tb.Helper()
	name := serviceAccount + "-legacy-token"
	k.Apply(tb, []byte(fmt.Sprintf(`apiVersion: v1
kind: Secret
type: kubernetes.io/service-account-token
metadata:
  name: %s
  annotations:
    kubernetes.io/service-account.name: %s
`, name, serviceAccount)), namespace)
	var token string
	k.WaitFor(tb, 30*time.Second, func() bool {
		var s corev1.Secret
		path := "/api/v1/namespaces/" + url.PathEscape(namespace) + "/secrets/" + url.PathEscape(name)
		if k.Do(tb, http.MethodGet, path, nil, &s) == http.StatusOK {
			token = string(s.Data["token"])
		}
		return token != ""
	})
	return token
}

// ServiceAccountClaims returns the claims the API server puts in a bound token of the service
// account (which must exist: its UID is read) for audience, expiring at exp.
func (k *Kube) ServiceAccountClaims(tb testing.TB, namespace, serviceAccount, audience string, exp time.Time) map[string]any {
	tb.Helper()
	var sa corev1.ServiceAccount
	if status := k.Do(tb, http.MethodGet, saPath(namespace, serviceAccount), nil, &sa); status != http.StatusOK {
		tb.Fatalf("get service account %s/%s: status %d", namespace, serviceAccount, status)
	}
	iat := exp.Add(-time.Hour)
	return map[string]any{
		"iss": k.Issuer,
		"sub": "system:serviceaccount:" + namespace + ":" + serviceAccount,
		"aud": []string{audience},
		"iat": iat.Unix(),
		"nbf": iat.Unix(),
		"exp": exp.Unix(),
		"jti": randomHex(tb, 16),
		"kubernetes.io": map[string]any{
			"namespace":      namespace,
			"serviceaccount": map[string]any{"name": serviceAccount, "uid": string(sa.UID)},
		},
	}
}

// SignToken signs claims with the API server's service account signing key, as it signs the
// tokens TokenRequest returns (RS256, its key ID): a token with claims TokenRequest would refuse
// to make, as one that has expired already.
func (k *Kube) SignToken(tb testing.TB, claims map[string]any) string {
	tb.Helper()
	return signRS256(tb, k.saKey, claims)
}

// ForgeToken signs claims as SignToken does but with a key of its own, one the API server does
// not trust: a token from another issuer.
func (k *Kube) ForgeToken(tb testing.TB, claims map[string]any) string {
	tb.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	return signRS256(tb, key, claims)
}

// signRS256 makes a compact JWS of claims signed with key (RFC 7515, RFC 7518 §3.3), its kid the
// API server's: base64url of the SHA-256 of the public key's PKIX DER.
func signRS256(tb testing.TB, key *rsa.PrivateKey, claims map[string]any) string {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	kid := sha256.Sum256(der)
	header, err := json.Marshal(map[string]string{"alg": "RS256", "kid": base64.RawURLEncoding.EncodeToString(kid[:])})
	if err != nil {
		tb.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	input := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		tb.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// Review is one TokenReview request the API server answered, from its audit log.
type Review struct {
	// Bearer is the user the request was made as ("" when the API server refused the caller, 401).
	Bearer string
	// Code is the HTTP status of the response.
	Code int
	// User is the user the reviewed token authenticated as; "" when it did not.
	User string
	// Audiences are the audiences asked for.
	Audiences     []string
	Authenticated bool
}

// Reviews returns every TokenReview request the API server answered so far, in order, but the
// admin's (Kube.TokenReview).
func (k *Kube) Reviews(tb testing.TB) []Review {
	tb.Helper()
	f, err := os.Open(k.auditLog)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []Review
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev struct {
			Stage string `json:"stage"`
			User  struct {
				Username string `json:"username"`
			} `json:"user"`
			ResponseStatus struct {
				Code int `json:"code"`
			} `json:"responseStatus"`
			RequestObject  *authv1.TokenReview `json:"requestObject"`
			ResponseObject json.RawMessage     `json:"responseObject"` // a TokenReview, or a Status
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			tb.Fatalf("audit log: %v", err)
		}
		if ev.User.Username == k.AdminUser {
			continue
		}
		r := Review{Bearer: ev.User.Username, Code: ev.ResponseStatus.Code}
		if ev.RequestObject != nil {
			r.Audiences = ev.RequestObject.Spec.Audiences
		}
		var resp authv1.TokenReview
		if json.Unmarshal(ev.ResponseObject, &resp) == nil && resp.Kind == "TokenReview" {
			r.Authenticated = resp.Status.Authenticated
			if r.Authenticated {
				r.User = resp.Status.User.Username
			}
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// ReviewerToken makes the service account vault/vault-auth, binds it to system:auth-delegator (as
// a cluster admin does for Vault's token_reviewer_jwt), and returns a token of it for the API
// server's own audience, valid for a day.
func (k *Kube) ReviewerToken(tb testing.TB) string {
	tb.Helper()
	k.ServiceAccount(tb, "vault", "vault-auth")
	k.Apply(tb, []byte(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: vault-auth-tokenreview
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:auth-delegator
subjects:
  - kind: ServiceAccount
    name: vault-auth
    namespace: vault
`), "")
	return k.TokenRequest(tb, "vault", "vault-auth", "", 24*time.Hour)
}
