package rotate

import (
	"context"
	"fmt"
	"hash/fnv"
	"path"
	"slices"

	"token-rotator/config"
	"token-rotator/discovery"
)

// target is one access token the job keeps fresh: a configured client, or one connection under a
// client's connections prefix.
type target struct {
	// name is the client's name, or "client/connection" for a connection.
	name   string
	client config.Client
	// secret is the KV path holding the grant's state: the refresh token, or a code waiting.
	secret string
	// output is the KV path the access token goes to.
	output string
	// shared is the KV path holding client_id and client_secret when they live apart from secret
	// (a connection shares its client's); empty when secret holds them.
	shared string
}

// Shard selects a stable share of the targets: those whose name hashes to Index modulo Count.
// Every target belongs to exactly one of the Count shards. The zero value selects all.
type Shard struct {
	Index, Count int
}

// owns reports whether the shard owns the target named name.
func (s Shard) owns(name string) bool {
	if s.Count <= 1 {
		return true
	}
	return int(hash(name)%uint64(s.Count)) == s.Index
}

// String is INDEX/COUNT.
func (s Shard) String() string { return fmt.Sprintf("%d/%d", s.Index, s.Count) }

// hash is FNV-1a followed by SplitMix64's finaliser, which spreads names that differ only in their
// last characters (op-001, op-002) over all 64 bits. It is stable across processes, versions and
// machines, so every shard agrees on who owns what.
func hash(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// targets lists the targets, in configuration order, connections in the order Vault lists them,
// keeping only shard's, or when Only names targets, only those whatever their shard. Connections are listed anew each pass, so a new operator is a
// Vault write away. A prefix that cannot be listed is one failed result, named for its client
// (skipped when shutdown cut the listing short).
//
// With discover set, a client with an issuer gets its token URL from the issuer's metadata, read
// once per issuer per pass and only for a client with targets to work on; when that fails, the
// client is one failed result and none of its targets starts: nothing is spent. Without it (status,
// which reads Vault alone) the metadata is not read.
func (r *Rotator) targets(ctx context.Context, shard Shard, discover bool) ([]target, []Result) {
	var ts []target
	var failed []Result
	endpoints := r.endpoints()
	if !discover {
		endpoints = func(context.Context, *config.Client) (Result, bool) { return Result{}, true }
	}
	for _, c := range r.Clients {
		if c.Connections == "" {
			if !r.selects(shard, c.Name, c.Name) {
				continue
			}
			if res, ok := endpoints(ctx, &c); !ok {
				failed = append(failed, res)
				continue
			}
			ts = append(ts, target{name: c.Name, client: c, secret: c.Secret, output: c.Output})
			continue
		}
		var paths []string
		err := r.untilVault(ctx, "list connections", func() (err error) {
			paths, err = r.Store.List(ctx, c.Connections)
			return err
		})
		if err != nil && ctx.Err() != nil { // shutdown cut the listing short: nothing was started
			failed = append(failed, Result{Client: c.Name, Outcome: Skipped})
			continue
		}
		if err != nil {
			failed = append(failed, Result{Client: c.Name, Outcome: Failed, Err: fmt.Errorf("list connections: %w", err)})
			continue
		}
		if len(paths) == 0 {
			r.logger().Warn("no connections under the prefix: none authorized yet, or a mistyped path", "client", c.Name, "connections", c.Connections)
		}
		resolved := false
		for _, rel := range paths {
			p := c.Connections + "/" + rel
			name := c.Name + "/" + rel
			if p == c.Secret || !r.selects(shard, c.Name, name) {
				continue
			}
			if !resolved {
				res, ok := endpoints(ctx, &c)
				if !ok {
					failed = append(failed, res)
					break
				}
				resolved = true
			}
			out := p
			if c.OutputPrefix != "" {
				out = path.Join(c.OutputPrefix, rel)
			}
			ts = append(ts, target{name: name, client: c, secret: p, output: out, shared: c.Secret})
		}
	}
	return ts, failed
}

// endpoints returns a function that fills in the token URL of a client with an issuer from the
// issuer's metadata, read at most once per issuer for as long as the function is kept (a pass).
// When it cannot, it returns the client's result: failed, or skipped when shutdown cut it short.
func (r *Rotator) endpoints() func(ctx context.Context, c *config.Client) (Result, bool) {
	type answer struct {
		md  *discovery.Metadata
		err error
	}
	cache := map[string]answer{}
	d := r.Discovery
	if d == nil {
		d = &discovery.Client{}
	}
	return func(ctx context.Context, c *config.Client) (Result, bool) {
		if c.Issuer == "" || c.TokenURL != "" {
			return Result{}, true
		}
		a, ok := cache[c.Issuer]
		if !ok {
			a.md, a.err = d.Discover(ctx, c.Issuer)
			if ctx.Err() == nil {
				cache[c.Issuer] = a
			}
		}
		switch {
		case a.err != nil && ctx.Err() != nil:
			return Result{Client: c.Name, Outcome: Skipped}, false
		case a.err != nil:
			return Result{Client: c.Name, Outcome: Failed, Err: fmt.Errorf("discovery: %w", a.err)}, false
		}
		c.TokenURL = a.md.TokenEndpoint
		return Result{}, true
	}
}

// spread is the target's stable share, in [0, 1), of the window over which rotations are spread.
func spread(name string) float64 {
	return float64(hash("spread:"+name)>>11) / float64(1<<53)
}

// selects reports whether the target named name, of the client named client, is one to work on:
// when Only names targets, one it names (by its own name or its client's), whatever its shard, as
// naming a target is an explicit choice; else one shard owns.
func (r *Rotator) selects(shard Shard, client, name string) bool {
	if len(r.Only) > 0 {
		named := slices.Contains(r.Only, name) || slices.Contains(r.Only, client)
		return named && (!r.OnlyInShard || shard.owns(name))
	}
	return shard.owns(name)
}
