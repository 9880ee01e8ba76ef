package config

import (
	"errors"
	"strings"
	"testing"
)

// The client blocks the cases below are built from, one key a line so that a position reads as
// the line of the key and the column of its value (13 for secret and output, 18 for connections,
// 20 for output_prefix).
func authCode(name, secret string) string {
	return "  - name: " + name + "\n    grant: authorization_code\n    secret: " + secret + "\n"
}

func clientCreds(name, secret string) string {
	return "  - name: " + name + "\n    grant: client_credentials\n    scope: public.contact:read\n    secret: " + secret + "\n"
}

func partner(name, secret, connections string) string {
	return authCode(name, secret) + "    connections: " + connections + "\n"
}

func TestOverlappingPathsRejected(t *testing.T) {
	for _, tc := range []struct {
		name, clients string
		want          string // the whole start of the one error: position, later client's field, both clients
	}{
		{"two authorization_code clients, one secret",
			authCode("a", "stora/x") + authCode("b", "stora/x"),
			`c.yaml:7:13: clients[1].secret: "stora/x" is also a's secret (clients[0].secret): b and a would spend one refresh token`},
		{"two client_credentials clients, one secret, outputs apart",
			clientCreds("a", "stora/x") + "    output: apps/a\n" + clientCreds("b", "stora/x") + "    output: apps/b\n",
			`c.yaml:10:13: clients[1].secret: "stora/x" is also a's secret (clients[0].secret): b and a would write their tokens and status into one credential secret`},
		{"two clients, one secret, no output: the secret is named, not the output",
			clientCreds("a", "stora/x") + clientCreds("b", "stora/x"),
			`c.yaml:9:13: clients[1].secret: "stora/x" is also a's secret (clients[0].secret): b and a would write their tokens and status into one credential secret`},
		{"two clients of two grants, one secret, no output: the secret is named",
			authCode("a", "stora/x") + clientCreds("b", "stora/x"),
			`c.yaml:8:13: clients[1].secret: "stora/x" is also a's secret (clients[0].secret): b and a would write their tokens and status into one credential secret`},
		{"a secret below another client's connections",
			partner("partner", "stora/partner", "stora/partner/conns") + authCode("b", "stora/partner/conns/op-1"),
			`c.yaml:8:13: clients[1].secret: "stora/partner/conns/op-1" is within partner's connections "stora/partner/conns" (clients[0].connections): partner and b would spend one refresh token`},
		{"connections over an earlier client's secret",
			authCode("a", "stora/p/conns/op-1") + partner("partner", "stora/p", "stora/p/conns"),
			`c.yaml:8:18: clients[1].connections: "stora/p/conns" contains a's secret "stora/p/conns/op-1" (clients[0].secret): partner and a would spend one refresh token`},
		{"connections within another client's connections",
			partner("p1", "stora/p1", "stora/fleet") + partner("p2", "stora/p2", "stora/fleet/eu"),
			`c.yaml:9:18: clients[1].connections: "stora/fleet/eu" is within p1's connections "stora/fleet" (clients[0].connections): p2 and p1 would spend one refresh token`},
		{"one connections prefix for two clients",
			partner("p1", "stora/p1", "stora/fleet") + partner("p2", "stora/p2", "stora/fleet/"),
			`c.yaml:9:18: clients[1].connections: "stora/fleet" is also p1's connections (clients[0].connections): p2 and p1 would spend one refresh token`},
		{"an output below another client's connections",
			partner("partner", "stora/partner", "stora/partner/conns") + clientCreds("b", "stora/b") + "    output: stora/partner/conns/b\n",
			`c.yaml:10:13: clients[1].output: "stora/partner/conns/b" is within partner's connections "stora/partner/conns" (clients[0].connections): b's access tokens would be listed as partner's connections and refreshed`},
		{"an output_prefix below another client's connections",
			partner("p1", "stora/p1", "stora/p1/conns") + partner("p2", "stora/p2", "stora/p2/conns") + "    output_prefix: stora/p1/conns/p2\n",
			`c.yaml:10:20: clients[1].output_prefix: "stora/p1/conns/p2" is within p1's connections "stora/p1/conns" (clients[0].connections): p2's access tokens would be listed as p1's connections and refreshed`},
		{"an output on another client's secret",
			clientCreds("a", "stora/a") + clientCreds("b", "stora/b") + "    output: stora/a\n",
			`c.yaml:10:13: clients[1].output: "stora/a" is also a's secret (clients[0].secret): b's access token would be written into a's credentials`},
		{"an output on the credentials a partner's connections share",
			partner("partner", "stora/partner", "stora/partner/conns") + clientCreds("b", "stora/b") + "    output: stora/partner\n",
			`c.yaml:10:13: clients[1].output: "stora/partner" is also partner's secret (clients[0].secret): b's access token would be written into partner's credentials`},
		{"an output_prefix within another client's output_prefix",
			partner("p1", "stora/p1", "stora/p1/conns") + "    output_prefix: apps/fleet\n" + partner("p2", "stora/p2", "stora/p2/conns") + "    output_prefix: apps/fleet/eu\n",
			`c.yaml:11:20: clients[1].output_prefix: "apps/fleet/eu" is within p1's output_prefix "apps/fleet" (clients[0].output_prefix): apps of p2 and p1 would read each other's tokens`},
		{"an output below another client's output_prefix",
			partner("p1", "stora/p1", "stora/p1/conns") + "    output_prefix: apps/fleet\n" + clientCreds("b", "stora/b") + "    output: apps/fleet/b\n",
			`c.yaml:11:13: clients[1].output: "apps/fleet/b" is within p1's output_prefix "apps/fleet" (clients[0].output_prefix): apps of b and p1 would read each other's tokens`},
		{"an output_prefix over an earlier client's output",
			clientCreds("a", "stora/a") + "    output: apps/fleet/a\n" + partner("p", "stora/p", "stora/p/conns") + "    output_prefix: apps/fleet\n",
			`c.yaml:11:20: clients[1].output_prefix: "apps/fleet" contains a's output "apps/fleet/a" (clients[0].output): apps of p and a would read each other's tokens`},
		{"a client_credentials client on the credentials a partner's connections share",
			partner("partner", "stora/partner", "stora/partner/conns") + clientCreds("b", "stora/partner"),
			`c.yaml:9:13: clients[1].secret: "stora/partner" is also partner's secret (clients[0].secret): b would write its tokens and status into the credentials partner's connections share`},
		{"a partner's credentials below another client's connections",
			partner("p1", "stora/p1", "stora/fleet") + partner("p2", "stora/fleet/p2-app", "stora/p2"),
			`c.yaml:8:13: clients[1].secret: "stora/fleet/p2-app" is within p1's connections "stora/fleet" (clients[0].connections): p2's credentials would be listed as a connection of p1 and rotated`},
		{"one secret spelt two ways",
			authCode("a", "stora/x/") + authCode("b", "stora//x"),
			`c.yaml:7:13: clients[1].secret: "stora/x" is also a's secret (clients[0].secret): b and a would spend one refresh token`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte("clients:\n"+tc.clients))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v, want exactly one *Error:\n%s", err, tc.clients)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error\n  %v\nwant it to start\n  %s", err, tc.want)
			}
		})
	}
}

func TestSeparatePathsAccepted(t *testing.T) {
	for _, tc := range []struct{ name, clients string }{
		{"the README's layout",
			clientCreds("acme", "stora/acme") + "    output: apps/acme\n" +
				partner("partner", "stora/partner", "stora/partner/connections") + "    output_prefix: apps/partner\n"},
		// Nothing writes to the credentials of a client with connections, so two may read them.
		{"two partners share one application's credentials",
			partner("p1", "stora/app", "stora/p1") + "    output_prefix: apps/p1\n" +
				partner("p2", "stora/app", "stora/p2") + "    output_prefix: apps/p2\n"},
		// Listing a prefix finds the secrets below it, not the one at its own path.
		{"a secret at another client's connections prefix itself",
			partner("partner", "stora/partner", "stora/fleet") + clientCreds("b", "stora/fleet") + "    output: apps/b\n"},
		{"a client's own secret below its connections",
			partner("partner", "stora/fleet/app", "stora/fleet")},
		{"paths that share only the start of a name",
			partner("p", "stora/p", "stora/p/conns") + "    output_prefix: apps/fleet\n" + clientCreds("b", "stora/p2") + "    output: apps/fleet2\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse("c.yaml", []byte("clients:\n"+tc.clients)); err != nil {
				t.Errorf("%v\n%s", err, tc.clients)
			}
		})
	}
}
