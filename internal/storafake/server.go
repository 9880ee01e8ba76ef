// Package storafake is a Stora-compatible OAuth 2 token endpoint for tests and the demo. It follows
// the Stora contract (POST /oauth2/token, JSON body, 2-hour access tokens, created_at) and the
// behaviour of Doorkeeper, the server behind it: 401 invalid_client with Doorkeeper's wording,
// single-use refresh tokens revoked either on first use of the new access token (Doorkeeper's
// default, with the previous_refresh_token column) or at once, PKCE S256, and GET /oauth2/token/info.
// It counts every request it sees, so tests can assert how many token requests a run made.
package storafake

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Doorkeeper 5.5's error descriptions, word for word.
const (
	descInvalidClient = "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method."
	descInvalidGrant  = "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client."
	descInvalidScope  = "The requested scope is invalid, unknown, or malformed."
	descUnsupported   = "The authorization grant type is not supported by the authorization server."
	descInvalidToken  = "The access token is invalid"
)

var storaScope = regexp.MustCompile(`^public\.[a-z_]+:(read|write)$`)

// Server is the fake token endpoint. Create it with New; serve it with Handler.
type Server struct {
	// TTL is the access token lifetime; New sets 2 hours.
	TTL time.Duration
	// RevokeImmediately retires a refresh token as soon as it is used (Doorkeeper without the
	// previous_refresh_token column). When false, the old refresh token is retired when the new
	// access token is first used at /oauth2/token/info (Doorkeeper's default).
	RevokeImmediately bool
	// ReuseAccessToken returns the current client_credentials token again, with its remaining
	// expires_in (Doorkeeper's reuse_access_token).
	ReuseAccessToken bool
	// Now is the clock; New sets time.Now.
	Now func() time.Time

	mu       sync.Mutex
	clients  map[string]string // client_id -> client_secret
	codes    map[string]*grant
	refresh  map[string]*grant
	access   map[string]*accessToken
	requests []Request
}

// Request is one request the server saw at /oauth2/token.
type Request struct {
	At        time.Time
	GrantType string
	Status    int
}

type grant struct {
	clientID    string
	scope       string
	redirectURI string
	challenge   string // PKCE S256 code_challenge, codes only
	expires     time.Time
	revoked     bool
}

type accessToken struct {
	clientID     string
	scope        string
	created      time.Time
	expires      time.Time
	previousRT   string // refresh token to retire on first use (revoke-on-use mode)
	refreshToken string
}

// New returns an empty server with 2-hour tokens in Doorkeeper's default revocation mode.
func New() *Server {
	return &Server{
		TTL:     2 * time.Hour,
		Now:     time.Now,
		clients: map[string]string{},
		codes:   map[string]*grant{},
		refresh: map[string]*grant{},
		access:  map[string]*accessToken{},
	}
}

// AddClient registers an application and returns its client_id and client_secret.
func (s *Server) AddClient() (id, secret string) {
	id, secret = randomToken(), randomToken()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[id] = secret
	return id, secret
}

// AddClientWith registers an application with the given credentials.
func (s *Server) AddClientWith(id, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[id] = secret
}

// IssueCode creates an authorization code, as the authorize endpoint would after an operator
// consents. challenge is a PKCE S256 code_challenge, or empty. Codes expire after 600 s.
func (s *Server) IssueCode(clientID, redirectURI, scope, challenge string) string {
	code := randomToken()
	s.AddCode(clientID, code, redirectURI, scope, challenge)
	return code
}

// AddCode is IssueCode with a code of the caller's choosing.
func (s *Server) AddCode(clientID, code, redirectURI, scope, challenge string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = &grant{clientID: clientID, scope: scope, redirectURI: redirectURI,
		challenge: challenge, expires: s.Now().Add(600 * time.Second)}
}

// IssueRefreshToken creates a refresh token for clientID, as a past authorization would have.
func (s *Server) IssueRefreshToken(clientID, scope string) string {
	rt := randomToken()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh[rt] = &grant{clientID: clientID, scope: scope}
	return rt
}

// RevokeRefreshToken retires a refresh token, as an operator revoking the integration would.
func (s *Server) RevokeRefreshToken(rt string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.refresh[rt]; g != nil {
		g.revoked = true
	}
}

// RefreshTokenValid reports whether rt would be accepted by a refresh_token grant now.
func (s *Server) RefreshTokenValid(rt string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.refresh[rt]
	return g != nil && !g.revoked
}

// Requests returns a copy of every request seen at /oauth2/token, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Handler serves POST /oauth2/token and GET /oauth2/token/info.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth2/token", s.serveToken)
	mux.HandleFunc("GET /oauth2/token/info", s.serveInfo)
	return mux
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	p := params(r)
	status, body := s.token(p)
	s.mu.Lock()
	s.requests = append(s.requests, Request{At: s.Now(), GrantType: p["grant_type"], Status: status})
	s.mu.Unlock()
	writeJSON(w, status, body)
}

// params reads the body as Doorkeeper does: JSON only under a JSON content type, form otherwise;
// client credentials from a Basic header win over the body.
func params(r *http.Request) map[string]string {
	p := map[string]string{}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "application/json" {
		var m map[string]any
		_ = json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20)).Decode(&m)
		for k, v := range m {
			if s, ok := v.(string); ok {
				p[k] = s
			}
		}
	} else if r.ParseForm() == nil {
		for k := range r.PostForm {
			p[k] = r.PostForm.Get(k)
		}
	}
	if id, secret, ok := r.BasicAuth(); ok {
		p["client_id"], p["client_secret"] = id, secret
	}
	return p
}

func (s *Server) token(p map[string]string) (int, map[string]any) {
	if p["grant_type"] == "" {
		return oauthError(400, "invalid_request", "Missing required parameter: grant_type.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch p["grant_type"] {
	case "client_credentials", "authorization_code", "refresh_token":
	default:
		return oauthError(400, "unsupported_grant_type", descUnsupported)
	}
	secret, ok := s.clients[p["client_id"]]
	if !ok || p["client_secret"] == "" || secret != p["client_secret"] {
		return oauthError(401, "invalid_client", descInvalidClient)
	}
	switch p["grant_type"] {
	case "client_credentials":
		return s.clientCredentials(p)
	case "authorization_code":
		return s.authorizationCode(p)
	default:
		return s.refreshToken(p)
	}
}

func (s *Server) clientCredentials(p map[string]string) (int, map[string]any) {
	scope := p["scope"]
	if scope == "" {
		scope = "public.contact:read"
	}
	if !validScope(scope) {
		return oauthError(400, "invalid_scope", descInvalidScope)
	}
	if s.ReuseAccessToken {
		for at, t := range s.access {
			if t.clientID == p["client_id"] && t.scope == scope && t.refreshToken == "" && s.Now().Before(t.expires) {
				return 200, s.tokenBody(at, t)
			}
		}
	}
	return 200, s.issue(p["client_id"], scope, false, "")
}

func (s *Server) authorizationCode(p map[string]string) (int, map[string]any) {
	for _, k := range []string{"code", "redirect_uri"} {
		if p[k] == "" {
			return oauthError(400, "invalid_request", "Missing required parameter: "+k+".")
		}
	}
	g := s.codes[p["code"]]
	if g != nil && g.challenge != "" && p["code_verifier"] == "" {
		return oauthError(400, "invalid_request", "Missing required parameter: code_verifier.")
	}
	if g == nil || g.revoked || g.clientID != p["client_id"] || g.redirectURI != p["redirect_uri"] ||
		!s.Now().Before(g.expires) || !verifierMatches(g.challenge, p["code_verifier"]) {
		return oauthError(400, "invalid_grant", descInvalidGrant)
	}
	g.revoked = true
	return 200, s.issue(g.clientID, g.scope, true, "")
}

func (s *Server) refreshToken(p map[string]string) (int, map[string]any) {
	if p["refresh_token"] == "" {
		return oauthError(400, "invalid_request", "Missing required parameter: refresh_token.")
	}
	g := s.refresh[p["refresh_token"]]
	if g == nil || g.revoked || g.clientID != p["client_id"] {
		return oauthError(400, "invalid_grant", descInvalidGrant)
	}
	scope := g.scope
	if p["scope"] != "" {
		if !subset(p["scope"], g.scope) {
			return oauthError(400, "invalid_scope", descInvalidScope)
		}
		scope = p["scope"]
	}
	previous := ""
	if s.RevokeImmediately {
		g.revoked = true
	} else {
		previous = p["refresh_token"]
	}
	return 200, s.issue(g.clientID, scope, true, previous)
}

// issue creates an access token (and a refresh token when withRefresh) and returns the body.
func (s *Server) issue(clientID, scope string, withRefresh bool, previousRT string) map[string]any {
	now := s.Now()
	t := &accessToken{clientID: clientID, scope: scope, created: now, expires: now.Add(s.TTL), previousRT: previousRT}
	if withRefresh {
		t.refreshToken = randomToken()
		s.refresh[t.refreshToken] = &grant{clientID: clientID, scope: scope}
	}
	at := randomToken()
	s.access[at] = t
	return s.tokenBody(at, t)
}

func (s *Server) tokenBody(at string, t *accessToken) map[string]any {
	body := map[string]any{
		"access_token": at,
		"token_type":   "Bearer",
		"expires_in":   int64(t.expires.Sub(s.Now()).Round(time.Second) / time.Second),
		"scope":        t.scope,
		"created_at":   t.created.Unix(),
	}
	if t.refreshToken != "" {
		body["refresh_token"] = t.refreshToken
	}
	return body
}

// serveInfo is Doorkeeper's token info endpoint. A valid access token's first use here retires the
// refresh token it replaced, in the revoke-on-use mode.
func (s *Server) serveInfo(w http.ResponseWriter, r *http.Request) {
	at, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	t := s.access[at]
	if !ok || t == nil || !s.Now().Before(t.expires) {
		s.mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Bearer realm="Doorkeeper", error="invalid_token", error_description="`+descInvalidToken+`"`)
		writeJSON(w, 401, map[string]any{"error": "invalid_token", "error_description": descInvalidToken})
		return
	}
	if t.previousRT != "" {
		if g := s.refresh[t.previousRT]; g != nil {
			g.revoked = true
		}
		t.previousRT = ""
	}
	body := map[string]any{
		"resource_owner_id": nil,
		"scope":             strings.Fields(t.scope),
		"expires_in":        int64(t.expires.Sub(s.Now()) / time.Second),
		"application":       map[string]any{"uid": t.clientID},
		"created_at":        t.created.Unix(),
	}
	s.mu.Unlock()
	writeJSON(w, 200, body)
}

func oauthError(status int, code, desc string) (int, map[string]any) {
	return status, map[string]any{"error": code, "error_description": desc}
}

func writeJSON(w http.ResponseWriter, status int, body map[string]any) {
	if code, ok := body["error"].(string); ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="Doorkeeper", error="`+code+`", error_description="`+body["error_description"].(string)+`"`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func validScope(scope string) bool {
	f := strings.Fields(scope)
	for _, s := range f {
		if !storaScope.MatchString(s) {
			return false
		}
	}
	return len(f) > 0
}

func subset(requested, granted string) bool {
	have := map[string]bool{}
	for _, s := range strings.Fields(granted) {
		have[s] = true
	}
	for _, s := range strings.Fields(requested) {
		if !have[s] {
			return false
		}
	}
	return true
}

// verifierMatches is Doorkeeper's PKCE check: no challenge wants no verifier; S256 otherwise.
func verifierMatches(challenge, verifier string) bool {
	if challenge == "" {
		return verifier == ""
	}
	return S256(verifier) == challenge
}

// S256 is the PKCE code_challenge for a code_verifier (RFC 7636 §4.2).
func S256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// randomToken returns 43 characters of URL-safe base64, the shape of Doorkeeper's tokens.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
