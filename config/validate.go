package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
)

var clientName = regexp.MustCompile(`^[a-z0-9_.-]+$`)

// resolve turns the decoded file into a Config, checking every field. Errors carry the field's
// path; Load adds the position.
func (f *file) resolve() (*Config, Errors) {
	var errs Errors
	bad := func(field, format string, args ...any) {
		errs = append(errs, &Error{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	c := &Config{
		TokenURL: deref(f.TokenURL),
		Issuer:   deref(f.Issuer),
		Schedule: f.Schedule,
		Vault: Vault{
			Address: f.Vault.Address,
			KVMount: strings.Trim(f.Vault.KVMount, "/"),
			Auth:    Auth(f.Vault.Auth),
		},
	}
	switch {
	case f.TokenURL != nil && c.TokenURL == "":
		// Present but empty (often a template's variable, set but empty): an error, never
		// Stora's endpoint by default, where this provider's secrets would go.
		bad("token_url", "is empty: give the token endpoint's URL, or leave token_url out for Stora's")
	case f.Issuer != nil && c.Issuer == "":
		bad("issuer", "is empty: give the authorization server's issuer URL, or leave issuer out")
	case c.Issuer != "" && c.TokenURL != "":
		bad("issuer", "issuer and token_url together: name one (the issuer's metadata names its token endpoint)")
	case c.Issuer != "":
		if err := checkIssuer(c.Issuer); err != nil {
			bad("issuer", "%v", err)
		}
	case c.TokenURL == "":
		c.TokenURL = DefaultTokenURL
	}
	if c.TokenURL != "" {
		if err := checkTokenURL(c.TokenURL); err != nil {
			bad("token_url", "%v", err)
		}
	}
	c.AuthorizeURL = f.AuthorizeURL
	if c.AuthorizeURL == "" && c.Issuer == "" {
		c.AuthorizeURL = authorizeURLFor(c.TokenURL)
	} else if c.AuthorizeURL != "" {
		if err := checkTokenURL(c.AuthorizeURL); err != nil {
			bad("authorize_url", "%v", err)
		}
	}
	c.AuthMethod = defaultString(f.AuthMethod, AuthClientSecretPost)
	c.Encoding = defaultString(f.Encoding, EncodingJSON)
	if msg := checkAuthMethod(c.AuthMethod); msg != "" {
		bad("token_endpoint_auth_method", "%s", msg)
	}
	if msg := checkEncoding(c.Encoding); msg != "" {
		bad("token_request_encoding", "%s", msg)
	}
	c.Audience, c.Resources = f.Audience, f.Resource
	for i, r := range f.Resource {
		if msg := checkResource(r); msg != "" {
			bad(listField("resource", i, len(f.Resource)), "%s", msg)
		}
	}
	var err error
	if c.Cron, err = parseSchedule(f.Schedule); err != nil {
		bad("schedule", "not a cron schedule: %v", err)
	}
	if c.RenewBefore, err = f.RenewBefore.parse("30m"); err != nil {
		bad("renew_before", "%v", err)
	} else if c.RenewBefore <= 0 {
		bad("renew_before", "must be positive")
	} else if c.RenewBefore >= AccessTokenLifetime {
		bad("renew_before", "%v is not shorter than the %v life of an access token: every pass would rotate every client", c.RenewBefore, AccessTokenLifetime)
	} else if c.Cron != nil {
		if gap := gapOver(c.Cron, time.Now(), c.RenewBefore); gap > 0 {
			bad("renew_before", "%v is shorter than the %v between two scheduled runs: a token could expire between runs (run the schedule more often, or renew earlier)", c.RenewBefore, gap.Round(time.Minute))
		}
	}
	switch {
	case f.Concurrency < 1 || f.Concurrency > 256:
		bad("concurrency", "%d is out of range 1..256", f.Concurrency)
	default:
		c.Concurrency = f.Concurrency
	}
	c.RateLimit = RateLimit(f.RateLimit)
	if ps := c.RateLimit.PerSecond; ps != 0 && !(ps >= 1.0/60 && ps <= 1e6) {
		bad("rate_limit.per_second", "%g is out of range: 0 (off), or 1/60 to 1000000", ps)
	}
	if pm := c.RateLimit.PerMinute; pm != 0 && !(pm >= 1 && pm <= 6e7) {
		bad("rate_limit.per_minute", "%g is out of range: 0 (off), or 1 to 60000000", pm)
	}
	if c.PassDeadline, err = f.PassDeadline.parse("10m"); err != nil {
		bad("pass_deadline", "%v", err)
	} else if c.PassDeadline < time.Second {
		bad("pass_deadline", "%v is under 1s, the shortest allowed; write a duration such as 10m", c.PassDeadline)
	}
	if c.RefreshWarning, err = f.RefreshWarning.parse("24h"); err != nil {
		bad("refresh_token_warning", "%v", err)
	} else if c.RefreshWarning < 0 {
		bad("refresh_token_warning", "must not be negative (0s turns the warning off)")
	}
	if c.Vault.KVMount == "" {
		bad("vault.kv_mount", "must not be empty")
	}
	a := &c.Vault.Auth
	switch a.Method {
	case AuthToken:
	case AuthKubernetes:
		if a.Role == "" {
			bad("vault.auth.role", "required for the kubernetes auth method")
		}
	case AuthAppRole:
		if a.RoleID == "" {
			bad("vault.auth.role_id", "required for the approle auth method")
		}
		if a.SecretIDFile == "" {
			bad("vault.auth.secret_id_file", "required for the approle auth method")
		}
	default:
		bad("vault.auth.method", "unknown auth method %q (want token, kubernetes or approle)", a.Method)
	}
	*a = a.WithDefaults()

	if len(f.Clients) == 0 {
		bad("clients", "at least one client is required")
	}
	seen := map[string]bool{}
	for i, fc := range f.Clients {
		field := func(name string) string { return fmt.Sprintf("clients[%d].%s", i, name) }
		cl := Client{
			Name:     fc.Name,
			Grant:    fc.Grant,
			Scope:    strings.Join(strings.Fields(fc.Scope), " "),
			Secret:   strings.Trim(fc.Secret, "/"),
			Output:   strings.Trim(fc.Output, "/"),
			TokenURL: defaultString(fc.TokenURL, c.TokenURL),
			// A token endpoint of its own has an authorize endpoint of its own: the global
			// authorize_url belongs to the global token_url.
			AuthorizeURL: c.AuthorizeURL,
			AuthMethod:   defaultString(fc.AuthMethod, c.AuthMethod),
			Encoding:     defaultString(fc.Encoding, c.Encoding),
			Audience:     defaultString(fc.Audience, c.Audience),
			Resources:    c.Resources,
		}
		if fc.Resource != nil {
			cl.Resources = fc.Resource
		}
		for j, r := range fc.Resource {
			if msg := checkResource(r); msg != "" {
				bad(listField(field("resource"), j, len(fc.Resource)), "client %q: %s", fc.Name, msg)
			}
		}
		if fc.AuthMethod != "" {
			if msg := checkAuthMethod(fc.AuthMethod); msg != "" {
				bad(field("token_endpoint_auth_method"), "%s", msg)
			}
		}
		if fc.Encoding != "" {
			if msg := checkEncoding(fc.Encoding); msg != "" {
				bad(field("token_request_encoding"), "%s", msg)
			}
		}
		if cl.AuthMethod == AuthNone && fc.Grant == GrantClientCredentials {
			f := field("token_endpoint_auth_method")
			if fc.AuthMethod == "" {
				f = field("grant") // the public default came from the top level
			}
			bad(f, "a public client (token_endpoint_auth_method none) has no secret to use the client_credentials grant with; use client_secret_post or client_secret_basic")
		}
		switch {
		case fc.Issuer != "" && fc.TokenURL != "":
			bad(field("issuer"), "issuer and token_url together: name one (the issuer's metadata names its token endpoint)")
		case fc.Issuer != "":
			// An authorization server of its own: the global authorize_url is not its.
			cl.Issuer, cl.TokenURL, cl.AuthorizeURL = fc.Issuer, "", ""
			if err := checkIssuer(fc.Issuer); err != nil {
				bad(field("issuer"), "%v", err)
			}
		case fc.TokenURL != "" && fc.TokenURL != c.TokenURL:
			cl.AuthorizeURL = authorizeURLFor(fc.TokenURL)
		case fc.TokenURL == "":
			cl.Issuer = c.Issuer
		}
		if fc.AuthorizeURL != "" {
			cl.AuthorizeURL = fc.AuthorizeURL
			if err := checkTokenURL(fc.AuthorizeURL); err != nil {
				bad(field("authorize_url"), "%v", err)
			} else if fc.Grant != GrantAuthorizationCode {
				bad(field("authorize_url"), "only an authorization_code client is authorized")
			}
		}
		switch {
		case cl.Name == "":
			bad(field("name"), "required")
		case !clientName.MatchString(cl.Name):
			bad(field("name"), "%q may hold only a-z, 0-9, '-', '_' and '.'", cl.Name)
		case seen[cl.Name]:
			bad(field("name"), "duplicate client name %q", cl.Name)
		}
		seen[cl.Name] = true
		switch cl.Grant {
		case GrantClientCredentials:
			if cl.Scope == "" {
				bad(field("scope"), "required for the client_credentials grant")
			}
		case GrantAuthorizationCode:
		case "":
			bad(field("grant"), "required (client_credentials or authorization_code)")
		default:
			bad(field("grant"), "unknown grant %q (want client_credentials or authorization_code)", cl.Grant)
		}
		if cl.Secret == "" {
			bad(field("secret"), "required: the KV path holding client_id and client_secret")
		}
		cl.Output = defaultString(cl.Output, cl.Secret)
		cl.Connections, cl.OutputPrefix = strings.Trim(fc.Connections, "/"), strings.Trim(fc.OutputPrefix, "/")
		for _, p := range [][2]string{{"secret", cl.Secret}, {"output", strings.Trim(fc.Output, "/")}, {"connections", cl.Connections}, {"output_prefix", cl.OutputPrefix}} {
			if msg := notRelative(c.Vault.KVMount, p[1]); msg != "" {
				bad(field(p[0]), "%s", msg)
			}
		}
		switch {
		case cl.Connections != "" && cl.Grant != GrantAuthorizationCode:
			bad(field("connections"), "only an authorization_code client has connections")
		case cl.Connections != "" && fc.Output != "":
			bad(field("output"), "a client with connections writes to output_prefix, not output")
		case cl.OutputPrefix != "" && cl.Connections == "":
			bad(field("output_prefix"), "only a client with connections has an output_prefix")
		case cl.OutputPrefix != "" && within(cl.OutputPrefix, cl.Connections):
			bad(field("output_prefix"), "%q is inside connections %q: access tokens would be listed as connections", cl.OutputPrefix, cl.Connections)
		case cl.OutputPrefix != "" && within(cl.Connections, cl.OutputPrefix):
			bad(field("output_prefix"), "%q contains connections %q: a connection's access token could land on another connection's secret", cl.OutputPrefix, cl.Connections)
		case cl.OutputPrefix != "" && below(cl.Secret, cl.OutputPrefix):
			bad(field("output_prefix"), "%q would put access tokens over the client's credentials %q", cl.OutputPrefix, cl.Secret)
		}
		if fc.TokenURL != "" {
			if err := checkTokenURL(fc.TokenURL); err != nil {
				bad(field("token_url"), "%v", err)
			}
		}
		c.Clients = append(c.Clients, cl)
	}
	errs = append(errs, overlaps(c.Clients)...)
	return c, errs
}

func checkAuthMethod(m string) string {
	switch m {
	case AuthClientSecretPost, AuthClientSecretBasic, AuthNone:
		return ""
	}
	return fmt.Sprintf("unknown method %q (want client_secret_post, client_secret_basic or none)", m)
}

func checkEncoding(e string) string {
	switch e {
	case EncodingJSON, EncodingForm:
		return ""
	}
	return fmt.Sprintf("unknown encoding %q (want json or form)", e)
}

// checkResource is RFC 8707 §2's resource indicator: an absolute URI, which may have a query but
// must not have a fragment.
func checkResource(r string) string {
	if r == "" {
		return "is empty: give an absolute URI such as https://api.example.com/"
	}
	u, err := url.Parse(r)
	switch {
	case err != nil || !u.IsAbs() || (u.Host == "" && u.Opaque == "" && u.Path == ""):
		return fmt.Sprintf("%q is not an absolute URI (RFC 8707 §2): write one such as https://api.example.com/", userinfo.ReplaceAllString(r, "//xxxxx@"))
	case u.Fragment != "" || strings.Contains(r, "#"):
		return fmt.Sprintf("%q has a fragment; a resource indicator must not (RFC 8707 §2)", u.Redacted())
	case strings.ContainsAny(r, " \t\n"):
		return fmt.Sprintf("%q holds white space, which no URI may", u.Redacted())
	}
	return ""
}

// listField is the field path of item i of a key that holds one string or a list: the key
// itself when it held a single string.
func listField(key string, i, n int) string {
	if n == 1 {
		return key
	}
	return fmt.Sprintf("%s[%d]", key, i)
}

// parse reads d as a Go duration. Its error says what to write instead, in the words of the
// value written: "30" is not a duration, 30m is; example stands in for a value that is no number.
func (d duration) parse(example string) (time.Duration, error) {
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration; write one such as %s", string(d), durationLike(string(d), example))
	}
	return v, nil
}

var bareNumber = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)

// durationLike is the duration to suggest for s, which is not one: s with a unit when s is a bare
// number ("30m or 30s" for 30), example otherwise.
func durationLike(s, example string) string {
	if bareNumber.MatchString(s) {
		return s + "m or " + s + "s"
	}
	return example
}

// userinfo is the user:password@ part of a URL that may not parse, kept out of messages.
var userinfo = regexp.MustCompile(`//[^/?#]*@`)

// CheckURL is the rule every endpoint URL follows: https, or http only to a loopback host.
func CheckURL(s string) error { return checkTokenURL(s) }

// checkTokenURL accepts https URLs, and http only to a loopback host.
func checkTokenURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", userinfo.ReplaceAllString(s, "//xxxxx@"))
	}
	shown := u.Redacted() // a password in the URL stays out of the message
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
		return fmt.Errorf("%q: http is allowed only to a loopback address; use https", shown)
	default:
		return fmt.Errorf("%q: scheme must be https", shown)
	}
}

// checkIssuer is RFC 8414 §2's issuer: a URL that passes checkTokenURL's rule, with no query or
// fragment (and, here, no user info: it would be sent to the server and shown in errors).
func checkIssuer(s string) error {
	if err := checkTokenURL(s); err != nil {
		return err
	}
	u, _ := url.Parse(s)
	switch {
	case u.User != nil:
		return fmt.Errorf("%q: an issuer has no user info", u.Redacted())
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#"):
		return fmt.Errorf("%q: an issuer has no query or fragment (RFC 8414 §2)", s)
	}
	return nil
}

// authorizeURLFor is the authorize endpoint beside a token endpoint: its last path element
// "token" replaced by "authorize", as Stora's (and Doorkeeper's) /oauth2/token and /oauth2/authorize.
func authorizeURLFor(tokenURL string) string {
	return strings.TrimSuffix(tokenURL, "/token") + "/authorize"
}

func defaultString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// within reports whether path is prefix or lies below it.
func within(path, prefix string) bool {
	return path == prefix || below(path, prefix)
}

// below reports whether path lies below prefix: one of the secrets a list of prefix would find.
func below(path, prefix string) bool {
	return strings.HasPrefix(path, prefix+"/")
}

// deref is *p, or "" for nil.
func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
