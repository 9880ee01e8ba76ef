// Package discovery reads an OAuth 2 authorization server's metadata: RFC 8414's
// /.well-known/oauth-authorization-server, else OpenID Connect Discovery's
// /.well-known/openid-configuration, and takes the endpoints the job uses from it.
package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"token-rotator/config"
	"token-rotator/oauth"
)

// Metadata is what the job takes from an authorization server's metadata document.
type Metadata struct {
	Issuer                string `json:"issuer"`
	TokenEndpoint         string `json:"token_endpoint"`
	AuthorizationEndpoint string `json:"authorization_endpoint"`
}

// Client fetches metadata documents. The zero value is ready to use.
type Client struct {
	// HTTP sends the requests; nil means a client with a 30 s timeout. Redirects are never
	// followed: a 3xx is an error, so that the https rule holds for every hop.
	HTTP *http.Client
	// MaxBody caps the document read, in bytes; 0 means 256 KiB.
	MaxBody int64
	// UserAgent is sent as User-Agent when set.
	UserAgent string
}

// URLs are the two places an issuer's metadata may be, in the order tried: RFC 8414 §3's, with
// the well-known part inserted between the host and the issuer's path, and OpenID Connect
// Discovery 1.0 §4's, appended to the issuer.
func URLs(issuer string) (rfc8414, oidc string, err error) {
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" {
		return "", "", fmt.Errorf("issuer %q is not an absolute URL", issuer)
	}
	p := strings.TrimSuffix(u.EscapedPath(), "/") // §3: a terminating "/" is removed first
	origin := u.Scheme + "://" + u.Host
	return origin + "/.well-known/oauth-authorization-server" + p, origin + p + "/.well-known/openid-configuration", nil
}

// Discover reads issuer's metadata: RFC 8414's document, or when that is not found (404), OpenID
// Connect's. It checks that the document names issuer as its issuer (RFC 8414 §3.3) and has a
// token_endpoint that is https (http only to a loopback host, as config.CheckURL). Its errors name
// the URL and what was wrong; they never quote the document.
func (c *Client) Discover(ctx context.Context, issuer string) (*Metadata, error) {
	first, second, err := URLs(issuer)
	if err != nil {
		return nil, err
	}
	md, err := c.fetch(ctx, first)
	if errors.Is(err, errNotFound) {
		md, err = c.fetch(ctx, second)
		if errors.Is(err, errNotFound) {
			return nil, fmt.Errorf("no authorization server metadata for issuer %s: 404 Not Found at both %s and %s", issuer, first, second)
		}
	}
	if err != nil {
		return nil, err
	}
	if md.m.Issuer != issuer {
		return nil, fmt.Errorf("metadata at %s names issuer %q, not the configured %q (RFC 8414 §3.3: they must be equal)", md.url, oauth.Redact(md.m.Issuer, 200), issuer)
	}
	if md.m.TokenEndpoint == "" {
		return nil, fmt.Errorf("metadata at %s has no token_endpoint", md.url)
	}
	if err := endpointURL(issuer, md.m.TokenEndpoint); err != nil {
		return nil, fmt.Errorf("metadata at %s: token_endpoint %v", md.url, err)
	}
	if md.m.AuthorizationEndpoint != "" {
		if err := endpointURL(issuer, md.m.AuthorizationEndpoint); err != nil {
			return nil, fmt.Errorf("metadata at %s: authorization_endpoint %v", md.url, err)
		}
	}
	return &md.m, nil
}

// endpointURL holds an endpoint named by issuer's metadata to config.CheckURL's rule, and more:
// an https issuer's endpoints are https too, so that a document served over TLS cannot send the
// client's credentials in clear to a local port.
func endpointURL(issuer, endpoint string) error {
	if err := config.CheckURL(endpoint); err != nil {
		return err
	}
	if strings.HasPrefix(issuer, "https:") && !strings.HasPrefix(endpoint, "https:") {
		return fmt.Errorf("%q is http, but the issuer is https", oauth.Redact(endpoint, 200))
	}
	return nil
}

var errNotFound = errors.New("not found")

type fetched struct {
	url string
	m   Metadata
}

func (c *Client) fetch(ctx context.Context, u string) (*fetched, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("metadata request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("metadata at %s: %w", u, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, errNotFound
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("metadata at %s: HTTP %s", u, resp.Status)
	}
	limit := c.MaxBody
	if limit <= 0 {
		limit = 256 << 10
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("metadata at %s: %w", u, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("metadata at %s: longer than %d bytes", u, limit)
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	f := &fetched{url: u}
	if err := json.Unmarshal(body, &f.m); err != nil {
		return nil, fmt.Errorf("metadata at %s is not a JSON object (Content-Type %q)", u, ct)
	}
	return f, nil
}

func (c *Client) httpClient() *http.Client {
	base := c.HTTP
	if base == nil {
		base = &http.Client{Timeout: 30 * time.Second}
	}
	hc := *base
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &hc
}
