package rotate

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"token-rotator/config"
	"token-rotator/internal/storafake"
	"token-rotator/internal/testenv"
	"token-rotator/oauth"
)

// partnerWorld is a real Vault, the fake token endpoint, and a partner client whose connections
// live under a prefix.
type partnerWorld struct {
	*world
	stora    *storafake.Server
	tokenURL string
	client   config.Client
	id       string
	secret   string
}

func newPartnerWorld(t *testing.T, connections int) *partnerWorld {
	w := newWorld(t)
	s := storafake.New()
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	p := &partnerWorld{world: w, stora: s, tokenURL: ts.URL + "/oauth2/token"}
	p.id, p.secret = s.AddClient()
	w.put("stora/partner", map[string]any{"client_id": p.id, "client_secret": p.secret})
	p.client = config.Client{Name: "partner", Grant: config.GrantAuthorizationCode, Secret: "stora/partner",
		Output: "stora/partner", Connections: "stora/partner/connections", TokenURL: p.tokenURL}
	for i := 0; i < connections; i++ {
		p.addConnection(fmt.Sprintf("op-%03d", i))
	}
	return p
}

func (p *partnerWorld) addConnection(rel string) string {
	rt := p.stora.IssueRefreshToken(p.id, "public.contact:read")
	p.put("stora/partner/connections/"+rel, map[string]any{"refresh_token": rt, "operator": rel})
	return rt
}

func (p *partnerWorld) rotator() *Rotator {
	return &Rotator{Store: p.store, Tokens: &oauth.Client{}, Clients: []config.Client{p.client}, RenewBefore: 30 * time.Minute}
}

func TestConnectionsAreDiscoveredEachPass(t *testing.T) {
	t.Parallel()
	p := newPartnerWorld(t, 4)
	p.addConnection("eu/op-nested")
	p.client.OutputPrefix = "apps/partner"
	r := p.rotator()
	res := r.Pass(context.Background())
	if len(res) != 5 {
		t.Fatalf("%d results, want 5 connections: %+v", len(res), res)
	}
	for _, x := range res {
		if x.Outcome != Rotated {
			t.Errorf("%s: %s %v", x.Client, x.Outcome, x.Err)
		}
	}
	for _, rel := range []string{"op-000", "op-003", "eu/op-nested"} {
		conn := p.data("stora/partner/connections/" + rel)
		out := p.data("apps/partner/" + rel)
		rt, _ := conn["refresh_token"].(string)
		if !p.stora.RefreshTokenValid(rt) || out["access_token"] == nil || conn["access_token"] != nil || conn["operator"] != rel {
			t.Errorf("%s: refresh token live %v, access token in output %v, kept apart %v", rel, p.stora.RefreshTokenValid(rt), out["access_token"] != nil, conn["access_token"] == nil)
		}
	}
	if d := p.data("stora/partner"); len(d) != 2 {
		t.Errorf("the client's shared credentials were changed: %d keys", len(d))
	}
	// A new operator is a Vault write: the next pass finds it, and only it is due.
	p.addConnection("op-new")
	before := len(p.stora.Requests())
	res = r.Pass(context.Background())
	rotated := 0
	for _, x := range res {
		if x.Outcome == Rotated {
			rotated++
			if x.Client != "partner/op-new" {
				t.Errorf("rotated %s, want only partner/op-new", x.Client)
			}
		}
	}
	if rotated != 1 || len(p.stora.Requests())-before != 1 {
		t.Errorf("second pass rotated %d with %d requests, want 1 and 1", rotated, len(p.stora.Requests())-before)
	}
}

func TestShardsPartitionTheTargets(t *testing.T) {
	t.Parallel()
	var names []string
	for i := 0; i < 2000; i++ {
		names = append(names, fmt.Sprintf("partner/op-%05d", i))
	}
	for _, count := range []int{1, 2, 3, 7, 16, 100} {
		owners := map[string]int{}
		sizes := make([]int, count)
		for i := 0; i < count; i++ {
			for _, n := range names {
				if (Shard{Index: i, Count: count}).owns(n) {
					owners[n]++
					sizes[i]++
				}
			}
		}
		for _, n := range names {
			if owners[n] != 1 {
				t.Fatalf("count %d: %s is owned by %d shards", count, n, owners[n])
			}
		}
		sort.Ints(sizes)
		if count <= 16 && sizes[0] < len(names)/count/2 {
			t.Errorf("count %d: shard sizes %v are badly uneven", count, sizes)
		}
	}
}

func TestShardedPassesRotateEachConnectionOnce(t *testing.T) {
	t.Parallel()
	p := newPartnerWorld(t, 30)
	seen := map[string]int{}
	for i := 0; i < 3; i++ {
		r := p.rotator()
		r.Shard = Shard{Index: i, Count: 3}
		for _, x := range r.Pass(context.Background()) {
			if x.Outcome == Rotated {
				seen[x.Client]++
			}
		}
	}
	if len(seen) != 30 || len(p.stora.Requests()) != 30 {
		t.Errorf("three shards rotated %d connections with %d requests, want 30 and 30", len(seen), len(p.stora.Requests()))
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("%s rotated %d times", name, n)
		}
	}
}

func TestRateLimitPerTokenURL(t *testing.T) {
	t.Parallel()
	const perSecond, n = 20, 50
	p := newPartnerWorld(t, n)
	r := p.rotator()
	r.Concurrency = 8
	r.RateLimit = config.RateLimit{PerSecond: perSecond, PerMinute: 6000}
	for _, x := range r.Pass(context.Background()) {
		if x.Outcome != Rotated {
			t.Fatalf("%s: %s %v", x.Client, x.Outcome, x.Err)
		}
	}
	// Judge by the server's own clock: in any one-second window, no more than the bucket allows.
	var at []time.Time
	for _, q := range p.stora.Requests() {
		at = append(at, q.At)
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	worst := 0
	for i := range at {
		j := i
		for j < len(at) && at[j].Sub(at[i]) < time.Second {
			j++
		}
		worst = max(worst, j-i)
	}
	if worst > perSecond {
		t.Errorf("%d requests in one second, limit %d/s", worst, perSecond)
	}
	rate := float64(len(at)-1) / at[len(at)-1].Sub(at[0]).Seconds()
	if rate > perSecond || rate < perSecond*0.9 {
		t.Errorf("sustained %.1f requests/s, want just under %d", rate, perSecond)
	}
	t.Logf("%d requests; at most %d in any second; %.1f/s sustained", len(at), worst, rate)
}

func TestPerMinuteLimitIsTheTighter(t *testing.T) {
	t.Parallel()
	r := &Rotator{RateLimit: config.RateLimit{PerSecond: 10, PerMinute: 60}}
	l := r.limiter("x")
	if got := float64(l.Limit()); got != 0.97 || l.Burst() != 1 {
		t.Errorf("Stora's 10/s and 60/min give %.3f/s with burst %d, want 0.97/s with burst 1 (at most 59.2 a minute)", got, l.Burst())
	}
	if (&Rotator{}).limiter("x") != nil {
		t.Errorf("no limits should mean no limiter")
	}
	sharded := &Rotator{RateLimit: config.RateLimit{PerSecond: 10, PerMinute: 60}, Shard: Shard{Index: 1, Count: 4}}
	if got := float64(sharded.limiter("x").Limit()); got != 0.97/4 {
		t.Errorf("one of 4 shards keeps to %.4f/s, want a quarter of 0.97/s", got)
	}
}

func TestPassDeadlineEndsRateLimitWaits(t *testing.T) {
	t.Parallel()
	p := newPartnerWorld(t, 40)
	r := p.rotator()
	r.Concurrency = 8
	r.RateLimit = config.RateLimit{PerSecond: 5}
	r.PassDeadline = 1500 * time.Millisecond
	start := time.Now()
	res := r.Pass(context.Background())
	took := time.Since(start)
	n := map[Outcome]int{}
	for _, x := range res {
		n[x.Outcome]++
	}
	if took > 3*time.Second || n[Skipped] == 0 || n[Failed] != 0 {
		t.Errorf("pass took %v with outcomes %v; want it to end near its 1.5 s deadline with the rest skipped", took, n)
	}
	for _, x := range res {
		if x.Outcome == Skipped {
			if d := p.data("stora/partner/connections/" + strings.TrimPrefix(x.Client, "partner/")); d[keyClaim] != nil {
				t.Errorf("%s: skipped but its claim was left", x.Client)
			}
		}
	}
}

func TestDeletedConnectionIsSkipped(t *testing.T) {
	t.Parallel()
	p := newPartnerWorld(t, 2)
	if err := p.vault.Client.KVv2("secret").Delete(context.Background(), "stora/partner/connections/op-001"); err != nil {
		t.Fatal(err)
	}
	res := p.rotator().Pass(context.Background())
	if AnyFailed(res) || len(res) != 2 {
		t.Errorf("results %+v: a deleted connection (an operator offboarded) must not fail the pass", res)
	}
}

func TestConcurrencyIsBounded(t *testing.T) {
	t.Parallel()
	p := newPartnerWorld(t, 24)
	var inFlight, peak atomic.Int32
	p.stora.Intercept = func(http.ResponseWriter, *http.Request) bool {
		n := inFlight.Add(1)
		for {
			m := peak.Load()
			if n <= m || peak.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(30 * time.Millisecond)
		inFlight.Add(-1)
		return false
	}
	r := p.rotator()
	r.Concurrency = 6
	r.Pass(context.Background())
	if peak.Load() != 6 {
		t.Errorf("at most %d token requests were in flight at once, want exactly the concurrency, 6", peak.Load())
	}
}

func TestPassDeadlineProgressAndSummary(t *testing.T) {
	t.Parallel()
	p := newPartnerWorld(t, 12)
	p.stora.Intercept = func(http.ResponseWriter, *http.Request) bool {
		time.Sleep(40 * time.Millisecond)
		return false
	}
	var logs testenv.SyncBuffer
	r := p.rotator()
	r.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	r.PassDeadline = 150 * time.Millisecond
	r.ProgressEvery = 30 * time.Millisecond
	res := r.Pass(context.Background())
	n := map[Outcome]int{}
	for _, x := range res {
		n[x.Outcome]++
	}
	if n[Rotated] == 0 || n[Skipped] == 0 || n[Rotated]+n[Skipped] != 12 || n[Failed] != 0 {
		t.Errorf("outcomes %v, want some rotated and the rest skipped at the deadline", n)
	}
	out := logs.String()
	if !strings.Contains(out, `"msg":"pass progress"`) || !strings.Contains(out, `"msg":"pass done"`) ||
		!strings.Contains(out, fmt.Sprintf(`"rotated":%d`, n[Rotated])) || !strings.Contains(out, "pass deadline reached") {
		t.Errorf("no progress line, summary or deadline reason:\n%s", out)
	}
	// What the deadline left is rotated by the next pass.
	r.PassDeadline = 0
	for _, x := range r.Pass(context.Background()) {
		if x.Outcome != Rotated && x.Outcome != NotDue {
			t.Errorf("%s: %s", x.Client, x.Outcome)
		}
	}
}

func TestSpreadRotatesSomeEarly(t *testing.T) {
	t.Parallel()
	// Forty tokens issued together, 50 minutes left each: with renew_before 30m none is due; with
	// a 30m spread, thresholds fall evenly in [30m, 60m), so about a third are (those past 50m).
	p := newPartnerWorld(t, 0)
	exp := time.Now().Add(50 * time.Minute).UTC().Format(time.RFC3339)
	for i := 0; i < 40; i++ {
		p.put(fmt.Sprintf("stora/partner/connections/op-%02d", i), map[string]any{"refresh_token": p.stora.IssueRefreshToken(p.id, "public.contact:read"),
			"access_token": "a", "expires_at": exp})
	}
	r := p.rotator()
	r.DryRun = true
	count := func() int {
		n := 0
		for _, x := range r.Pass(context.Background()) {
			if x.Outcome == DryRun {
				n++
			}
		}
		return n
	}
	if n := count(); n != 0 {
		t.Errorf("without spread %d due, want 0", n)
	}
	r.Spread = 30 * time.Minute
	if n := count(); n < 6 || n > 22 {
		t.Errorf("with a 30m spread %d of 40 due, want about a third", n)
	}
}
