// Package faultproxy is a TCP proxy on a loopback port that the fault tests put in front of Vault
// and the token endpoint. It passes traffic through until told to misbehave: refuse connections,
// answer with an HTTP 503, stall, or cut a response short. Changing the mode closes every
// connection open at the time, so clients that keep connections alive meet the new mode at once.
package faultproxy

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Mode is how the proxy treats connections.
type Mode int

// Modes.
const (
	Pass        Mode = iota // forward both ways
	Refuse                  // accept and close at once
	HTTP503                 // read the request, answer 503 Service Unavailable, close
	Stall                   // accept and read, never answer, until the mode changes
	CutResponse             // forward the request; pass the first CutAfter bytes of the answer, then close
)

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	// Addr is its 127.0.0.1:PORT.
	Addr string
	// CutAfter is how many response bytes CutResponse lets through; default 20.
	CutAfter int

	target string
	ln     net.Listener
	mu     sync.Mutex
	mode   Mode
	next   []Mode // modes for the next connections, one each, before mode applies again
	conns  map[net.Conn]bool
	total  int
}

// Start listens on a free loopback port, forwards to target (host:port), and stops when the test
// ends.
func Start(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]bool{}, CutAfter: 20}
	go p.serve()
	tb.Cleanup(func() {
		ln.Close()
		p.Set(Pass)
	})
	return p
}

// Set changes the mode and closes every open connection.
func (p *Proxy) Set(m Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

// SetNext applies m to the next n connections only; later ones get the current mode again.
func (p *Proxy) SetNext(m Mode, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 0; i < n; i++ {
		p.next = append(p.next, m)
	}
}

// Connections is how many connections the proxy has accepted.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		mode := p.mode
		if len(p.next) > 0 {
			mode, p.next = p.next[0], p.next[1:]
		}
		p.conns[c] = true
		p.total++
		p.mu.Unlock()
		go p.handle(c, mode)
	}
}

func (p *Proxy) handle(c net.Conn, mode Mode) {
	defer func() {
		c.Close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	switch mode {
	case Refuse:
		return
	case HTTP503:
		buf := make([]byte, 64<<10)
		_, _ = c.Read(buf)
		_, _ = io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nunavailable\n")
		return
	case Stall:
		_, _ = io.Copy(io.Discard, c) // until the client gives up or Set closes it
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	p.mu.Lock()
	p.conns[up] = true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() {
		if mode == CutResponse {
			_, _ = io.CopyN(c, up, int64(p.CutAfter))
		} else {
			_, _ = io.Copy(c, up)
		}
		done <- struct{}{}
	}()
	<-done
}
