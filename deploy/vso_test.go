package deploy

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"token-rotator/internal/testenv"
)

// The VSO resources below mirror, field for field, the parts of VSO's API that vso/ uses:
// secrets.hashicorp.com/v1beta1 as of VSO v1.4.1 (api/v1beta1/vaultconnection_types.go,
// vaultauth_types.go, vaultstaticsecret_types.go and common.go; the CRDs in config/crd/bases).
// VSO's Go module cannot be had here, so they are written out by hand; a field they lack fails
// the strict decode, and one added to the example must be checked against VSO's CRD reference
// before it is added here.

type vsoConnection struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Address         string `json:"address"`
		CACertSecretRef string `json:"caCertSecretRef,omitempty"`
	} `json:"spec"`
}

type vsoAuth struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		VaultConnectionRef string `json:"vaultConnectionRef"`
		Method             string `json:"method"`
		Mount              string `json:"mount"`
		Kubernetes         *struct {
			Role                   string   `json:"role"`
			ServiceAccount         string   `json:"serviceAccount"`
			TokenAudiences         []string `json:"audiences,omitempty"`
			TokenExpirationSeconds int64    `json:"tokenExpirationSeconds,omitempty"`
		} `json:"kubernetes"`
	} `json:"spec"`
}

type vsoStaticSecret struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		VaultAuthRef string `json:"vaultAuthRef"`
		Type         string `json:"type"` // kv-v1 or kv-v2
		Mount        string `json:"mount"`
		Path         string `json:"path"`
		RefreshAfter string `json:"refreshAfter"`
		Destination  struct {
			Name           string `json:"name"`
			Create         bool   `json:"create"`
			Transformation struct {
				ExcludeRaw bool `json:"excludeRaw"`
			} `json:"transformation"`
		} `json:"destination"`
		RolloutRestartTargets []struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"rolloutRestartTargets,omitempty"`
		SyncConfig *struct {
			InstantUpdates bool `json:"instantUpdates,omitempty"`
		} `json:"syncConfig,omitempty"`
	} `json:"spec"`
}

// unmarshalExact decodes one YAML document into obj as the Kubernetes API server decodes a
// request: field names matched case-sensitively, and a duplicate or unknown field is an error.
// (yaml.UnmarshalStrict matches field names as encoding/json does, ignoring case.)
func unmarshalExact(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, obj)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// vsoDuration is the CRD's pattern for refreshAfter.
var vsoDuration = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?(s|m|h))$`)

// vsoExample is vso/, decoded strictly.
type vsoExample struct {
	conn   *vsoConnection
	auth   *vsoAuth
	secret *vsoStaticSecret
	sa     *corev1.ServiceAccount
	app    *appsv1.Deployment
}

func loadVSOExample(t *testing.T) vsoExample {
	t.Helper()
	var ex vsoExample
	for _, f := range []string{"vso/vaultstaticsecret.yaml", "vso/deployment.yaml"} {
		for i, doc := range docSeparator.Split(string(readFile(t, f)), -1) {
			if isBlank(doc) {
				continue
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s, document %d: %v", f, i+1, err)
			}
			var obj any
			switch tm.Kind {
			case "VaultConnection":
				ex.conn = &vsoConnection{}
				obj = ex.conn
			case "VaultAuth":
				ex.auth = &vsoAuth{}
				obj = ex.auth
			case "VaultStaticSecret":
				ex.secret = &vsoStaticSecret{}
				obj = ex.secret
			default:
				_, o, err := decodeStrict([]byte(doc))
				if err != nil {
					t.Fatalf("%s, document %d: %v", f, i+1, err)
				}
				switch o := o.(type) {
				case *corev1.ServiceAccount:
					ex.sa = o
				case *appsv1.Deployment:
					ex.app = o
				default:
					t.Fatalf("%s, document %d: unexpected %s", f, i+1, tm.Kind)
				}
				continue
			}
			if tm.APIVersion != "secrets.hashicorp.com/v1beta1" {
				t.Errorf("%s: %s apiVersion %q, want secrets.hashicorp.com/v1beta1", f, tm.Kind, tm.APIVersion)
			}
			if err := unmarshalExact([]byte(doc), obj); err != nil {
				t.Fatalf("%s, %s: %v", f, tm.Kind, err)
			}
		}
	}
	if ex.conn == nil || ex.auth == nil || ex.secret == nil || ex.sa == nil || ex.app == nil {
		t.Fatal("vso/: want a VaultConnection, a VaultAuth, a VaultStaticSecret, a ServiceAccount and a Deployment")
	}
	return ex
}

// TestVSOExample checks vso/: every resource decodes strictly (the VSO ones into the mirror of
// VSO v1.4.1's CRD fields above); the VaultStaticSecret reads acme's output from the shipped
// config as KV v2, with the refreshAfter docs/apps.md states; the VaultAuth logs in with setup.sh's apps
// role, service account, namespace and audience; the app mounts the Secret VSO creates as a whole
// volume (no subPath, no environment variable), 0440; deploy/kustomization.yaml does not apply
// vso/, whose CRDs a cluster may not have.
func TestVSOExample(t *testing.T) {
	ex := loadVSOExample(t)
	setup := string(readFile(t, "vault/setup.sh"))
	cfg := shippedConfig(t, loadManifests(t))
	vss := ex.secret.Spec

	acme := cfg.Client("acme")
	if acme == nil || vss.Type != "kv-v2" || vss.Mount != cfg.Vault.KVMount || vss.Path != acme.Output {
		t.Errorf("VaultStaticSecret reads %s %s/%s, want kv-v2 at acme's output in configmap.yaml", vss.Type, vss.Mount, vss.Path)
	}
	if !vsoDuration.MatchString(vss.RefreshAfter) {
		t.Errorf("refreshAfter %q does not match the CRD's pattern", vss.RefreshAfter)
	}
	refresh, err := time.ParseDuration(vss.RefreshAfter)
	if err != nil || refresh <= 0 || refresh > time.Minute {
		t.Errorf("refreshAfter %q: want a positive duration no longer than the kubelet's 1-minute sync", vss.RefreshAfter)
	}
	if want := "`refreshAfter: " + vss.RefreshAfter + "`"; !strings.Contains(testenv.DocSection(t, appsDoc, "Vault Secrets Operator"), want) {
		t.Errorf("docs/apps.md, Vault Secrets Operator: does not say %s, the example's setting", want)
	}
	if !vss.Destination.Create || vss.Destination.Name == "" || !vss.Destination.Transformation.ExcludeRaw {
		t.Errorf("destination %+v: want create, a name, and excludeRaw", vss.Destination)
	}
	if vss.SyncConfig != nil && vss.SyncConfig.InstantUpdates {
		t.Error("syncConfig.instantUpdates: needs Vault Enterprise; the example is for any Vault")
	}

	ns := ex.secret.Namespace
	if !strings.Contains(setup, "APP_NAMESPACES=${APP_NAMESPACES:-"+ns+"}") {
		t.Errorf("namespace %q is not the apps' namespace setup.sh binds", ns)
	}
	for _, o := range []metav1.ObjectMeta{ex.conn.ObjectMeta, ex.auth.ObjectMeta, ex.sa.ObjectMeta, ex.app.ObjectMeta} {
		if o.Namespace != ns {
			t.Errorf("%s is in namespace %q, the VaultStaticSecret in %q: VSO looks up its references and the service account there", o.Name, o.Namespace, ns)
		}
	}
	if vss.VaultAuthRef != ex.auth.Name || ex.auth.Spec.VaultConnectionRef != ex.conn.Name {
		t.Errorf("references: vaultAuthRef %q (VaultAuth %q), vaultConnectionRef %q (VaultConnection %q)",
			vss.VaultAuthRef, ex.auth.Name, ex.auth.Spec.VaultConnectionRef, ex.conn.Name)
	}
	if envValue(ex.app.Spec.Template.Spec.Containers[0].Env, "STORA_TOKEN_FILE") == "" || ex.conn.Spec.Address == "" {
		t.Error("no Vault address or no token file named")
	}
	a := ex.auth.Spec
	if a.Method != "kubernetes" || a.Mount != "kubernetes" || a.Kubernetes == nil {
		t.Fatalf("VaultAuth: method %q mount %q: want kubernetes at kubernetes (setup.sh)", a.Method, a.Mount)
	}
	k := a.Kubernetes
	if k.Role != "token-rotator-apps" || !strings.Contains(setup, "vault write auth/kubernetes/role/"+k.Role) {
		t.Errorf("VaultAuth role %q: not setup.sh's apps role", k.Role)
	}
	if k.ServiceAccount != ex.sa.Name || ex.app.Spec.Template.Spec.ServiceAccountName != ex.sa.Name ||
		!strings.Contains(setup, "APP_SERVICE_ACCOUNTS=${APP_SERVICE_ACCOUNTS:-"+k.ServiceAccount+"}") {
		t.Errorf("VaultAuth service account %q: not the example's, nor setup.sh's default", k.ServiceAccount)
	}
	if !slices.Equal(k.TokenAudiences, []string{"vault"}) || !strings.Contains(setup, "APP_AUDIENCE=${APP_AUDIENCE:-vault}") {
		t.Errorf("VaultAuth audiences %q: setup.sh's apps role requires audience vault (APP_AUDIENCE's default)", k.TokenAudiences)
	}

	p := &ex.app.Spec.Template.Spec
	c := p.Containers[0]
	v := mountFor(t, p, c, "/var/run/stora/access_token")
	if v.Secret == nil || v.Secret.SecretName != vss.Destination.Name {
		t.Errorf("/var/run/stora is not the Secret %s", vss.Destination.Name)
	} else if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o440 || p.SecurityContext == nil || p.SecurityContext.FSGroup == nil {
		t.Errorf("the Secret's files: defaultMode %s, fsGroup set: %v; want 0440 read through the fsGroup", ptrString(v.Secret.DefaultMode), p.SecurityContext != nil && p.SecurityContext.FSGroup != nil)
	}
	for _, ct := range append(slices.Clone(p.InitContainers), p.Containers...) {
		for _, vm := range ct.VolumeMounts {
			if vm.SubPath != "" || vm.SubPathExpr != "" {
				t.Errorf("%s mounts %s with subPath: it would never see a new token", ct.Name, vm.MountPath)
			}
		}
		for _, e := range ct.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				t.Errorf("%s takes %s from a Secret: an environment variable never sees a new token", ct.Name, e.Name)
			}
		}
		for _, e := range ct.EnvFrom {
			if e.SecretRef != nil {
				t.Errorf("%s takes its environment from a Secret: it never sees a new token", ct.Name)
			}
		}
	}

	m := loadManifests(t)
	for _, r := range m.kustomization.Resources {
		if strings.HasPrefix(r, "vso") || strings.HasPrefix(r, "vault-agent") {
			t.Errorf("kustomization.yaml applies %s: the VSO and Vault Agent examples are not part of the deployment", r)
		}
	}
	t.Logf("VaultStaticSecret %s/%s: %s %s/%s every %s into Secret %s; VaultAuth role %s as %s, audiences %q",
		ns, ex.secret.Name, vss.Type, vss.Mount, vss.Path, vss.RefreshAfter, vss.Destination.Name, k.Role, k.ServiceAccount, k.TokenAudiences)
}

// TestVSOStrictDecodingRejects proves the mirror above catches what VSO's CRDs would refuse: a
// field the CRD does not have, or one in the wrong place.
func TestVSOStrictDecodingRejects(t *testing.T) {
	good := string(readFile(t, "vso/vaultstaticsecret.yaml"))
	for name, bad := range map[string]string{
		"misspelt field": strings.Replace(good, "refreshAfter:", "refreshafter:", 1),
		"audiences at the VaultAuth's spec level": strings.Replace(good, "  mount: kubernetes\n", "  mount: kubernetes\n  audiences: [vault]\n", 1),
		"wrong type":      strings.Replace(good, "create: true", "create: yes please", 1),
		"duplicate field": strings.Replace(good, "  refreshAfter: 30s\n", "  refreshAfter: 30s\n  refreshAfter: 5m\n", 1),
	} {
		if bad == good {
			t.Fatalf("%s: the replacement did not apply", name)
		}
		err := func() error {
			for _, doc := range docSeparator.Split(bad, -1) {
				var tm metav1.TypeMeta
				if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
					return err
				}
				var obj any = map[string]any{}
				switch tm.Kind {
				case "VaultConnection":
					obj = &vsoConnection{}
				case "VaultAuth":
					obj = &vsoAuth{}
				case "VaultStaticSecret":
					obj = &vsoStaticSecret{}
				}
				if err := unmarshalExact([]byte(doc), obj); err != nil {
					return fmt.Errorf("%s: %w", tm.Kind, err)
				}
			}
			return nil
		}()
		if err == nil {
			t.Errorf("%s: decoded without error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// TestVSOExampleLogsIn makes the Vault calls VSO makes for the example, against a real Vault set
// up by setup.sh and a real kube-apiserver: a service account token from TokenRequest for the
// VaultAuth's service account and audiences (VSO asks the API server for one), a login at the
// VaultAuth's mount with its role, and a KV v2 read of the VaultStaticSecret's mount and path.
// The read returns acme's access token. A token of the API server's default audience, what VSO
// asks for when the VaultAuth names no audiences, is refused, and so is the credential secret.
// VSO itself is not run.
func TestVSOExampleLogsIn(t *testing.T) {
	ex := loadVSOExample(t)
	v := testenv.StartVault(t)
	k8s, kubeEnv := startKube(t)
	runSetup(t, v, kubeEnv...)
	seed(t, v)
	a, vss := ex.auth.Spec, ex.secret.Spec
	k8s.ServiceAccount(t, ex.auth.Namespace, a.Kubernetes.ServiceAccount)

	login := func(audiences []string) (*api.Client, error) {
		audience := ""
		switch len(audiences) {
		case 0:
		case 1:
			audience = audiences[0]
		default:
			t.Fatalf("VaultAuth audiences %q: the test asks for one", audiences)
		}
		jwt := k8s.TokenRequest(t, ex.auth.Namespace, a.Kubernetes.ServiceAccount, audience, 10*time.Minute) // VSO's default tokenExpirationSeconds
		s, err := v.Client.Logical().Write("auth/"+a.Mount+"/login", map[string]any{"role": a.Kubernetes.Role, "jwt": jwt})
		if err != nil {
			return nil, err
		}
		c, err := v.Client.Clone()
		if err != nil {
			t.Fatal(err)
		}
		c.SetToken(s.Auth.ClientToken)
		return c, nil
	}

	c, err := login(a.Kubernetes.TokenAudiences)
	if err != nil {
		t.Fatalf("login as the VaultAuth: %v", err)
	}
	s, err := c.Logical().Read(vss.Mount + "/data/" + vss.Path)
	if err != nil || s == nil {
		t.Fatalf("read %s/data/%s: %v", vss.Mount, vss.Path, err)
	}
	data, _ := s.Data["data"].(map[string]any)
	if at, _ := data["access_token"].(string); at == "" {
		t.Errorf("%s/%s: no access_token; keys %v", vss.Mount, vss.Path, keys(data))
	}
	if _, err := c.Logical().Read(vss.Mount + "/data/stora/acme"); !denied(err) {
		t.Errorf("the VaultAuth's token read the credential secret: %v", err)
	}

	_, err = login(nil) // the API server's default audience
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 403 || !strings.Contains(err.Error(), "invalid audience") {
		t.Errorf("login without the VaultAuth's audiences: %v, want 403 invalid audience", err)
	}
	t.Logf("VaultAuth %s/%s logs in with role %s and reads %s/%s; without audiences: %v", ex.auth.Namespace, ex.auth.Name, a.Kubernetes.Role, vss.Mount, vss.Path, err)
}
