package apptoken

import (
	"context"
	"time"
)

// wait is the search for a token other than a refused one. Every request refused with that token
// waits on the same search: one Vault read at a time serves them all.
type wait struct {
	refused string
	done    chan struct{} // closed when the search ends
	found   *cached       // the other token; nil when none came
}

// replacement returns a token other than refused, the one the API has just refused: the cached
// token if another caller has already found one, or what Vault holds, read again until it differs
// or WaitForNew passes. It returns nil when no other token came (or ctx ended first). A token
// that was still in Vault after a whole WaitForNew is remembered: a later refusal of it costs one
// read (at most once per MinReadInterval) and no wait.
func (s *Source) replacement(ctx context.Context, refused string) *cached {
	c, w := s.startSearch(ctx, refused)
	if w == nil {
		return c
	}
	select {
	case <-w.done:
		return w.found
	case <-ctx.Done():
		return nil
	}
}

// startSearch returns the cached token if it is not refused; otherwise the search for another
// one, started now unless one is under way (nil when refused is remembered and was read for
// less than MinReadInterval ago).
func (s *Source) startSearch(ctx context.Context, refused string) (*cached, *wait) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.cur; c != nil && c.token != refused {
		return c, nil
	}
	if w := s.wait; w != nil && w.refused == refused {
		return nil, w
	}
	patience := s.opts.WaitForNew
	if s.wasRefused(refused) { // refused before, and Vault held it past a whole wait
		if time.Now().Before(s.nextRead) {
			return nil, nil
		}
		patience = 0 // one read
	}
	w := &wait{refused: refused, done: make(chan struct{})}
	s.wait = w
	go s.search(context.WithoutCancel(ctx), w, patience)
	return nil, w
}

// search reads Vault until it holds a token other than w.refused: at once, then after 50 ms,
// doubling up to every second, the last read at patience.
func (s *Source) search(ctx context.Context, w *wait, patience time.Duration) {
	deadline := time.Now().Add(patience)
	for pause := pollFirst; ; pause = min(2*pause, pollMax) {
		rctx, cancel := context.WithDeadline(ctx, deadline.Add(pollMax))
		s.mu.Lock()
		gen := s.gen
		s.mu.Unlock()
		c, err := s.read(rctx, gen)
		cancel()
		if err == nil && c.token != w.refused {
			w.found = c
			break
		}
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		time.Sleep(min(pause, left))
	}
	s.mu.Lock()
	if w.found == nil {
		t := w.refused
		s.refused = &t
	}
	if s.wait == w {
		s.wait = nil
	}
	s.mu.Unlock()
	close(w.done)
}
