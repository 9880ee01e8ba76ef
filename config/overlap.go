package config

import (
	"fmt"
	"path"
)

// region is one path, or one prefix and every secret below it, that a client uses.
type region struct {
	client int    // index in clients
	field  string // the config key that names it: secret, output, connections, output_prefix
	path   string
	prefix bool // the secrets below path, not path itself
	spends bool // holds refresh tokens or codes the job spends
	output bool // access tokens for apps are written here
	shared bool // only read: client_id and client_secret a client's connections share
}

// regions lists the paths client i uses. An output left out (or equal to secret) is the secret's
// region, named secret.
func regions(i int, c Client) []region {
	if c.Secret == "" { // already an error
		return nil
	}
	if c.Connections == "" {
		rs := []region{{client: i, field: "secret", path: path.Clean(c.Secret), spends: c.Grant == GrantAuthorizationCode}}
		if c.Output != "" && path.Clean(c.Output) != path.Clean(c.Secret) {
			rs = append(rs, region{client: i, field: "output", path: path.Clean(c.Output), output: true})
		}
		return rs
	}
	rs := []region{
		{client: i, field: "secret", path: path.Clean(c.Secret), shared: true},
		{client: i, field: "connections", path: path.Clean(c.Connections), prefix: true, spends: true},
	}
	if c.OutputPrefix != "" {
		rs = append(rs, region{client: i, field: "output_prefix", path: path.Clean(c.OutputPrefix), prefix: true, output: true})
	}
	return rs
}

// overlaps reports every pair of regions of two different clients that share a secret, each as an
// error on the later client's field naming the earlier client and its field. Two targets reading
// one refresh token would race to spend it (the loser's output goes stale) or spend it in turn,
// twice a pass. Each client holds a few regions of the store, a path or a prefix with every secret
// below it:
//
//   - a client without connections owns its secret: the job spends the refresh token or code in
//     it, claims it, records the client's status in its metadata and, when output is left out,
//     writes the access token there. Two client_credentials clients sharing one secret collide too:
//     their access tokens and statuses overwrite each other's;
//   - a client with connections owns its connections prefix (every secret below it is a connection
//     with its own refresh token) and reads only client_id and client_secret from its secret. That
//     secret may be shared by several clients with connections (one partner application serving
//     two prefixes): nothing writes to it. No client without connections may share it, since that
//     client writes to it;
//   - output, and output_prefix with every secret below it, are where apps read access tokens;
//     they belong to one client each, and never reach into anyone's credentials.
//
// A client's own regions are checked in resolve: its secret may lie below its own connections
// (the pass skips it there), and its output_prefix must stay clear of its connections and secret.
func overlaps(clients []Client) Errors {
	var errs Errors
	var earlier []region
	for i, c := range clients {
		mine := regions(i, c)
		for _, a := range mine {
			for _, b := range earlier {
				rel, ok := relation(a, b)
				if !ok || (a.shared && b.shared) {
					continue
				}
				bc := clients[b.client]
				where := fmt.Sprintf("%s's %s", name(bc.Name, b.client), b.field)
				if rel != "is also" {
					where += fmt.Sprintf(" %q", b.path)
				}
				errs = append(errs, &Error{
					Field: fmt.Sprintf("clients[%d].%s", i, a.field),
					Msg: fmt.Sprintf("%q %s %s (clients[%d].%s): %s", a.path, rel, where, b.client, b.field,
						consequence(a, b, name(c.Name, i), name(bc.Name, b.client))),
				})
			}
		}
		earlier = append(earlier, mine...)
	}
	return errs
}

// relation says how a's path stands to b's: "is also", "is within" or "contains"; ok is false when
// they share no secret. A single path overlaps a prefix only when it lies below it: the secret at
// the prefix's own path is not one of the secrets below it.
func relation(a, b region) (rel string, ok bool) {
	switch {
	case a.path == b.path && a.prefix == b.prefix:
		return "is also", true
	case b.prefix && below(a.path, b.path):
		return "is within", true
	case a.prefix && below(b.path, a.path):
		return "contains", true
	}
	return "", false
}

// consequence is what would go wrong if a and b, of the clients named an and bn, shared a secret.
func consequence(a, b region, an, bn string) string {
	// x is the more telling of the two: an output, then connections, then shared credentials.
	rank := func(r region) int {
		switch {
		case r.output:
			return 3
		case r.field == "connections":
			return 2
		case r.shared:
			return 1
		}
		return 0
	}
	x, y, xn, yn := a, b, an, bn
	if rank(y) > rank(x) {
		x, y, xn, yn = y, x, yn, xn
	}
	switch {
	case x.output && y.output:
		return fmt.Sprintf("apps of %s and %s would read each other's tokens", xn, yn)
	case x.output && y.field == "connections":
		return fmt.Sprintf("%s's access tokens would be listed as %s's connections and refreshed", xn, yn)
	case x.output:
		return fmt.Sprintf("%s's access token would be written into %s's credentials", xn, yn)
	case x.spends && y.spends:
		return fmt.Sprintf("%s and %s would spend one refresh token", xn, yn)
	case x.field == "connections":
		return fmt.Sprintf("%s's credentials would be listed as a connection of %s and rotated", yn, xn)
	case x.shared:
		return fmt.Sprintf("%s would write its tokens and status into the credentials %s's connections share", yn, xn)
	default:
		return fmt.Sprintf("%s and %s would write their tokens and status into one credential secret", xn, yn)
	}
}

// name is how an error calls client i: its name, or its place when it has none.
func name(n string, i int) string {
	if n == "" {
		return fmt.Sprintf("clients[%d]", i)
	}
	return n
}
