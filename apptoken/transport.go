package apptoken

import (
	"io"
	"net/http"
	"strings"
)

// Transport returns an http.RoundTripper that sends each request through base (nil means
// http.DefaultTransport) with "Authorization: Bearer <access_token>" from s, and applies the 401
// rule: when the API answers 401, it reads Vault again (waiting up to WaitForNew, and no longer
// than the request's context, for a token other than the one refused; one read at a time for all
// such requests) and, when Vault holds another token, sends the request once more with it. A
// request is sent again only when its body can be replayed: no body, http.NoBody, or GetBody set
// (http.NewRequest sets it for a *bytes.Buffer, *bytes.Reader or *strings.Reader); otherwise the
// 401 is returned as it came, and the search for another token goes on for the requests that
// follow, which wait for its outcome rather than go out with the refused token. The second
// answer is returned, whatever it is.
//
// It never changes the caller's request: it sends clones. When s cannot give a token, RoundTrip
// returns Token's error and sends nothing.
//
// On a redirect that http.Client follows (req.Response set), the token goes only to the host of
// the first request or a subdomain of it, the rule net/http applies to the caller's own
// Authorization header; a request to any other host is sent as it came, with no token and no
// retry on a 401. A caller following redirects itself decides where its requests go.
func (s *Source) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{src: s, base: base}
}

// Client returns a copy of base (nil means a zero http.Client) whose Transport is
// s.Transport(base.Transport).
func (s *Source) Client(base *http.Client) *http.Client {
	c := &http.Client{}
	if base != nil {
		*c = *base
	}
	c.Transport = s.Transport(c.Transport)
	return c
}

type transport struct {
	src  *Source
	base http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !tokenMayGo(req) {
		return t.base.RoundTrip(req)
	}
	c, err := t.src.current(req.Context())
	if err != nil {
		if req.Body != nil {
			req.Body.Close() // a RoundTripper closes the body, even on errors
		}
		return nil, err
	}
	resp, err := t.send(req, c.token, req.Body)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	if !replayable(req) {
		t.src.startSearch(req.Context(), c.token) // for the requests that follow
		return resp, nil
	}
	next := t.src.replacement(req.Context(), c.token)
	if next == nil {
		return resp, nil
	}
	body := req.Body
	if req.GetBody != nil && body != nil && body != http.NoBody {
		if body, err = req.GetBody(); err != nil {
			return resp, nil // cannot replay after all: the 401 stands
		}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	return t.send(req, next.token, body)
}

// send sends a clone of req with body and the token. The response names req, not the clone, as
// the request it answers: an app that logs resp.Request logs no token.
func (t *transport) send(req *http.Request, token string, body io.ReadCloser) (*http.Response, error) {
	resp, err := t.base.RoundTrip(withToken(req, token, body))
	if resp != nil {
		resp.Request = req
	}
	return resp, err
}

// CloseIdleConnections closes the base transport's idle connections, for http.Client's method of
// that name.
func (t *transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// tokenMayGo reports whether req may carry the token: it is not a redirect, or every hop of its
// chain of redirects, req included, goes to the host of the chain's first request or a subdomain
// of it (net/http's rule for an Authorization header a caller sets, since Go 1.22.11 and 1.23.5:
// once a chain leaves the domain, no later hop gets it; host names compared without ports). A
// redirect whose chain cannot be followed back gets no token.
func tokenMayGo(req *http.Request) bool {
	if req.Response == nil {
		return true
	}
	hops := []*http.Request{req}
	for r := req; r.Response != nil; {
		if r = r.Response.Request; r == nil {
			return false // a base transport that does not say what it sent: no token
		}
		hops = append(hops, r)
	}
	first := hops[len(hops)-1]
	for _, hop := range hops[:len(hops)-1] {
		if !sameDomain(first.URL.Hostname(), hop.URL.Hostname()) {
			return false
		}
	}
	return true
}

// sameDomain reports whether host sub is parent or a subdomain of it, case-insensitively.
func sameDomain(parent, sub string) bool {
	parent, sub = strings.ToLower(parent), strings.ToLower(sub)
	if sub == parent {
		return true
	}
	if parent == "" || strings.ContainsAny(sub, ":%") {
		return false // an IPv6 address is no host's subdomain
	}
	return strings.HasSuffix(sub, "."+parent)
}

// replayable reports whether req can be sent a second time.
func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// withToken is a clone of req with body and the token in its Authorization header.
func withToken(req *http.Request, token string, body io.ReadCloser) *http.Request {
	r := req.Clone(req.Context())
	r.Body = body
	r.Header.Set("Authorization", "Bearer "+token)
	return r
}
