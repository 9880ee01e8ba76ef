// Package storafake is a Stora-compatible OAuth 2 token endpoint for tests and the demo. It follows
// the Stora contract (POST /oauth2/token, JSON body, 2-hour access tokens, created_at) and the
// behaviour of Doorkeeper 5.5, the server behind it, as the conformance suite pins it against the
// real server (internal/testenv): the order of its checks, its error wording, Stora's scopes,
// single-use refresh tokens revoked either on first use of the new access token (Doorkeeper's
// default, with the previous_refresh_token column) or at once, PKCE S256, and GET
// /oauth2/token/info. It counts every token request it sees, so tests can assert how many a run
// made.
package storafake

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
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

// DefaultScope is granted when a client_credentials request names no scope.
const DefaultScope = "public.contact:read"

// Scopes are the scopes the server knows: public.<resource>:read|write for Stora's resources.
var Scopes = func() map[string]bool {
	m := map[string]bool{}
	for _, r := range strings.Fields(`contact contract contract_template coupon credit_note deal
		identity_verification image invoice note order product product_category protection_level site
		staff subscription task tenancy timeline unit unit_allocation unit_type webhook_endpoint`) {
		m["public."+r+":read"], m["public."+r+":write"] = true, true
	}
	return m
}()

// Server is the fake token endpoint. Create it with New; serve it with Handler.
type Server struct {
	// TTL is the access token lifetime; New sets 2 hours.
	TTL time.Duration
	// RevokeImmediately retires a refresh token as soon as it is used (Doorkeeper without the
	// previous_refresh_token column). When false, the old refresh token is retired when the new
	// access token is first presented at /oauth2/token/info (Doorkeeper's default).
	RevokeImmediately bool
	// ReuseAccessToken returns the current client_credentials token again, with its remaining
	// expires_in (Doorkeeper's reuse_access_token).
	ReuseAccessToken bool
	// Now is the clock; New sets time.Now.
	Now func() time.Time
	// Intercept, when set, sees every token request first; if it answers the request (returns
	// true), the server does not. Fault tests use it to send 429s and to hold requests.
	Intercept func(w http.ResponseWriter, r *http.Request) bool
	// Issued, when set, is called with each refresh token issued by a grant, after the server has
	// committed it and before the response is written.
	Issued func(clientID, refreshToken string)
	// KeepRefreshToken makes a refresh_token grant hand back the refresh token it was sent, which
	// stays valid: a server that does not rotate refresh tokens (RFC 6749 §6 allows it).
	// OmitRefreshToken does the same but leaves refresh_token out of the response. Both off by
	// default: Doorkeeper rotates.
	KeepRefreshToken, OmitRefreshToken bool
	// Extra, when set, is added to every JSON body the token endpoint answers, success or error:
	// members such as id_token, or ones no RFC defines, that the client must neither store nor log.
	Extra map[string]any

	mu         sync.Mutex
	refreshTTL time.Duration           // SetRefreshTokenTTL
	apps       map[string]*application // by client_id
	codes      map[string]*grant
	tokens     map[string]*token // by access token
	refresh    map[string]*token // by refresh token
	requests   []Request
}

// Request is one request the server saw at /oauth2/token.
type Request struct {
	At        time.Time
	GrantType string
	Status    int
	// Params are the request's parameters as the server read them (query, body, Basic header);
	// a JSON array's strings are under its key with "[]" appended (resource[]). Nil for a request
	// Intercept answered.
	Params url.Values
}

type application struct {
	secret      string
	redirectURI string
	scopes      []string // empty: any scope the server knows
}

type grant struct {
	clientID    string
	scope       string
	redirectURI string
	challenge   string // PKCE S256 code_challenge
	expires     time.Time
	revoked     bool
}

// token is an access token row, with its refresh token, as Doorkeeper stores them.
type token struct {
	clientID     string
	scope        string
	created      time.Time
	ttl          time.Duration
	refreshToken string
	refreshUntil time.Time // when refreshToken expires; zero: never (Stora's)
	previousRT   string    // retired on first use of this token (revoke-on-use mode)
	revoked      bool
}

// New returns an empty server with 2-hour tokens in Doorkeeper's default revocation mode.
func New() *Server {
	return &Server{
		TTL:     2 * time.Hour,
		Now:     time.Now,
		apps:    map[string]*application{},
		codes:   map[string]*grant{},
		tokens:  map[string]*token{},
		refresh: map[string]*token{},
	}
}

// AddClient registers an application that may use any scope and returns its credentials.
func (s *Server) AddClient() (id, secret string) {
	return s.AddApplication("", "")
}

// AddApplication registers an application with a redirect URI and space-separated scopes (empty:
// any scope the server knows), and returns its client_id and client_secret.
func (s *Server) AddApplication(redirectURI, scopes string) (id, secret string) {
	id, secret = randomToken(), randomToken()
	s.AddClientWith(id, secret)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[id].redirectURI, s.apps[id].scopes = redirectURI, strings.Fields(scopes)
	return id, secret
}

// AddClientWith registers an application with the given credentials and any scope.
func (s *Server) AddClientWith(id, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[id] = &application{secret: secret}
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
	s.codes[code] = &grant{clientID: clientID, scope: normalize(scope), redirectURI: redirectURI,
		challenge: challenge, expires: s.Now().Add(600 * time.Second)}
}

// SetRefreshTokenTTL makes refresh tokens issued from now on expire ttl after they are issued, as
// servers other than Stora do (GitHub Apps, for one): the token response says when in
// refresh_token_expires_in, and a refresh with an expired one is refused with invalid_grant. Zero,
// the default, is Stora's contract: refresh tokens do not expire and responses do not carry the
// member.
func (s *Server) SetRefreshTokenTTL(ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshTTL = ttl
}

// IssueTokenPair creates an access token and refresh token for clientID, as a past authorization
// would have.
func (s *Server) IssueTokenPair(clientID, scope string) (accessToken, refreshToken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, t := s.issue(clientID, normalize(scope), s.TTL, true, "")
	return at, t.refreshToken
}

// IssueRefreshToken is IssueTokenPair's refresh token.
func (s *Server) IssueRefreshToken(clientID, scope string) string {
	_, rt := s.IssueTokenPair(clientID, scope)
	return rt
}

// RevokeRefreshToken retires a refresh token (and its access token), as an operator revoking the
// integration would.
func (s *Server) RevokeRefreshToken(rt string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.refresh[rt]; t != nil {
		t.revoked = true
	}
}

// RefreshTokenValid reports whether rt would be accepted by a refresh_token grant now.
func (s *Server) RefreshTokenValid(rt string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.refresh[rt]
	return t != nil && !t.revoked
}

// Requests returns a copy of every request seen at /oauth2/token, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Handler serves POST /oauth2/token and GET /oauth2/token/info; anything else is 404.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch path := strings.TrimSuffix(r.URL.Path, "/"); {
		case r.Method == http.MethodPost && path == "/oauth2/token":
			s.serveToken(w, r)
		case r.Method == http.MethodGet && path == "/oauth2/token/info":
			s.serveInfo(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	if s.Intercept != nil {
		rec := &statusRecorder{ResponseWriter: w}
		if s.Intercept(rec, r) {
			s.mu.Lock()
			s.requests = append(s.requests, Request{At: s.Now(), GrantType: "", Status: rec.status})
			s.mu.Unlock()
			return
		}
	}
	p, ok := params(r)
	status, body := 400, map[string]any(nil) // Rails answers unparseable JSON with an empty 400
	switch {
	case ok && p.Get(twoMethods) != "":
		// RFC 6749 §2.3 and §5.2, as oidc-provider answers (Doorkeeper 5.5 lets the header win)
		p.Del(twoMethods)
		status, body = oauthError(400, "invalid_request", "Client authentication must use only one method: a Basic header or client_secret in the body.")
	case ok:
		status, body = s.token(p)
	}
	s.mu.Lock()
	s.requests = append(s.requests, Request{At: s.Now(), GrantType: p.Get("grant_type"), Status: status, Params: p})
	extra := s.Extra
	s.mu.Unlock()
	if body == nil {
		w.WriteHeader(status)
		return
	}
	for k, v := range extra {
		body[k] = v
	}
	if rt, _ := body["refresh_token"].(string); rt != "" && s.Issued != nil && p.Get("grant_type") != "" {
		s.Issued(p.Get("client_id"), rt)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, status, body)
}

// twoMethods marks parameters read from a request that authenticated the client twice.
const twoMethods = "\x00two-methods"

// jsonTypes are the media types Rails parses as JSON.
var jsonTypes = map[string]bool{"application/json": true, "text/x-json": true, "application/jsonrequest": true}

// params reads the request as Rails does: the query string, then the body over it (JSON only
// under a JSON content type, form otherwise; a JSON value that is not an object gives no
// parameters). It reports false for a JSON body that does not parse. Client credentials in a
// Basic header (form-encoded, RFC 6749 §2.3.1) are used; with a client_secret in the body too,
// the request is marked with twoMethods, and refused (invalid_request).
func params(r *http.Request) (url.Values, bool) {
	p := url.Values{}
	for k, v := range r.URL.Query() {
		p[k] = v
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if jsonTypes[mt] {
		var v any
		data, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if json.Unmarshal(data, &v) != nil {
			return p, false
		}
		m, _ := v.(map[string]any)
		for k, v := range m {
			switch v := v.(type) {
			case string:
				p.Set(k, v)
			case []any:
				// Not a parameter the checks read (Rails would hand Doorkeeper an array): kept
				// for Requests only, under the key with [] appended.
				for _, e := range v {
					if s, ok := e.(string); ok {
						p.Add(k+"[]", s)
					}
				}
			}
		}
	} else if r.ParseForm() == nil {
		for k, v := range r.PostForm {
			p[k] = v
		}
	}
	if id, secret, ok := r.BasicAuth(); ok {
		if p.Get("client_secret") != "" {
			// RFC 6749 §2.3: a client must not use more than one authentication method in a
			// request (oidc-provider and Doorkeeper 5.9.5+ refuse; 5.5 lets the header win).
			p.Set(twoMethods, "1")
			return p, true
		}
		// RFC 6749 §2.3.1: id and secret are form-encoded before base64.
		if v, err := url.QueryUnescape(id); err == nil {
			id = v
		}
		if v, err := url.QueryUnescape(secret); err == nil {
			secret = v
		}
		p.Set("client_id", id)
		p.Set("client_secret", secret)
	}
	return p, true
}

func (s *Server) token(p url.Values) (int, map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch p.Get("grant_type") {
	case "":
		return oauthError(400, "invalid_request", "Missing required parameter: grant_type.")
	case "client_credentials":
		return s.clientCredentials(p)
	case "authorization_code":
		return s.authorizationCode(p)
	case "refresh_token":
		return s.refreshToken(p)
	}
	return oauthError(400, "unsupported_grant_type", descUnsupported)
}

// client returns the application the request's credentials authenticate, or nil.
func (s *Server) client(p url.Values) *application {
	a := s.apps[p.Get("client_id")]
	if a == nil || p.Get("client_secret") == "" || a.secret != p.Get("client_secret") {
		return nil
	}
	return a
}

// Doorkeeper's client_credentials checks: client, then scopes.
func (s *Server) clientCredentials(p url.Values) (int, map[string]any) {
	app := s.client(p)
	if app == nil {
		return oauthError(401, "invalid_client", descInvalidClient)
	}
	scope := normalize(p.Get("scope"))
	if scope == "" {
		scope = app.allowed(DefaultScope)
	} else if !app.permits(scope) {
		return oauthError(400, "invalid_scope", descInvalidScope)
	}
	if s.ReuseAccessToken {
		if at, t := s.reusable(p.Get("client_id"), scope, false); t != nil {
			return 200, s.tokenBody(at, t)
		}
	}
	at, t := s.issue(p.Get("client_id"), scope, s.TTL, false, "")
	return 200, s.tokenBody(at, t)
}

// Doorkeeper's authorization_code checks: parameters (code, the verifier a PKCE code needs,
// redirect_uri), then client, then the code, the redirect URI and the verifier.
func (s *Server) authorizationCode(p url.Values) (int, map[string]any) {
	if p.Get("code") == "" {
		return oauthError(400, "invalid_request", "Missing required parameter: code.")
	}
	g := s.codes[p.Get("code")]
	if g != nil && g.challenge != "" && p.Get("code_verifier") == "" {
		return oauthError(400, "invalid_request", "Missing required parameter: code_verifier.")
	}
	if p.Get("redirect_uri") == "" {
		return oauthError(400, "invalid_request", "Missing required parameter: redirect_uri.")
	}
	if s.client(p) == nil {
		return oauthError(401, "invalid_client", descInvalidClient)
	}
	if g == nil || g.revoked || g.clientID != p.Get("client_id") || !s.Now().Before(g.expires) ||
		g.redirectURI != p.Get("redirect_uri") || !verifierMatches(g.challenge, p.Get("code_verifier")) {
		return oauthError(400, "invalid_grant", descInvalidGrant)
	}
	g.revoked = true
	if s.ReuseAccessToken {
		if at, t := s.reusable(g.clientID, g.scope, true); t != nil {
			return 200, s.tokenBody(at, t)
		}
	}
	at, t := s.issue(g.clientID, g.scope, s.TTL, true, "")
	return 200, s.tokenBody(at, t)
}

// Doorkeeper's refresh_token checks: presence, the refresh token, the client (skipped when the
// request carries no credentials), that the token is the client's, then scope.
func (s *Server) refreshToken(p url.Values) (int, map[string]any) {
	rt := p.Get("refresh_token")
	if rt == "" {
		return oauthError(400, "invalid_request", "Missing required parameter: refresh_token.")
	}
	old := s.refresh[rt]
	if old == nil || old.revoked || !old.refreshUntil.IsZero() && !s.Now().Before(old.refreshUntil) {
		return oauthError(400, "invalid_grant", descInvalidGrant)
	}
	hasCredentials := p.Get("client_id") != ""
	if hasCredentials && s.client(p) == nil {
		return oauthError(401, "invalid_client", descInvalidClient)
	}
	if !hasCredentials || old.clientID != p.Get("client_id") {
		return oauthError(400, "invalid_grant", descInvalidGrant)
	}
	scope := old.scope
	if req := normalize(p.Get("scope")); req != "" {
		if !subset(req, old.scope) {
			return oauthError(400, "invalid_scope", descInvalidScope)
		}
		scope = req
	}
	if s.KeepRefreshToken || s.OmitRefreshToken {
		// No rotation: a new access token under the same refresh token, which stays valid.
		at, t := s.issue(old.clientID, scope, old.ttl, false, "")
		t.refreshToken = rt
		s.refresh[rt] = t
		body := s.tokenBody(at, t)
		if s.OmitRefreshToken {
			delete(body, "refresh_token")
		}
		return 200, body
	}
	previous := ""
	if s.RevokeImmediately {
		old.revoked = true
	} else {
		previous = rt
	}
	at, t := s.issue(old.clientID, scope, old.ttl, true, previous)
	return 200, s.tokenBody(at, t)
}

// issue creates an access token (and a refresh token when withRefresh). The caller holds mu.
func (s *Server) issue(clientID, scope string, ttl time.Duration, withRefresh bool, previousRT string) (string, *token) {
	t := &token{clientID: clientID, scope: scope, created: s.Now(), ttl: ttl, previousRT: previousRT}
	if withRefresh {
		t.refreshToken = randomToken()
		s.refresh[t.refreshToken] = t
		if s.refreshTTL > 0 {
			t.refreshUntil = t.created.Add(s.refreshTTL)
		}
	}
	at := randomToken()
	s.tokens[at] = t
	return at, t
}

func (t *token) expires() time.Time { return t.created.Add(t.ttl) }

// reusable finds a live token for reuse_access_token: same application, same scopes, and the
// same kind of owner (an operator's authorization, or the client itself).
func (s *Server) reusable(clientID, scope string, forOwner bool) (string, *token) {
	for at, t := range s.tokens {
		if t.clientID == clientID && sameScopes(t.scope, scope) && (t.refreshToken != "") == forOwner &&
			!t.revoked && s.Now().Before(t.expires()) {
			return at, t
		}
	}
	return "", nil
}

// tokenBody is Doorkeeper's token response; blank keys are omitted, never null.
func (s *Server) tokenBody(at string, t *token) map[string]any {
	body := map[string]any{
		"access_token": at,
		"token_type":   "Bearer",
		"expires_in":   max(0, int64(t.expires().Sub(s.Now()).Round(time.Second)/time.Second)),
		"created_at":   t.created.Unix(),
	}
	if t.scope != "" {
		body["scope"] = t.scope
	}
	if t.refreshToken != "" {
		body["refresh_token"] = t.refreshToken
		if !t.refreshUntil.IsZero() {
			body["refresh_token_expires_in"] = max(0, int64(t.refreshUntil.Sub(s.Now()).Round(time.Second)/time.Second))
		}
	}
	return body
}

// serveInfo is Doorkeeper's token info endpoint. Presenting an access token here, even one that is
// revoked or expired, retires the refresh token it replaced, in the revoke-on-use mode.
func (s *Server) serveInfo(w http.ResponseWriter, r *http.Request) {
	at, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	for _, k := range []string{"access_token", "bearer_token"} { // Doorkeeper's other token methods
		if q := r.URL.Query().Get(k); !ok && q != "" {
			at, ok = q, true
		}
	}
	s.mu.Lock()
	t := s.tokens[at]
	if ok && t != nil && t.previousRT != "" {
		if old := s.refresh[t.previousRT]; old != nil {
			old.revoked = true
		}
		t.previousRT = ""
	}
	if !ok || t == nil || t.revoked || !s.Now().Before(t.expires()) {
		s.mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Bearer realm="Doorkeeper", error="invalid_token", error_description="`+descInvalidToken+`"`)
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		writeJSON(w, 401, map[string]any{"error": "invalid_token", "error_description": descInvalidToken, "state": "unauthorized"})
		return
	}
	var owner any
	if t.refreshToken != "" {
		owner = 1 // code-flow tokens belong to the operator who authorized; the fake has one
	}
	body := map[string]any{
		"resource_owner_id": owner,
		"scope":             strings.Fields(t.scope),
		"expires_in":        int64(t.expires().Sub(s.Now()).Round(time.Second) / time.Second),
		"application":       map[string]any{"uid": t.clientID},
		"created_at":        t.created.Unix(),
	}
	s.mu.Unlock()
	w.Header().Set("Cache-Control", "max-age=0, private, must-revalidate")
	writeJSON(w, 200, body)
}

// permits reports whether every scope requested is known to the server and granted to the app.
func (a *application) permits(scope string) bool {
	for _, sc := range strings.Fields(scope) {
		if !Scopes[sc] || (len(a.scopes) > 0 && !slices.Contains(a.scopes, sc)) {
			return false
		}
	}
	return true
}

// allowed narrows scope to the app's scopes, as Doorkeeper narrows its default scopes.
func (a *application) allowed(scope string) string {
	if len(a.scopes) == 0 {
		return scope
	}
	var out []string
	for _, sc := range strings.Fields(scope) {
		if slices.Contains(a.scopes, sc) {
			out = append(out, sc)
		}
	}
	return strings.Join(out, " ")
}

// statusRecorder remembers the status an Intercept wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func oauthError(status int, code, desc string) (int, map[string]any) {
	return status, map[string]any{"error": code, "error_description": desc}
}

func writeJSON(w http.ResponseWriter, status int, body map[string]any) {
	if code, ok := body["error"].(string); ok && code != "invalid_token" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="Doorkeeper", error="`+code+`", error_description="`+body["error_description"].(string)+`"`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// normalize is Doorkeeper's scope string: words separated by one space, duplicates dropped.
func normalize(scope string) string {
	var out []string
	for _, s := range strings.Fields(scope) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return strings.Join(out, " ")
}

func sameScopes(a, b string) bool { return subset(a, b) && subset(b, a) }

func subset(requested, granted string) bool {
	have := strings.Fields(granted)
	for _, s := range strings.Fields(requested) {
		if !slices.Contains(have, s) {
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
