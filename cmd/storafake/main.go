// Command storafake serves the bundled Stora-compatible token endpoint on a loopback address, for
// `make demo` and for trying token-rotator without Stora credentials. It prints its base URL on
// the first line of standard output.
//
//	storafake -listen 127.0.0.1:0 -client ID:SECRET -code CLIENT_ID:CODE:REDIRECT_URI
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"token-rotator/internal/storafake"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address to listen on")
	immediate := flag.Bool("revoke-immediately", false, "retire a refresh token as soon as it is used")
	var clients, codes list
	flag.Var(&clients, "client", "register an application, as CLIENT_ID:CLIENT_SECRET (repeatable)")
	flag.Var(&codes, "code", "issue an authorization code, as CLIENT_ID:CODE:REDIRECT_URI (repeatable)")
	flag.Parse()

	s := storafake.New()
	s.RevokeImmediately = *immediate
	for _, c := range clients {
		id, secret, ok := strings.Cut(c, ":")
		if !ok {
			fail("-client %q: want CLIENT_ID:CLIENT_SECRET", c)
		}
		s.AddClientWith(id, secret)
	}
	for _, c := range codes {
		p := strings.SplitN(c, ":", 3)
		if len(p) != 3 {
			fail("-code: want CLIENT_ID:CODE:REDIRECT_URI")
		}
		s.AddCode(p[0], p[1], p[2], "public.contact:read public.contact:write", "")
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fail("%v", err)
	}
	if ip := l.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		fail("refusing to listen on %s: loopback only", ip)
	}
	fmt.Printf("http://%s\n", l.Addr())
	fail("%v", http.Serve(l, s.Handler()))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "storafake: "+format+"\n", args...)
	os.Exit(2)
}
