// Package config loads token-rotator's YAML configuration in one fixed order: defaults, then the
// file over them (unknown keys rejected), then ${VAR} expansion from the environment, then
// validation that names the field at fault. Every error carries file:line:column.
package config

import (
	"time"

	"github.com/robfig/cron/v3"
)

// DefaultTokenURL is the Stora Public API token endpoint.
const DefaultTokenURL = "https://public-api.stora.co/oauth2/token"

// Grants a client may be configured with.
const (
	GrantClientCredentials = "client_credentials"
	GrantAuthorizationCode = "authorization_code"
)

// Token endpoint client authentication methods (RFC 7591 §2) and request body encodings.
const (
	AuthClientSecretPost  = "client_secret_post"
	AuthClientSecretBasic = "client_secret_basic"
	AuthNone              = "none"
	EncodingJSON          = "json"
	EncodingForm          = "form"
)

// Vault auth methods.
const (
	AuthToken      = "token"
	AuthKubernetes = "kubernetes"
	AuthAppRole    = "approle"
)

// Config is a loaded, validated configuration.
type Config struct {
	// File is the path the configuration was read from.
	File string
	// TokenURL is the default token endpoint for clients that name none; empty when Issuer is set.
	TokenURL string
	// Issuer is the default authorization server for clients that name neither token_url nor
	// issuer: its token endpoint (and authorize endpoint) are read from its metadata each pass.
	Issuer string
	// AuthorizeURL is where `token-rotator authorize` sends an operator to approve a partner
	// whose client names no token_url of its own; default: TokenURL with its last path element
	// "token" replaced by "authorize". Client.AuthorizeURL is what authorize uses.
	AuthorizeURL string
	// AuthMethod and Encoding are the defaults for clients that name none: AuthClientSecretPost
	// and EncodingJSON, Stora's.
	AuthMethod string
	Encoding   string
	// Audience and Resources are the defaults for clients that name none: extra token request
	// parameters (see Client).
	Audience  string
	Resources []string
	// Schedule is the daemon's cron spec as written; Cron is it parsed, in UTC unless the spec
	// starts with CRON_TZ= or TZ=.
	Schedule string
	Cron     cron.Schedule
	// RenewBefore: an access token with less than this left of its life is rotated.
	RenewBefore time.Duration
	// Concurrency is how many rotations run at once.
	Concurrency int
	// RateLimit caps token requests per token URL.
	RateLimit RateLimit
	// PassDeadline ends a pass: rotations not started by then wait for the next pass.
	PassDeadline time.Duration
	// RefreshWarning: status and validate warn of a stored refresh token expiry (servers that send
	// refresh_token_expires_in) less than this away; 0 turns the warning off. Default 24h.
	RefreshWarning time.Duration
	Vault          Vault
	Clients        []Client
}

// RateLimit is a token endpoint's published request limits, per token URL; the job keeps under
// both. The default is Stora's: 10 per second and 60 per minute. Zero turns a limit off; both zero
// turn limiting off.
type RateLimit struct {
	PerSecond float64
	PerMinute float64
}

// Vault says where the store is and how to log in to it.
type Vault struct {
	// Address of the Vault server; empty means VAULT_ADDR, as the vault CLI reads it.
	Address string
	Auth    Auth
	// KVMount is the mount path of the KV secrets engine holding every path below; version 1 or 2
	// is detected from the mount.
	KVMount string
}

// Auth is the Vault auth method and its parameters.
type Auth struct {
	Method string // AuthToken, AuthKubernetes or AuthAppRole
	// TokenFile (token): a file holding the Vault token; empty means VAULT_TOKEN.
	TokenFile string
	// Role (kubernetes): the Vault role to log in as.
	Role string
	// Mount (kubernetes, approle): the auth method's mount path.
	Mount string
	// JWTFile (kubernetes): the service account token file.
	JWTFile string
	// RoleID and SecretIDFile (approle).
	RoleID       string
	SecretIDFile string
}

// WithDefaults returns a with the defaults of its method filled in: method token when none is
// given; the auth mount (kubernetes, approle: the method's name) and the service account token
// file (kubernetes: /var/run/secrets/kubernetes.io/serviceaccount/token) when empty.
func (a Auth) WithDefaults() Auth {
	switch a.Method {
	case "":
		a.Method = AuthToken
	case AuthKubernetes:
		a.Mount = defaultString(a.Mount, "kubernetes")
		a.JWTFile = defaultString(a.JWTFile, "/var/run/secrets/kubernetes.io/serviceaccount/token")
	case AuthAppRole:
		a.Mount = defaultString(a.Mount, "approle")
	}
	return a
}

// Client is one OAuth 2 client whose access token the job keeps fresh.
type Client struct {
	// Name is unique among clients, of [a-z0-9-_.].
	Name string
	// Grant is GrantClientCredentials or GrantAuthorizationCode.
	Grant string
	// Scope is space-separated (RFC 6749 §3.3); required for client_credentials, optional on refresh.
	Scope string
	// Secret is the KV path holding client_id, client_secret and, for authorization_code,
	// refresh_token or code + redirect_uri [+ code_verifier].
	Secret string
	// Output is the KV path the access token is written to for apps; defaults to Secret.
	Output string
	// TokenURL is this client's token endpoint; defaults to Config.TokenURL. Empty when Issuer
	// is set: the pass fills it in from the issuer's metadata.
	TokenURL string
	// Issuer is this client's authorization server (its own issuer, else Config.Issuer when it
	// has no token_url of its own), whose metadata (RFC 8414, else OpenID Connect Discovery) names
	// its token and authorize endpoints. Empty for a client with a token URL.
	Issuer string
	// AuthorizeURL is where `token-rotator authorize` sends an operator to approve this
	// (authorization_code) client: its own authorize_url; else, when it has a token_url of its
	// own, that URL with its last path element "token" replaced by "authorize"; else
	// Config.AuthorizeURL. Empty for a client with an issuer and no authorize_url: the issuer's
	// authorization_endpoint is used.
	AuthorizeURL string
	// AuthMethod is how the client authenticates at the token endpoint: AuthClientSecretPost
	// (client_id and client_secret in the body), AuthClientSecretBasic (HTTP Basic) or AuthNone (a
	// public client: client_id only, PKCE on the code exchange). Defaults to Config.AuthMethod.
	AuthMethod string
	// Encoding is the token request body's: EncodingJSON or EncodingForm. Defaults to Config.Encoding.
	Encoding string
	// Audience, when set, is sent as the audience parameter with every token request of this
	// client, and in the authorization URL `authorize` builds. Defaults to Config.Audience.
	Audience string
	// Resources, when set, are sent as resource parameters (RFC 8707: absolute URIs without a
	// fragment) with every token request of this client, and in the authorization URL.
	// Defaults to Config.Resources; a client's own list replaces it, never adds to it.
	Resources []string
	// Connections is a KV path prefix (authorization_code only): every secret below it is one
	// connection, an operator who authorized the partner, with its own refresh_token (or code +
	// redirect_uri [+ code_verifier]), sharing client_id and client_secret from Secret. Listed
	// anew each pass. Empty for a client with a single token.
	Connections string
	// OutputPrefix is where each connection's access token goes, at the connection's path
	// relative to Connections; empty means the connection's own secret.
	OutputPrefix string
}

// Client returns the client named name, or nil.
func (c *Config) Client(name string) *Client {
	for i := range c.Clients {
		if c.Clients[i].Name == name {
			return &c.Clients[i]
		}
	}
	return nil
}
