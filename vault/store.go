package vault

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"token-rotator/config"
)

// ErrNotFound is returned by Read when no secret is at the path, or its latest version is deleted
// or destroyed (KV v2).
var ErrNotFound = errors.New("secret not found")

// ErrVersionMismatch is returned by Write when check-and-set failed: the secret changed since the
// version the caller read.
var ErrVersionMismatch = errors.New("secret changed since it was read (check-and-set)")

// DeletedError is returned by Read when the latest version of a KV v2 secret is deleted or
// destroyed. It matches ErrNotFound with errors.Is. Version is that latest version: a write
// check-and-set on it recreates the secret.
type DeletedError struct {
	Path    string
	Version int
	// CreatedTime is when that version was written; DeletionTime when it was deleted, or was set
	// to be by delete_version_after when it was written. Zero when Vault did not say.
	CreatedTime, DeletionTime time.Time
}

// ByRetention reports whether the version was deleted by a delete_version_after rather than by
// someone, and after how long. Vault sets a version's deletion time when it writes the version, to
// its creation time plus the setting, to the nanosecond; someone's delete records the moment it
// happened. So a deletion a whole number of seconds after creation, or exactly one of settings
// after it, is the setting's doing, even once the setting has been removed or changed since.
func (e *DeletedError) ByRetention(settings ...time.Duration) (time.Duration, bool) {
	if e.CreatedTime.IsZero() || e.DeletionTime.IsZero() {
		return 0, false
	}
	gap := e.DeletionTime.Sub(e.CreatedTime)
	if gap > 0 && gap%time.Second == 0 {
		return gap, true
	}
	for _, d := range settings {
		if d > 0 && gap-d > -time.Second && gap-d < time.Second {
			return d, true
		}
	}
	return 0, false
}

func (e *DeletedError) Error() string {
	return fmt.Sprintf("read %s: latest version (%d) is deleted or destroyed", e.Path, e.Version)
}

// Is makes a DeletedError match ErrNotFound.
func (e *DeletedError) Is(target error) bool { return target == ErrNotFound }

// Secret is a KV secret as read.
type Secret struct {
	// Data is the secret's key/value data.
	Data map[string]any
	// Version is the KV v2 version read; 0 on KV v1 and for a secret that does not exist yet.
	Version int
	// Metadata is the KV v2 secret's custom metadata (string values); nil on KV v1.
	Metadata map[string]string
	// CreatedTime is when this version was written (KV v2); zero on KV v1.
	CreatedTime time.Time
	// DeletionTime is when Vault will soft-delete this version by delete_version_after (the
	// mount's or the secret's, as they were when it was written); zero when never.
	DeletionTime time.Time
}

// Store reads and writes secrets under one KV mount.
type Store struct {
	client  *api.Client
	auth    config.Auth
	mount   string
	version int // KV engine version: 1 or 2

	mu          sync.Mutex // guards login and tokenExpiry
	tokenExpiry time.Time  // when the Vault token was last known to expire; zero: unknown

	capsMu sync.RWMutex
	caps   map[string][]string // capabilities by full path, from PrefetchCapabilities
}

// Open makes a Vault client from the environment (VAULT_ADDR, VAULT_CACERT, VAULT_TOKEN and the
// rest, as the vault CLI reads them) overlaid with cfg, logs in, and detects the KV version of
// cfg.KVMount: Connect, then NewStore. When neither VAULT_ADDR nor cfg.Address names Vault and it
// cannot be reached, the error says that the client's default address was used, and why.
func Open(ctx context.Context, cfg config.Vault) (*Store, error) {
	c, err := Connect(ctx, cfg)
	if err != nil {
		return nil, atDefaultAddress(err, cfg.Address)
	}
	s, err := NewStore(ctx, c, cfg.Auth, cfg.KVMount, 0)
	if err != nil {
		return nil, atDefaultAddress(err, cfg.Address)
	}
	return s, nil
}

// atDefaultAddress adds to err, a failure to reach Vault, that the address was the vault
// client's default (https://127.0.0.1:8200), why, and what to set: nothing named one, neither
// VAULT_ADDR (nor VAULT_AGENT_ADDR) nor configured, the config's vault.address. Any other error,
// one Vault answered among them, is returned as it is. The result matches what err matches.
func atDefaultAddress(err error, configured string) error {
	var ue *url.Error
	var re *api.ResponseError
	if configured != "" || os.Getenv(api.EnvVaultAgentAddr) != "" || !errors.As(err, &ue) || errors.As(err, &re) {
		return err
	}
	why := api.EnvVaultAddress + " is unset"
	if v, set := os.LookupEnv(api.EnvVaultAddress); set && v != "" {
		return err
	} else if set {
		why = api.EnvVaultAddress + " is empty"
	}
	return &defaultAddressError{err: err, msg: fmt.Sprintf("%s is the vault client's default address, used because %s and the config has no vault.address: set either to your Vault's address",
		api.DefaultAddress, why)}
}

type defaultAddressError struct {
	err error
	msg string
}

func (e *defaultAddressError) Error() string { return e.err.Error() + " (" + e.msg + ")" }
func (e *defaultAddressError) Unwrap() error { return e.err }

// Connect makes a Vault client from the environment (VAULT_ADDR, VAULT_CACERT, VAULT_TOKEN and
// the rest, as the vault CLI reads them) overlaid with cfg.Address, and logs it in with cfg.Auth
// (its method's defaults filled in). The client makes up to 2 retries of a request that failed
// (VAULT_MAX_RETRIES sets them) and gives up on one after 15 s (VAULT_CLIENT_TIMEOUT sets it). Under a Vault rate-limit quota it
// slows all its requests down and sends each one Vault refused with 429 again, within those 15 s
// (quota.go). Errors never contain a token.
func Connect(ctx context.Context, cfg config.Vault) (*api.Client, error) {
	vc := api.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("vault client config: %w (%s)", vc.Error, tlsFiles())
	}
	if cfg.Address != "" {
		vc.Address = cfg.Address
	}
	if _, set := os.LookupEnv(api.EnvVaultMaxRetries); !set {
		vc.MaxRetries = 2 // the client's own retries of a failed request; VAULT_MAX_RETRIES sets them, as for the vault CLI
	}
	if _, set := os.LookupEnv(api.EnvVaultClientTimeout); !set {
		vc.Timeout = 15 * time.Second // a stalled Vault must not hold a write-back for the default minute
	}
	if t, ok := vc.HttpClient.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = 64 // many rotations at once; the default (cores + 1) reconnects each time
	}
	c, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	// Installed after NewClient, which needs the *http.Transport itself for a unix:// address.
	vc.HttpClient.Transport = newQuotaTransport(vc.HttpClient.Transport)
	if err := login(ctx, c, cfg.Auth.WithDefaults()); err != nil {
		return nil, err
	}
	return c, nil
}

// NewStore returns a store on the KV mount of the given version (1 or 2; 0 detects it, one
// request) that uses c, which must be logged in. auth is how the store logs in again when Vault
// refuses c's token (see EnsureToken); with the zero Auth it never does, and keeping c's token
// valid is the caller's job.
func NewStore(ctx context.Context, c *api.Client, auth config.Auth, mount string, version int) (*Store, error) {
	s := &Store{client: c, auth: auth, mount: mount, version: version}
	if auth.Method != "" {
		s.auth = auth.WithDefaults()
	}
	switch version {
	case 0:
		var err error
		if s.version, err = kvVersion(ctx, c, mount); err != nil {
			return nil, err
		}
	case 1, 2:
	default:
		return nil, fmt.Errorf("vault mount %s: KV version %d: want 1 or 2", mount, version)
	}
	return s, nil
}

// KVVersion is the version of the KV secrets engine at the mount: 1 or 2.
func (s *Store) KVVersion() int { return s.version }

// DetectKVVersion asks Vault for the mount's KV version, 1 or 2, as NewStore does with version 0
// (one request). It does not change the store's.
func (s *Store) DetectKVVersion(ctx context.Context) (int, error) {
	return kvVersion(ctx, s.client, s.mount)
}

// kvVersion asks Vault for the mount's KV version, as the vault CLI does.
func kvVersion(ctx context.Context, c *api.Client, mount string) (int, error) {
	r, err := c.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts/"+mount)
	if isAuthError(err) {
		return 0, fmt.Errorf("vault at %s, mount %s: no such mount, or the Vault token is invalid or may not read it (%w)", c.Address(), mount, cleanError(err))
	} else if err != nil {
		return 0, fmt.Errorf("vault at %s, mount %s: %w", c.Address(), mount, cleanError(err))
	}
	if r == nil || r.Data == nil {
		return 0, fmt.Errorf("vault mount %s: no such mount, or no permission to read it", mount)
	}
	if t, _ := r.Data["type"].(string); t != "" && t != "kv" && t != "generic" {
		return 0, fmt.Errorf("vault mount %s: is a %s mount, not KV", mount, t)
	}
	if opts, ok := r.Data["options"].(map[string]any); ok {
		if v, _ := opts["version"].(string); v == "2" {
			return 2, nil
		}
	}
	return 1, nil
}

// Read returns the secret at path (relative to the mount).
// Errors: ErrNotFound (wrapped) when there is none; otherwise Vault's error, wrapped with the path.
func (s *Store) Read(ctx context.Context, path string) (*Secret, error) {
	var kv *api.KVSecret
	err := s.withLogin(ctx, func() (err error) {
		if s.version == 1 {
			kv, err = s.client.KVv1(s.mount).Get(ctx, path)
		} else {
			kv, err = s.client.KVv2(s.mount).Get(ctx, path)
		}
		return err
	})
	if err != nil {
		return nil, s.wrap("read", path, err)
	}
	if s.version == 1 {
		return &Secret{Data: kv.Data}, nil
	}
	var vm api.KVVersionMetadata
	if kv.VersionMetadata != nil {
		vm = *kv.VersionMetadata
	}
	if kv.Data == nil {
		return nil, &DeletedError{Path: s.mount + "/" + path, Version: vm.Version, CreatedTime: vm.CreatedTime, DeletionTime: vm.DeletionTime}
	}
	meta := map[string]string{}
	for k, val := range kv.CustomMetadata {
		meta[k] = fmt.Sprint(val)
	}
	return &Secret{Data: kv.Data, Version: vm.Version, Metadata: meta, CreatedTime: vm.CreatedTime, DeletionTime: vm.DeletionTime}, nil
}

// Write replaces the data of the secret at path. On KV v2 the write is check-and-set on version:
// 0 means the secret must not exist yet. It returns the version written (0 on KV v1).
// Errors: ErrVersionMismatch (wrapped) when the secret changed; otherwise Vault's error, wrapped.
func (s *Store) Write(ctx context.Context, path string, data map[string]any, version int) (int, error) {
	var kv *api.KVSecret
	err := s.withLogin(ctx, func() (err error) {
		if s.version == 1 {
			return s.client.KVv1(s.mount).Put(ctx, path, data)
		}
		kv, err = s.client.KVv2(s.mount).Put(ctx, path, data, api.WithCheckAndSet(version))
		return err
	})
	if err != nil {
		return 0, s.wrap("write", path, err)
	}
	if kv == nil || kv.VersionMetadata == nil {
		return 0, nil
	}
	return kv.VersionMetadata.Version, nil
}

// Update changes the existing secret at path: each key of changes is set to its value, a nil value
// removes the key, and every other key is kept (a JSON merge patch, RFC 7386). On KV v2 it is
// check-and-set on version and, unlike Write, never brings back a secret deleted since it was
// read: when the latest version is deleted or destroyed, or the secret is gone, nothing is written
// and the error matches ErrNotFound. It needs the patch capability on the data path. On KV v1,
// which has neither versions nor patch, it reads the secret and writes it whole.
// Errors: ErrVersionMismatch or ErrNotFound (wrapped); otherwise Vault's error, wrapped.
func (s *Store) Update(ctx context.Context, path string, changes map[string]any, version int) (int, error) {
	if s.version == 1 {
		cur, err := s.Read(ctx, path)
		if err != nil {
			return 0, err
		}
		for k, v := range changes {
			if v == nil {
				delete(cur.Data, k)
			} else {
				cur.Data[k] = v
			}
		}
		return s.Write(ctx, path, cur.Data, 0)
	}
	var kv *api.KVSecret
	err := s.withLogin(ctx, func() (err error) {
		kv, err = s.client.KVv2(s.mount).Patch(ctx, path, changes, api.WithCheckAndSet(version))
		return err
	})
	if err != nil {
		return 0, s.wrap("update", path, err)
	}
	if kv == nil || kv.VersionMetadata == nil {
		return 0, nil
	}
	return kv.VersionMetadata.Version, nil
}

// SetStatus merges fields into the KV v2 secret's custom metadata, where operators read a client's
// state without it reaching the data apps read; a field set to "" is removed. On KV v1, which has
// no custom metadata, it does nothing.
func (s *Store) SetStatus(ctx context.Context, path string, fields map[string]string) error {
	if s.version == 1 {
		return nil
	}
	meta := make(map[string]any, len(fields))
	for k, v := range fields {
		meta[k] = v
		if v == "" {
			meta[k] = nil // Vault refuses empty values; null removes the key (JSON merge patch)
		}
	}
	return s.wrap("write metadata of", path, s.withLogin(ctx, func() error {
		return s.client.KVv2(s.mount).PatchMetadata(ctx, path, api.KVMetadataPatchInput{CustomMetadata: meta})
	}))
}

// List returns the path, relative to prefix, of every secret below prefix, descending into
// folders, in the order Vault lists them (sorted). A prefix with nothing below it gives none.
func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	base := s.mount + "/" + prefix
	if s.version == 2 {
		base = s.mount + "/metadata/" + prefix
	}
	var out []string
	var walk func(rel string) error
	walk = func(rel string) error {
		var r *api.Secret
		err := s.withLogin(ctx, func() (err error) {
			r, err = s.client.Logical().ListWithContext(ctx, strings.TrimSuffix(base+"/"+rel, "/"))
			return err
		})
		if err != nil {
			return s.wrap("list", strings.TrimSuffix(prefix+"/"+rel, "/"), err)
		}
		if r == nil || r.Data == nil {
			return nil
		}
		keys, _ := r.Data["keys"].([]any)
		for _, k := range keys {
			name, _ := k.(string)
			switch {
			case name == "":
			case strings.HasSuffix(name, "/"):
				if err := walk(rel + name); err != nil {
					return err
				}
			default:
				out = append(out, rel+name)
			}
		}
		return nil
	}
	if err := walk(""); err != nil {
		return nil, err
	}
	return out, nil
}

// Writable reports, from Vault's capabilities endpoint, whether the job's token may write the
// secret at path: update for a secret that exists, create for one that does not. With status the
// secret is a credential secret: the job changes it with Update (patch on KV v2, update on KV v1)
// and records the rotation state in its metadata (patch, KV v2). It asks before any token
// request, so a read-only policy costs no refresh token. It answers from what PrefetchCapabilities
// learnt when it can, and otherwise asks in one request for both paths.
func (s *Store) Writable(ctx context.Context, path string, exists, status bool) error {
	data, meta := s.fullPaths(path)
	need := map[string]string{data: "update"}
	if !exists {
		need[data] = "create"
	}
	if status && s.version == 2 {
		need[meta] = "patch"
		if exists {
			need[data] = "patch"
		}
	}
	caps := map[string][]string{}
	var ask []string
	s.capsMu.RLock()
	for p := range need {
		if c, ok := s.caps[p]; ok {
			caps[p] = c
		} else {
			ask = append(ask, p)
		}
	}
	s.capsMu.RUnlock()
	if len(ask) > 0 {
		got, err := s.capabilities(ctx, ask)
		if err != nil {
			return s.wrap("check capabilities on", path, err)
		}
		for p, c := range got {
			caps[p] = c
		}
	}
	for _, p := range slices.Sorted(maps.Keys(need)) { // data before metadata: one answer each time
		want := need[p]
		if !slices.Contains(caps[p], want) && !slices.Contains(caps[p], "root") {
			return fmt.Errorf("vault policy does not allow %s on %s (capabilities: %s)", want, p, strings.Join(caps[p], ", "))
		}
	}
	return nil
}

// PrefetchCapabilities learns, in requests of up to 256 paths, the job's capabilities on the data
// and metadata of every secret at paths, so that the pre-flight of thousands of rotations costs a
// few dozen requests instead of one each. It replaces what was learnt before, and forgets it on
// an error, which Writable then meets again.
func (s *Store) PrefetchCapabilities(ctx context.Context, paths []string) {
	var all []string
	for _, p := range paths {
		data, meta := s.fullPaths(p)
		all = append(all, data)
		if s.version == 2 {
			all = append(all, meta)
		}
	}
	learnt := map[string][]string{}
	for chunk := range slices.Chunk(all, 256) {
		got, err := s.capabilities(ctx, chunk)
		if err != nil {
			s.capsMu.Lock()
			s.caps = nil // forget what an earlier pass learnt: the policy may have changed since
			s.capsMu.Unlock()
			return
		}
		for p, c := range got {
			learnt[p] = c
		}
	}
	s.capsMu.Lock()
	s.caps = learnt
	s.capsMu.Unlock()
}

// capabilities asks sys/capabilities-self about full paths.
func (s *Store) capabilities(ctx context.Context, paths []string) (map[string][]string, error) {
	list := make([]any, len(paths))
	for i, p := range paths {
		list[i] = p
	}
	var r *api.Secret
	err := s.withLogin(ctx, func() (err error) {
		r, err = s.client.Logical().WriteWithContext(ctx, "sys/capabilities-self", map[string]any{"paths": list})
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(paths))
	for _, p := range paths {
		var caps []string
		if r != nil {
			items, _ := r.Data[p].([]any)
			for _, c := range items {
				caps = append(caps, fmt.Sprint(c))
			}
		}
		out[p] = caps
	}
	return out, nil
}

// fullPaths are the API paths of a secret's data and metadata.
func (s *Store) fullPaths(path string) (data, meta string) {
	if s.version == 1 {
		return s.mount + "/" + path, ""
	}
	return s.mount + "/data/" + path, s.mount + "/metadata/" + path
}

// grant is the capability and API path a policy must allow for op on path, e.g. "read on
// secret/data/apps/acme"; "" for an op it cannot say.
func (s *Store) grant(op, path string) string {
	data, meta := s.fullPaths(path)
	switch op {
	case "read":
		return "read on " + data
	case "write":
		return "create and update on " + data
	case "update":
		if s.version == 2 {
			return "patch on " + data
		}
		return "read and update on " + data
	case "write metadata of":
		return "patch on " + meta
	case "list":
		if s.version == 2 {
			return "list on " + s.mount + "/metadata/" + path
		}
		return "list on " + data
	}
	return ""
}

func (s *Store) wrap(op, path string, err error) error {
	if err == nil {
		return nil
	}
	var re *api.ResponseError
	var de *deniedError
	switch {
	case errors.As(err, &de):
		if grant := s.grant(op, path); grant != "" {
			return fmt.Errorf("%s %s/%s: %w: the Vault policy must allow %s", op, s.mount, path, de, grant)
		}
		return fmt.Errorf("%s %s/%s: %w", op, s.mount, path, de)
	case errors.Is(err, api.ErrSecretNotFound):
		return fmt.Errorf("%s %s/%s: %w", op, s.mount, path, ErrNotFound)
	case errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && mentions(re, "check-and-set"):
		return fmt.Errorf("%s %s/%s: %w", op, s.mount, path, ErrVersionMismatch)
	}
	return fmt.Errorf("%s %s/%s: %w", op, s.mount, path, cleanError(err))
}

// cleanError shortens vault/api's multi-line response errors to one line: the status and
// Vault's messages. A failed check of Vault's TLS certificate becomes a *TLSError, which says
// which variable to set. Other errors (network) pass through.
func cleanError(err error) error {
	if te := tlsError(err); te != nil {
		return te
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		var parts []string
		for _, e := range re.Errors { // "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n" -> "permission denied, invalid token"
			var items []string
			for _, line := range strings.Split(e, "\n") {
				if item, ok := strings.CutPrefix(strings.TrimSpace(line), "* "); ok {
					items = append(items, strings.TrimSpace(item))
				}
			}
			if len(items) == 0 { // a plain message
				items = []string{strings.Join(strings.Fields(e), " ")}
			}
			parts = append(parts, strings.Join(items, ", "))
		}
		msg := strings.Join(parts, "; ")
		if msg == "" {
			msg = http.StatusText(re.StatusCode)
		}
		return &responseError{msg: fmt.Sprintf("vault said %d: %s", re.StatusCode, msg), err: re}
	}
	return err
}

// responseError is Vault's answer, on one line; it unwraps to vault/api's *api.ResponseError, so
// that Unavailable can tell its status.
type responseError struct {
	msg string
	err *api.ResponseError
}

func (e *responseError) Error() string { return e.msg }
func (e *responseError) Unwrap() error { return e.err }

// Unavailable reports whether err is Vault failing to answer rather than answering no: the
// connection failed (a node down, a standby redirecting to a leader that is gone) or Vault
// answered 5xx (sealed, no active node, an internal error), or 429 to a request a rate-limit
// quota still blocked when the request's own 15 s ran out, or that timeout ran out. A refusal, a secret not found, a
// check-and-set mismatch or a failed check of Vault's certificate is an answer, and not
// Unavailable; a connection broken after the handshake (perhaps a client certificate refused) is.
func Unavailable(err error) bool {
	var te *TLSError
	var re *api.ResponseError
	var ue *url.Error
	switch {
	case err == nil, errors.As(err, &te) && te.what == "":
		return false // a failed check of Vault's certificate: an answer
	case errors.As(err, &re):
		return re.StatusCode >= http.StatusInternalServerError && re.StatusCode != http.StatusNotImplemented ||
			re.StatusCode == http.StatusTooManyRequests // a rate-limit quota whose block outlasted the request
	case errors.Is(err, context.DeadlineExceeded):
		return true // the request's own timeout (15 s) ran out, in the client's retries or a quota's pause
	}
	return errors.As(err, &ue)
}

func mentions(re *api.ResponseError, s string) bool {
	for _, e := range re.Errors {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}

// tlsFiles names the TLS variables that are set, with the files they name (paths, never
// contents), for an error reading them; the vault client reads them when it is made.
func tlsFiles() string {
	var set []string
	for _, k := range []string{api.EnvVaultCACert, api.EnvVaultCAPath, api.EnvVaultClientCert, api.EnvVaultClientKey} {
		if v := os.Getenv(k); v != "" {
			set = append(set, k+"="+v)
		}
	}
	if len(set) == 0 {
		return "check the VAULT_ TLS variables"
	}
	return "check " + strings.Join(set, ", ")
}
