package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TokenReviewPath is where the Kubernetes API serves TokenReview, the endpoint Vault's kubernetes
// auth method asks whether a service account JWT is valid.
const TokenReviewPath = "/apis/authentication.k8s.io/v1/tokenreviews"

// DefaultAudience is the audience the API server puts in a service account token when the pod
// asks for none: its own issuer URL.
const DefaultAudience = "https://kubernetes.default.svc.cluster.local"

// KubeAPI is a fake Kubernetes API server serving only TokenReview, over TLS on a loopback port,
// with its own service account token issuer. It answers a review the way the API server does: a
// token it issued, not revoked, not expired and valid for one of the requested audiences is
// authenticated as system:serviceaccount:NAMESPACE:NAME with the service account's UID; anything
// else is not. The review request itself must carry, as bearer, a token it issued (Vault sends
// token_reviewer_jwt, or the JWT being reviewed when none is configured); otherwise it is refused
// with 401, as the API server refuses an unauthenticated caller.
type KubeAPI struct {
	// URL is https://127.0.0.1:PORT: Vault's kubernetes_host.
	URL string
	// CACertPEM is the PEM of the certificate the server presents: Vault's kubernetes_ca_cert.
	CACertPEM string
	// Issuer is the iss claim of the tokens Issue mints (bound tokens; legacy tokens have
	// "kubernetes/serviceaccount").
	Issuer string

	key *ecdsa.PrivateKey

	mu      sync.Mutex
	issued  map[string]issuedToken // by JWT
	reviews []Review
}

// ServiceAccount names a Kubernetes service account.
type ServiceAccount struct {
	Namespace, Name string
	// UID is the service account's UID; Issue makes one up when empty.
	UID string
}

// Username is the service account's Kubernetes user name, as TokenReview reports it.
func (sa ServiceAccount) Username() string {
	return "system:serviceaccount:" + sa.Namespace + ":" + sa.Name
}

// TokenOptions shape a token Issue mints.
type TokenOptions struct {
	// Audiences of the token; default DefaultAudience (what a pod's projected token holds when no
	// audience is asked for).
	Audiences []string
	// TTL of the token; default one hour. A negative TTL mints a token that has already expired.
	TTL time.Duration
	// Legacy mints a pre-1.24 secret-based token: iss kubernetes/serviceaccount, flat
	// kubernetes.io/serviceaccount/... claims, no audience, no expiry.
	Legacy bool
}

// Review is one TokenReview request the server answered.
type Review struct {
	// Bearer is the user the request was made as ("" when refused with 401).
	Bearer string
	// User is the user the reviewed token authenticated as; "" when it did not.
	User string
	// Audiences are the audiences asked for.
	Audiences     []string
	Authenticated bool
}

type issuedToken struct {
	sa        ServiceAccount
	audiences []string // nil for a legacy token
	expires   time.Time
	revoked   bool
}

// StartKubeAPI serves a fake TokenReview API on a loopback TLS port until the test ends.
func StartKubeAPI(tb testing.TB) *KubeAPI {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	k := &KubeAPI{Issuer: DefaultAudience, key: key, issued: map[string]issuedToken{}}
	mux := http.NewServeMux()
	mux.HandleFunc(TokenReviewPath, k.serveTokenReview)
	srv := httptest.NewTLSServer(mux)
	tb.Cleanup(srv.Close)
	k.URL = srv.URL
	k.CACertPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	return k
}

// Issue mints a service account token for sa, signed ES256 by this server's key, as the API
// server's token issuer would, and remembers it as valid.
func (k *KubeAPI) Issue(tb testing.TB, sa ServiceAccount, opts TokenOptions) string {
	tb.Helper()
	if sa.UID == "" {
		sa.UID = uuid(tb)
	}
	now := time.Now()
	ttl := opts.TTL
	if ttl == 0 {
		ttl = time.Hour
	}
	var claims map[string]any
	var audiences []string
	expires := now.Add(ttl)
	if opts.Legacy {
		claims = map[string]any{
			"iss":                                    "kubernetes/serviceaccount",
			"sub":                                    sa.Username(),
			"kubernetes.io/serviceaccount/namespace": sa.Namespace,
			"kubernetes.io/serviceaccount/secret.name":          sa.Name + "-token-" + uuid(tb)[:5],
			"kubernetes.io/serviceaccount/service-account.name": sa.Name,
			"kubernetes.io/serviceaccount/service-account.uid":  sa.UID,
		}
		expires = now.AddDate(100, 0, 0)
	} else {
		audiences = opts.Audiences
		if len(audiences) == 0 {
			audiences = []string{DefaultAudience}
		}
		claims = map[string]any{
			"iss": k.Issuer,
			"sub": sa.Username(),
			"aud": audiences,
			"iat": now.Unix(),
			"nbf": now.Unix(),
			"exp": expires.Unix(),
			"jti": uuid(tb),
			"kubernetes.io": map[string]any{
				"namespace":      sa.Namespace,
				"pod":            map[string]any{"name": sa.Name + "-7d9f8-x2x4q", "uid": uuid(tb)},
				"serviceaccount": map[string]any{"name": sa.Name, "uid": sa.UID},
			},
		}
	}
	jwt := signES256(tb, k.key, claims)
	k.mu.Lock()
	k.issued[jwt] = issuedToken{sa: sa, audiences: audiences, expires: expires}
	k.mu.Unlock()
	return jwt
}

// Forge mints a token with the same claims Issue would put in it, signed by a key this server
// does not know and never issued: TokenReview does not authenticate it.
func (k *KubeAPI) Forge(tb testing.TB, sa ServiceAccount, opts TokenOptions) string {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	other := &KubeAPI{Issuer: k.Issuer, key: key, issued: map[string]issuedToken{}}
	return other.Issue(tb, sa, opts)
}

// Revoke makes a token this server issued invalid, as deleting its service account or pod does.
func (k *KubeAPI) Revoke(jwt string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if t, ok := k.issued[jwt]; ok {
		t.revoked = true
		k.issued[jwt] = t
	}
}

// Reviews returns every TokenReview request answered so far, in order.
func (k *KubeAPI) Reviews() []Review {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.reviews)
}

// PublicKeyPEM is the PEM of the key tokens are signed with: Vault's pem_keys, when it is to
// check signatures itself as well.
func (k *KubeAPI) PublicKeyPEM(tb testing.TB) string {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.key.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// authenticate returns the service account of a valid token and the audiences it holds that are
// among want (all of them when want is empty); ok is false when the token is not valid for any.
func (k *KubeAPI) authenticate(jwt string, want []string) (sa ServiceAccount, audiences []string, ok bool, why string) {
	k.mu.Lock()
	t, found := k.issued[jwt]
	k.mu.Unlock()
	switch {
	case !found:
		return sa, nil, false, "invalid bearer token"
	case t.revoked:
		return sa, nil, false, "invalid bearer token, service account token has been invalidated"
	case time.Now().After(t.expires):
		return sa, nil, false, "invalid bearer token, token has expired"
	}
	have := t.audiences
	if have == nil { // a legacy token is valid for the API server's own audience
		have = []string{DefaultAudience}
	}
	if len(want) == 0 {
		return t.sa, have, true, ""
	}
	for _, a := range want {
		if slices.Contains(have, a) {
			audiences = append(audiences, a)
		}
	}
	if len(audiences) == 0 {
		return sa, nil, false, fmt.Sprintf("invalid bearer token, token audiences %q is invalid for the target audiences %q", have, want)
	}
	return t.sa, audiences, true, ""
}

func (k *KubeAPI) serveTokenReview(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeStatus(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, r.Method+" is not supported")
		return
	}
	bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	caller, _, ok, _ := k.authenticate(bearer, nil)
	if !ok {
		k.record(Review{})
		writeStatus(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized")
		return
	}
	var req authv1.TokenReview
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Spec.Token == "" {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("bad TokenReview: %v", err))
		return
	}
	resp := authv1.TokenReview{
		TypeMeta: metav1.TypeMeta{Kind: "TokenReview", APIVersion: "authentication.k8s.io/v1"},
		Spec:     req.Spec,
	}
	sa, audiences, ok, why := k.authenticate(req.Spec.Token, req.Spec.Audiences)
	rev := Review{Bearer: caller.Username(), Audiences: req.Spec.Audiences, Authenticated: ok}
	if ok {
		rev.User = sa.Username()
		resp.Status = authv1.TokenReviewStatus{
			Authenticated: true,
			Audiences:     audiences,
			User: authv1.UserInfo{
				Username: sa.Username(),
				UID:      sa.UID,
				Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + sa.Namespace, "system:authenticated"},
			},
		}
	} else {
		resp.Status = authv1.TokenReviewStatus{Error: "[" + why + "]"}
	}
	k.record(rev)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(resp)
}

func (k *KubeAPI) record(r Review) {
	k.mu.Lock()
	k.reviews = append(k.reviews, r)
	k.mu.Unlock()
}

// writeStatus answers with a metav1.Status failure, as the API server does.
func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: msg, Reason: reason, Code: int32(code),
	})
}

// signES256 makes a compact JWS of claims signed with key (RFC 7515, RFC 7518 §3.4).
func signES256(tb testing.TB, key *ecdsa.PrivateKey, claims map[string]any) string {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	kid := sha256.Sum256(der)
	header, err := json.Marshal(map[string]string{"alg": "ES256", "kid": base64.RawURLEncoding.EncodeToString(kid[:])})
	if err != nil {
		tb.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	input := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		tb.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// uuid returns a random RFC 4122 version 4 UUID.
func uuid(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
