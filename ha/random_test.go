package ha

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"token-rotator/internal/testenv"
)

// TestLeaderKilledAtRandomMoments kills the cluster's leader with SIGKILL at a random moment of a
// `--once --force` pass over 5 clients, 20 times, the job talking to a standby, and heals the
// cluster after each kill. Only Vault's leader dies, never the job, so no refresh token may be
// lost: a pair granted while the cluster has no leader must wait in the job until a new leader
// takes the write. Runs alternate between the job's Vault client as shipped (2 retries of a failed
// request, 1-1.5 s apart, which ride out most elections by themselves) and its retries off
// (VAULT_MAX_RETRIES=0), where the write-back's own retry alone holds a granted pair. It asserts,
// for every run: every secret holds a refresh token the server accepts; the exit code is the
// README's for the outcomes logged (0; 1 when a client failed; 2 only for a start-up error, no
// client attempted); a client that failed spent nothing (the server granted it nothing that run,
// and Vault holds the refresh token it held before); and, for each setting, that some pair was
// granted before a new leader was elected and stored after the kill (else the kills missed what
// the test is for). It prints the failover as the cluster saw it (the kill to a node answering
// that it leads) and as the job saw it (the kill to the job's first write after it, from Vault's
// version metadata).
func TestLeaderKilledAtRandomMoments(t *testing.T) {
	const runs, clients = 20, 5
	k := &leaderKiller{t: t, w: newWorld(t)}
	k.paths = k.w.seed(clients)
	ids := map[string]string{} // client_id → path
	for _, p := range k.paths {
		ids[k.w.data(p)["client_id"].(string)] = p
	}
	k.w.stora.Issued = func(clientID, rt string) {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.grants[ids[clientID]] = grant{rt: rt, at: time.Now()}
	}

	// Calibrate on a whole cluster: a warm-up run (builds the job), then the median of 3.
	k.grants = map[string]grant{}
	cfg := quickConfig(t, k.w, k.w.cluster.Standby(t).Addr, k.paths)
	var took []time.Duration
	for i := 0; i < 4; i++ {
		start := time.Now()
		if code, out := k.w.run(cfg, "--force"); code != 0 {
			t.Fatalf("calibration run: exit %d\n%s", code, out)
		}
		took = append(took, time.Since(start))
	}
	pass := medianOf(took[1:])

	settings := []*tally{
		{vaultRetries: "", name: "the job's Vault client as shipped (2 retries of a failed request, VAULT_MAX_RETRIES unset)"},
		{vaultRetries: "0", name: "the Vault client's own retries off (VAULT_MAX_RETRIES=0): the write-back's retry alone holds a granted pair"},
	}
	var heals []time.Duration
	for i := 0; i < runs; i++ {
		// Each run's kill falls at random in its own twentieth of a pass, so the kills spread
		// over the whole pass, each setting's too.
		delay := time.Duration((float64(i) + rand.Float64()) / runs * float64(pass))
		heals = append(heals, k.run(i, delay, settings[i%len(settings)]))
	}
	t.Logf("heal after each kill (from the election, the job still running): median %v, max %v", medianOf(heals).Round(time.Millisecond), maxOf(heals).Round(time.Millisecond))
	for _, s := range settings {
		if s.waited == 0 {
			t.Errorf("%s: no pair was granted before a new leader was elected and stored after the kill in %d runs: the kills missed the write-back the test is for", s.name, s.runs)
		}
		t.Logf("RELIABILITY ha | SIGKILL to the leader at a random moment of a `--once --force` pass over %d clients (Stora's per-minute token limit off, so a pass takes half a second), the job given a standby's address, %s; %d runs, each run killed at random in its own twentieth of the %v a pass takes; %s | %s; outcomes %s; %d clients failed, each having spent nothing (the test fails otherwise); %d claims left; %d pairs granted before a new leader was elected waited in the job and were stored after the kill (the longest %v from grant to Vault); %d write-back retries; new leader elected %v median, %v max after the kill; the job's first write after the kill %v median, %v max after it (%d runs); runs took %v median, %v max | %d refresh tokens lost (the test fails above 0); every secret holds a working pair after every run",
			clients, s.name, s.runs, pass.Round(time.Millisecond), stepCounts(s.steps, clients), exitCounts(s.exits), summary(s.outcomes),
			s.failedClients, s.claimsLeft, s.waited, maxOf(s.longest).Round(100*time.Millisecond), s.writeRetries,
			medianOf(s.elections).Round(100*time.Millisecond), maxOf(s.elections).Round(100*time.Millisecond),
			medianOf(s.seen).Round(100*time.Millisecond), maxOf(s.seen).Round(100*time.Millisecond), len(s.seen),
			medianOf(s.runTimes).Round(100*time.Millisecond), maxOf(s.runTimes).Round(100*time.Millisecond), s.lost)
	}
}

// leaderKiller runs the job and kills the cluster's leader under it.
type leaderKiller struct {
	t     *testing.T
	w     *world
	paths []string

	mu     sync.Mutex
	grants map[string]grant // by path: the last pair the server granted in this run
}

// tally is what the runs with one setting of the job's Vault client did.
type tally struct {
	name         string
	vaultRetries string // VAULT_MAX_RETRIES for the job; "" leaves it unset

	runs, lost, failedClients, waited, claimsLeft, writeRetries int
	exits, steps                                                map[int]int
	outcomes                                                    map[string]int
	elections, seen, longest, runTimes                          []time.Duration
}

// run starts a pass, kills the leader delay into it, restarts and unseals the killed node once a
// new leader is elected, waits for the pass to end, and checks and counts into s what it left in
// Vault. It returns how long the heal took.
func (k *leaderKiller) run(i int, delay time.Duration, s *tally) time.Duration {
	t, w := k.t, k.w
	t.Helper()
	leader := w.cluster.Leader(t)
	cfg := quickConfig(t, w, w.cluster.Standby(t).Addr, k.paths)
	held := map[string]string{} // path → refresh token before the run
	for _, p := range k.paths {
		held[p], _ = w.data(p)["refresh_token"].(string)
	}
	k.mu.Lock()
	k.grants = map[string]grant{}
	k.mu.Unlock()
	requests := len(w.stora.Requests())

	var out testenv.SyncBuffer
	cmd := w.command(cfg, "--force")
	cmd.Env = withEnv(cmd.Env, "VAULT_MAX_RETRIES", s.vaultRetries)
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var exited time.Time // when the job exited; read after done
	go func() {
		err := cmd.Wait()
		exited = time.Now()
		done <- err
	}()
	time.Sleep(delay)
	killedAt := time.Now()
	step := stepAt(done, len(w.stora.Requests())-requests)
	leader.Kill(t)
	// The cluster's side of the failover: until a node left answers that it leads. Then the
	// killed node is restarted and unsealed while the job still works, as an orchestrator
	// restarts a crashed pod, so the next run finds three nodes again.
	elected := electionTime(w.cluster, leader, killedAt)
	healStart := time.Now()
	w.cluster.Heal(t)
	healed := time.Since(healStart)
	err := <-done
	runTime := exited.Sub(start)
	code := 0
	if err != nil {
		code = cmd.ProcessState.ExitCode()
	}

	// What the run did, per client, against what Vault holds now.
	logs := out.String()
	byClient := clientOutcomes(logs)
	k.mu.Lock()
	grants := k.grants
	k.mu.Unlock()
	var firstWrite time.Time
	for ci, p := range k.paths {
		name := fmt.Sprintf("c%02d", ci)
		sec, err := w.cluster.Leader(t).Client.KVv2("secret").Get(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range versions(t, w, p) {
			if v.After(killedAt) && (firstWrite.IsZero() || v.Before(firstWrite)) {
				firstWrite = v
			}
		}
		rt, _ := sec.Data["refresh_token"].(string)
		if g, ok := grants[p]; ok && rt == g.rt {
			stored := sec.VersionMetadata.CreatedTime
			if stored.After(killedAt) && g.at.Before(killedAt.Add(elected)) {
				s.waited++ // granted before the cluster had a leader again, stored after the kill
			}
			s.longest = append(s.longest, stored.Sub(g.at))
		}
		if !w.stora.RefreshTokenValid(rt) {
			s.lost++
			t.Errorf("run %d (killed %v in, %s): %s lost its refresh token; outcome %q\n%s", i, delay, stepName(step), p, byClient[name], logs)
			w.put(p, map[string]any{"client_id": sec.Data["client_id"], "client_secret": sec.Data["client_secret"],
				"refresh_token": w.stora.IssueRefreshToken(sec.Data["client_id"].(string), "public.contact:read")})
			continue
		}
		if o := byClient[name]; o == "failed" || o == "access_token_refused" {
			s.failedClients++
			if _, spent := grants[p]; spent || rt != held[p] {
				t.Errorf("run %d: %s failed (%s) after spending its refresh token: the server granted %v, Vault holds the one it held before: %v", i, name, o, spent, rt == held[p])
			}
		}
		if sec.Data["rotation_claim"] != nil {
			// A claim the failed client could not take back; it would keep later passes off the
			// secret for 15 minutes. Counted, and lapsed now so the next run rotates.
			s.claimsLeft++
			delete(sec.Data, "rotation_claim")
			w.put(p, sec.Data)
		}
	}
	if want := wantExit(byClient, len(w.stora.Requests())-requests); code != want {
		t.Errorf("run %d (killed %v in, %s): exit %d, want %d for outcomes %v\n%s", i, delay, stepName(step), code, want, byClient, logs)
	}
	if code != 0 {
		t.Logf("run %d exited %d: %s", i, code, lastLine(logs))
	}

	if s.exits == nil {
		s.exits, s.steps, s.outcomes = map[int]int{}, map[int]int{}, map[string]int{}
	}
	s.runs++
	s.exits[code]++
	s.steps[step]++
	for _, o := range byClient {
		s.outcomes[o]++
	}
	s.writeRetries += strings.Count(logs, `"msg":"write-back failed; retrying"`)
	s.elections = append(s.elections, elected)
	s.runTimes = append(s.runTimes, runTime)
	if !firstWrite.IsZero() {
		s.seen = append(s.seen, firstWrite.Sub(killedAt))
	}
	t.Logf("run %2d, VAULT_MAX_RETRIES=%q: killed %v in (%s); run %v; exit %d %v; leader elected after %v; job's first write after the kill %v; heal %v",
		i, s.vaultRetries, delay.Round(time.Millisecond), stepName(step), runTime.Round(time.Millisecond), code, byClient,
		elected.Round(time.Millisecond), orNone(firstWrite, killedAt), healed.Round(time.Millisecond))
	return healed
}

// withEnv is env with key set to value, or unset when value is "".
func withEnv(env []string, key, value string) []string {
	env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, key+"=") })
	if value != "" {
		env = append(env, key+"="+value)
	}
	return env
}

// grant is a refresh token the server issued, and when.
type grant struct {
	rt string
	at time.Time
}

// quickConfig is w.config with the per-minute token limit off: at Stora's 60 a minute a pass over
// 5 clients takes 4 s; at its 10 a second alone, half a second, the steps in the same order.
func quickConfig(t *testing.T, w *world, addr string, paths []string) string {
	t.Helper()
	f := w.config(addr, paths)
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, append([]byte("rate_limit: {per_second: 10, per_minute: 0}\n"), b...), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// stepAt tells the step a kill landed in: how many of the pass's token requests the server had
// seen by then, or -1 when the job had already exited.
func stepAt(done chan error, requests int) int {
	select {
	case err := <-done:
		done <- err
		return -1
	default:
		return requests
	}
}

// stepName says in words the step stepAt told.
func stepName(step int) string {
	if step < 0 {
		return "after the pass ended"
	}
	return fmt.Sprintf("%d token requests made", step)
}

// stepCounts writes how many kills landed at each step: "kills with 0, 1, …, 5 of 5 token
// requests made: n, n, …, n runs; n after the pass ended".
func stepCounts(steps map[int]int, clients int) string {
	var ks, ns []string
	for k := 0; k <= clients; k++ {
		ks, ns = append(ks, fmt.Sprint(k)), append(ns, fmt.Sprint(steps[k]))
	}
	return fmt.Sprintf("kills with %s of %d token requests made: %s runs; %d after the pass ended",
		strings.Join(ks, ", "), clients, strings.Join(ns, ", "), steps[-1])
}

// electionTime polls the nodes left, every 10 ms, until one answers that it leads, and returns
// the time from killedAt.
func electionTime(c *testenv.Cluster, killed *testenv.Node, killedAt time.Time) time.Duration {
	deadline := killedAt.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range c.Nodes {
			if n == killed {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			l, err := n.Client.Sys().LeaderWithContext(ctx)
			cancel()
			if err == nil && l.IsSelf {
				return time.Since(killedAt)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(killedAt)
}

// versions returns when each version of the secret at path that Vault still keeps was written.
func versions(t *testing.T, w *world, path string) []time.Time {
	t.Helper()
	m, err := w.cluster.Leader(t).Client.KVv2("secret").GetMetadata(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	var at []time.Time
	for _, v := range m.Versions {
		at = append(at, v.CreatedTime)
	}
	return at
}

// wantExit is README's exit code for a --once pass with these outcomes: 1 when a client failed,
// 0 otherwise; 2 (a start-up error) when no client was attempted and no token requested.
func wantExit(byClient map[string]string, requests int) int {
	if len(byClient) == 0 && requests == 0 {
		return 2
	}
	for _, o := range byClient {
		if o == "failed" || o == "access_token_refused" {
			return 1
		}
	}
	return 0
}

func medianOf(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func maxOf(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

func orNone(at, from time.Time) string {
	if at.IsZero() {
		return "none"
	}
	return at.Sub(from).Round(time.Millisecond).String()
}

// exitCounts writes exit codes as "exit 0: n runs, exit 1: n runs".
func exitCounts(m map[int]int) string {
	var codes []int
	for c := range m {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("exit %d: %d runs", c, m[c]))
	}
	return strings.Join(parts, ", ")
}

// lastLine is the last non-blank line of the job's output: its error, when it exits non-zero.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
