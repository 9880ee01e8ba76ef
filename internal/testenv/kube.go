//go:build unix

package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// kubeBinaries are the programs of the control plane, all in one directory (scripts/kube-bin).
var kubeBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager"}

// RequireKube returns the directory holding etcd, kube-apiserver and kube-controller-manager:
// $KUBE_BIN_DIR, else the newest complete build scripts/kube-bin cached under the per-machine
// cache. Without one it ends the test: skipped with the reason, or failed when CI=true.
func RequireKube(tb testing.TB) string {
	tb.Helper()
	if dir := os.Getenv("KUBE_BIN_DIR"); dir != "" {
		if missing := missingKubeBinaries(dir); missing != "" {
			unavailable(tb, fmt.Sprintf("KUBE_BIN_DIR=%s has no executable %s", dir, missing))
		}
		return dir
	}
	matches, _ := filepath.Glob(filepath.Join(cacheDir(), "kube-v*-etcd-v*"))
	slices.Sort(matches)
	for i := len(matches) - 1; i >= 0; i-- {
		if missingKubeBinaries(matches[i]) == "" {
			return matches[i]
		}
	}
	unavailable(tb, "no etcd, kube-apiserver and kube-controller-manager: run `make test`, which builds them (scripts/kube-bin), or set KUBE_BIN_DIR")
	return ""
}

func missingKubeBinaries(dir string) string {
	for _, b := range kubeBinaries {
		fi, err := os.Stat(filepath.Join(dir, b))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			return b
		}
	}
	return ""
}

// KubeOptions shape a control plane StartKube starts.
type KubeOptions struct {
	// APIServerArgs are flags added to kube-apiserver's (a later flag wins over an earlier one).
	APIServerArgs []string
	// ControllerManagerArgs are flags added to kube-controller-manager's.
	ControllerManagerArgs []string
}

// Kube is a running Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager on
// loopback, without a kubelet or a scheduler: Pods the controllers create stay Pending.
type Kube struct {
	// URL is the API server's https://127.0.0.1:PORT: Vault's kubernetes_host.
	URL string
	// CACertPEM is the PEM of the CA that signed the API server's certificate: Vault's
	// kubernetes_ca_cert, and the controller manager's --root-ca-file (the kube-root-ca.crt
	// ConfigMap of every namespace).
	CACertPEM string
	// CACertFile is the path of a file holding CACertPEM.
	CACertFile string
	// AdminToken is a static bearer token of a user in system:masters.
	AdminToken string
	// AdminUser is AdminToken's user name.
	AdminUser string
	// Issuer is the iss claim of the service account tokens the API server signs; it is also the
	// API server's audience (--api-audiences).
	Issuer string
	// Kubeconfig is the path of a kubeconfig file for AdminToken (the controller manager's).
	Kubeconfig string

	client   *http.Client
	procs    []*kubeProc
	saKey    *rsa.PrivateKey // signs service account tokens (--service-account-signing-key-file)
	auditLog string          // the API server's audit log of TokenReview requests

	discoveryMu sync.Mutex
	discovery   map[string]*metav1.APIResourceList // by group/version; nil: not served
}

// kubeProc is one process of the control plane.
type kubeProc struct {
	name   string
	cmd    *exec.Cmd
	out    *SyncBuffer
	exited chan struct{}
}

// Logs returns the last lines each process of the control plane printed, for a failing test's
// message.
func (k *Kube) Logs() string {
	var b strings.Builder
	for _, p := range k.procs {
		fmt.Fprintf(&b, "--- %s:\n%s", p.name, lastLines(p.out.String(), 40))
	}
	return b.String()
}

// StartKube starts etcd, kube-apiserver and kube-controller-manager on free loopback ports, waits
// until the API server's /readyz answers ok and the controller manager has made the default
// service account of namespace default, and stops them all when the test ends.
//
// The API server serves a certificate for 127.0.0.1 signed by a CA the test makes; it
// authenticates AdminToken (--token-auth-file, group system:masters) and service account tokens
// signed with a key pair the test makes; it authorizes with Node and RBAC, and its admission
// plugins are the default ones, PodSecurity and ServiceAccount among them.
func StartKube(tb testing.TB, opts KubeOptions) *Kube {
	tb.Helper()
	bins := RequireKube(tb)
	start := time.Now()
	dir := tb.TempDir()
	etcdData := tb.TempDir()

	caPEM, certFile, keyFile := kubeServingCert(tb, dir)
	saKeyFile, saPub, saKey := kubeServiceAccountKeys(tb, dir)
	k := &Kube{
		saKey:      saKey,
		auditLog:   filepath.Join(dir, "audit.log"),
		CACertPEM:  caPEM,
		CACertFile: filepath.Join(dir, "ca.pem"),
		AdminToken: randomHex(tb, 32),
		AdminUser:  "token-rotator-test-admin",
		Issuer:     DefaultAudience,
		Kubeconfig: filepath.Join(dir, "kubeconfig"),
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(caPEM))
	k.client = &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	auditPolicy := filepath.Join(dir, "audit-policy.yaml")
	writeFile(tb, auditPolicy, kubeAuditPolicy)
	tokens := filepath.Join(dir, "tokens.csv")
	writeFile(tb, tokens, fmt.Sprintf("%s,%s,%s,\"system:masters\"\n", k.AdminToken, k.AdminUser, k.AdminUser))

	startMu.Lock() // one start at a time: ports found free here stay free until the servers take them
	locked := true
	defer func() {
		if locked {
			startMu.Unlock()
		}
	}()
	etcdPort, peerPort, apiPort := FreePort(tb), FreePort(tb), FreePort(tb)
	for etcdPort == peerPort || apiPort == etcdPort || apiPort == peerPort {
		peerPort, apiPort = FreePort(tb), FreePort(tb)
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	k.URL = fmt.Sprintf("https://127.0.0.1:%d", apiPort)

	// etcd as envtest runs it (one member, client URL listened on and advertised), with its peer
	// URL on a loopback port of its own rather than envtest's localhost:0, and fsync off: the
	// data lives only as long as the test.
	k.startProc(tb, filepath.Join(bins, "etcd"), dir,
		"--name=default",
		"--data-dir="+etcdData,
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	)

	// kube-apiserver with envtest's choices (service CIDR 10.0.0.0/24, privileged containers
	// allowed, a cert dir of its own) except where a real cluster's behaviour is the point: the
	// ServiceAccount admission plugin stays on (the controller manager makes the default service
	// accounts, and pods get their projected token volume as in a real cluster) and
	// authorization is Node,RBAC as kubeadm sets it.
	apiArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// Kubernetes 1.37 refuses a loopback advertise address for the kubernetes service's
		// endpoints; no pod runs here to reach the API server through that service.
		"--endpoint-reconciler-type=none",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file=" + certFile,
		"--tls-private-key-file=" + keyFile,
		"--token-auth-file=" + tokens,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=" + k.Issuer,
		"--service-account-key-file=" + saPub,
		"--service-account-signing-key-file=" + saKeyFile,
		"--api-audiences=" + k.Issuer,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		"--profiling=false",
		"--audit-policy-file=" + auditPolicy,
		"--audit-log-path=" + k.auditLog,
		"--audit-log-mode=blocking",
	}
	k.startProc(tb, filepath.Join(bins, "kube-apiserver"), dir, append(apiArgs, opts.APIServerArgs...)...)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var last string
	for {
		status, body, err := k.request(ctx, http.MethodGet, "/readyz", "", nil)
		if err == nil && status == http.StatusOK && string(body) == "ok" {
			break
		}
		last = fmt.Sprintf("status %d: %v %s", status, err, lastLines(string(body), 5))
		k.pollWait(tb, ctx, "kube-apiserver /readyz", last)
	}
	startMu.Unlock()
	locked = false
	ready := time.Since(start)

	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: test
  context:
    cluster: test
    user: admin
current-context: test
`, k.URL, k.CACertFile, k.AdminToken)
	writeFile(tb, k.Kubeconfig, kubeconfig)
	cmArgs := []string{
		"--kubeconfig=" + k.Kubeconfig,
		"--service-account-private-key-file=" + saKeyFile,
		"--root-ca-file=" + k.CACertFile,
		"--leader-elect=false",
		"--controllers=*",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
	}
	k.startProc(tb, filepath.Join(bins, "kube-controller-manager"), dir, append(cmArgs, opts.ControllerManagerArgs...)...)

	// The controller manager is at work once the service account controller made the default
	// service account of namespace default.
	for {
		status, _, err := k.request(ctx, http.MethodGet, "/api/v1/namespaces/default/serviceaccounts/default", "", nil)
		if err == nil && status == http.StatusOK {
			break
		}
		k.pollWait(tb, ctx, "kube-controller-manager (serviceaccount default/default)", fmt.Sprintf("status %d: %v", status, err))
	}
	tb.Logf("kubernetes control plane up at %s: apiserver ready in %v, controller manager at work in %v",
		k.URL, ready.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return k
}

// pollWait waits a moment before the next poll, or ends the test when the context is done or a
// process of the control plane exited.
func (k *Kube) pollWait(tb testing.TB, ctx context.Context, what, last string) {
	tb.Helper()
	for _, p := range k.procs {
		select {
		case <-p.exited:
			tb.Fatalf("%s exited while waiting for %s (%s)\n%s", p.name, what, last, k.Logs())
		default:
		}
	}
	select {
	case <-ctx.Done():
		tb.Fatalf("waiting for %s: %v (%s)\n%s", what, ctx.Err(), last, k.Logs())
	case <-time.After(100 * time.Millisecond):
	}
}

func (k *Kube) startProc(tb testing.TB, bin, dir string, args ...string) {
	tb.Helper()
	p := &kubeProc{name: filepath.Base(bin), out: &SyncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	dieWithTest(p.cmd)
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	// Cleanups run last-registered first: the controller manager stops before the API server,
	// the API server before etcd.
	tb.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	k.procs = append(k.procs, p)
}

// kubeServingCert makes a CA and, signed by it, the API server's certificate for 127.0.0.1,
// localhost and the in-cluster names of the kubernetes service. It returns the CA's PEM and the
// paths of the certificate and its key; the CA is written to dir/ca.pem.
func kubeServingCert(tb testing.TB, dir string) (caPEM, certFile, keyFile string) {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "token-rotator test kubernetes CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	caFile := writePEM(tb, dir, "ca.pem", "CERTIFICATE", caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 0, 0, 1)},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b), writePEM(tb, dir, "apiserver.pem", "CERTIFICATE", der),
		writePEM(tb, dir, "apiserver-key.pem", "EC PRIVATE KEY", kb)
}

// kubeServiceAccountKeys makes the key pair service account tokens are signed with: RSA 2048, as
// envtest makes it. It returns the paths of the private key and the public key, and the key.
func kubeServiceAccountKeys(tb testing.TB, dir string) (keyFile, pub string, key *rsa.PrivateKey) {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	return writePEM(tb, dir, "sa.key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k)),
		writePEM(tb, dir, "sa.pub", "PUBLIC KEY", pubDER), k
}

func randomHex(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func writeFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// request sends one request to the API server as the admin and returns the status and body.
func (k *Kube) request(ctx context.Context, method, path, contentType string, body []byte) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.URL+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.AdminToken)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Do sends a request to the API server as the admin and returns the response's status. body is
// sent as JSON (a []byte as it is; nil: no body; a PATCH is a JSON merge patch); out, when not nil,
// receives the JSON of a 2xx response. A non-2xx response's body is logged.
func (k *Kube) Do(tb testing.TB, method, path string, body, out any) int {
	tb.Helper()
	var b []byte
	switch v := body.(type) {
	case nil:
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			tb.Fatalf("%s %s: %v", method, path, err)
		}
	}
	ct := ""
	if b != nil {
		ct = "application/json"
		if method == http.MethodPatch {
			ct = "application/merge-patch+json"
		}
	}
	status, resp, err := k.request(context.Background(), method, path, ct, b)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	if status < 200 || status > 299 {
		tb.Logf("%s %s: %d %s", method, path, status, bytes.TrimSpace(resp))
		return status
	}
	if out != nil {
		if err := json.Unmarshal(resp, out); err != nil {
			tb.Fatalf("%s %s: decode the response: %v", method, path, err)
		}
	}
	return status
}

// Apply applies each document of yamlDocs (separated by ---) with server-side apply, as
// `kubectl apply --server-side --force-conflicts` does, and with fieldValidation=Strict: an
// unknown or duplicate field fails the test. A namespaced object goes into namespace when it is
// not "" (metadata.namespace is set to it; references to namespaces inside the object, as a
// RoleBinding's subjects, are left as written), else into its own metadata.namespace, else into
// default. The resource path comes from the API server's discovery. An object of a version the
// server does not serve fails the test, but for monitoring.coreos.com's (ServiceMonitor and
// PrometheusRule: the Prometheus Operator's CRDs are not installed), skipped with a note.
func (k *Kube) Apply(tb testing.TB, yamlDocs []byte, namespace string) {
	tb.Helper()
	for i, doc := range splitYAML(yamlDocs) {
		var obj map[string]any
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			tb.Fatalf("document %d: %v", i, err)
		}
		if len(obj) == 0 {
			continue
		}
		apiVersion, _ := obj["apiVersion"].(string)
		kind, _ := obj["kind"].(string)
		meta, _ := obj["metadata"].(map[string]any)
		name, _ := meta["name"].(string)
		if apiVersion == "" || kind == "" || name == "" {
			tb.Fatalf("document %d has no apiVersion, kind or metadata.name:\n%s", i, doc)
		}
		res, ok := k.resource(tb, apiVersion, kind)
		switch {
		case !ok && strings.HasPrefix(apiVersion, "monitoring.coreos.com/"):
			tb.Logf("apply: skipped %s %s: the API server does not serve %s (the Prometheus Operator's CRDs are not installed)", kind, name, apiVersion)
			continue
		case !ok:
			tb.Fatalf("apply: the API server does not serve %s (%s %s): a misspelt apiVersion?", apiVersion, kind, name)
		}
		prefix := "/api/"
		if strings.Contains(apiVersion, "/") {
			prefix = "/apis/"
		}
		path := prefix + apiVersion
		if res.Namespaced {
			ns := namespace
			if ns == "" {
				ns, _ = meta["namespace"].(string)
			}
			if ns == "" {
				ns = "default"
			}
			meta["namespace"] = ns
			path += "/namespaces/" + url.PathEscape(ns)
		}
		path += "/" + res.Name + "/" + url.PathEscape(name) +
			"?fieldManager=token-rotator-test&fieldValidation=Strict&force=true"
		body, err := json.Marshal(obj)
		if err != nil {
			tb.Fatal(err)
		}
		status, resp, err := k.request(context.Background(), http.MethodPatch, path, "application/apply-patch+yaml", body)
		if err != nil {
			tb.Fatalf("apply %s %s: %v", kind, name, err)
		}
		if status != http.StatusOK && status != http.StatusCreated {
			tb.Fatalf("apply %s %s: %d %s", kind, name, status, bytes.TrimSpace(resp))
		}
	}
}

var yamlSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range yamlSeparator.Split(string(b), -1) {
		docs = append(docs, []byte(d))
	}
	return docs
}

// resource finds the resource of kind in group/version apiVersion by discovery; ok is false when
// the API server does not serve that group/version.
func (k *Kube) resource(tb testing.TB, apiVersion, kind string) (res metav1.APIResource, ok bool) {
	tb.Helper()
	k.discoveryMu.Lock()
	defer k.discoveryMu.Unlock()
	list, seen := k.discovery[apiVersion]
	if !seen {
		path := "/apis/" + apiVersion
		if !strings.Contains(apiVersion, "/") {
			path = "/api/" + apiVersion
		}
		status, body, err := k.request(context.Background(), http.MethodGet, path, "", nil)
		if err != nil {
			tb.Fatalf("discovery of %s: %v", apiVersion, err)
		}
		switch status {
		case http.StatusOK:
			list = &metav1.APIResourceList{}
			if err := json.Unmarshal(body, list); err != nil {
				tb.Fatalf("discovery of %s: %v", apiVersion, err)
			}
		case http.StatusNotFound:
		default:
			tb.Fatalf("discovery of %s: %d %s", apiVersion, status, body)
		}
		if k.discovery == nil {
			k.discovery = map[string]*metav1.APIResourceList{}
		}
		k.discovery[apiVersion] = list
	}
	if list == nil {
		return res, false
	}
	for _, r := range list.APIResources {
		if r.Kind == kind && !strings.Contains(r.Name, "/") {
			return r, true
		}
	}
	tb.Fatalf("the API server serves %s but no kind %s in it", apiVersion, kind)
	return res, false
}

// TokenRequest asks the API server for a token of the service account (the TokenRequest
// subresource, as the kubelet does for a projected service account token) for audience ("": the
// API server's own) valid for expiry (0: the server's default; it refuses less than 10 minutes).
func (k *Kube) TokenRequest(tb testing.TB, namespace, serviceAccount, audience string, expiry time.Duration) string {
	tb.Helper()
	req := authv1.TokenRequest{}
	if audience != "" {
		req.Spec.Audiences = []string{audience}
	}
	if expiry != 0 {
		secs := int64(expiry / time.Second)
		req.Spec.ExpirationSeconds = &secs
	}
	var out authv1.TokenRequest
	path := "/api/v1/namespaces/" + url.PathEscape(namespace) + "/serviceaccounts/" + url.PathEscape(serviceAccount) + "/token"
	if status := k.Do(tb, http.MethodPost, path, req, &out); status != http.StatusCreated {
		tb.Fatalf("token request for %s/%s: status %d", namespace, serviceAccount, status)
	}
	if out.Status.Token == "" {
		tb.Fatalf("token request for %s/%s: no token in the response", namespace, serviceAccount)
	}
	return out.Status.Token
}

// TokenReview reviews token as the admin for audiences (none: the API server's own) and returns
// the review's status.
func (k *Kube) TokenReview(tb testing.TB, token string, audiences ...string) authv1.TokenReviewStatus {
	tb.Helper()
	review := authv1.TokenReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview"},
		Spec:     authv1.TokenReviewSpec{Token: token, Audiences: audiences},
	}
	var out authv1.TokenReview
	if status := k.Do(tb, http.MethodPost, TokenReviewPath, review, &out); status != http.StatusCreated {
		tb.Fatalf("token review: status %d", status)
	}
	return out.Status
}

// Pods lists the pods of namespace that match labelSelector ("": all).
func (k *Kube) Pods(tb testing.TB, namespace, labelSelector string) []corev1.Pod {
	tb.Helper()
	var list corev1.PodList
	path := "/api/v1/namespaces/" + url.PathEscape(namespace) + "/pods"
	if labelSelector != "" {
		path += "?labelSelector=" + url.QueryEscape(labelSelector)
	}
	if status := k.Do(tb, http.MethodGet, path, nil, &list); status != http.StatusOK {
		tb.Fatalf("list pods in %s: status %d", namespace, status)
	}
	return list.Items
}

// WaitFor polls cond every 100ms until it holds, and fails the test (with the control plane's
// logs) when it does not within timeout.
func (k *Kube) WaitFor(tb testing.TB, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %v\n%s", timeout, k.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
