package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Cluster is a Vault cluster with integrated storage (Raft): Vault's production set-up, each node
// a real `vault server` process on loopback ports of its own, with its own data directory, joined
// by retry_join. It is initialised with one unseal key share, has a KV v2 mount at secret/ and the
// job's policy (deploy/vault/token-rotator.hcl) as "token-rotator". Nodes can be stopped, killed,
// sealed and restarted; Heal brings the cluster back to every node unsealed and voting.
type Cluster struct {
	// Nodes are the cluster's nodes, node1 first. Which one leads changes: see Leader.
	Nodes []*Node
	// Token is the root token.
	Token string

	bin       string
	unsealKey string
	dir       string
}

// Node is one `vault server` process of a Cluster.
type Node struct {
	// Name is its Raft node ID: node1, node2, ...
	Name string
	// Addr is its API address, http://127.0.0.1:PORT: what the job would be given as VAULT_ADDR.
	Addr string
	// Client is an API client of this node alone, logged in with the root token. A standby
	// forwards its requests to the leader.
	Client *api.Client

	cluster *Cluster
	config  string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	out     *SyncBuffer
}

// StartCluster starts an n-node cluster (3 or 5 in production), initialises and unseals it, and
// waits until every node votes. It is stopped when tb ends. Starting takes about 10 s, so a test
// package shares one: see SharedCluster.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	c, err := newCluster(n)
	if c != nil {
		tb.Cleanup(c.Stop)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

var shared struct {
	once sync.Once
	c    *Cluster
	err  error
}

// SharedCluster is a 3-node cluster started on first use and shared by the test package's
// tests, which run it one at a time and each Heal it when done. The package's TestMain calls
// StopSharedCluster after m.Run.
func SharedCluster(tb testing.TB) *Cluster {
	tb.Helper()
	RequireVault(tb)
	shared.once.Do(func() { shared.c, shared.err = newCluster(3) })
	if shared.err != nil {
		tb.Fatal(shared.err)
	}
	return shared.c
}

// StopSharedCluster stops the cluster SharedCluster started, if any.
func StopSharedCluster() {
	if shared.c != nil {
		shared.c.Stop()
	}
}

func newCluster(n int) (c *Cluster, err error) {
	bin := VaultBinary()
	if bin == "" {
		return nil, fmt.Errorf("no vault binary: run `make test`, which builds one, or set VAULT_BIN")
	}
	dir, err := os.MkdirTemp("", "vault-raft")
	if err != nil {
		return nil, err
	}
	c = &Cluster{bin: bin, dir: dir}
	defer func() {
		if err != nil {
			err = fmt.Errorf("vault cluster: %w\n%s", err, c.logs())
		}
	}()
	startMu.Lock()
	ports, err := freePorts(2 * n)
	startMu.Unlock()
	if err != nil {
		return c, err
	}
	var joins strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&joins, "  retry_join { leader_api_addr = \"http://127.0.0.1:%d\" }\n", ports[2*i])
	}
	for i := 0; i < n; i++ {
		node := &Node{cluster: c, Name: fmt.Sprintf("node%d", i+1), Addr: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i])}
		data := filepath.Join(dir, node.Name)
		if err := os.MkdirAll(data, 0o700); err != nil {
			return c, err
		}
		// performance_multiplier 1: production's election timing (Vault's default, 5, is for
		// slow development machines), so a failover takes about 2 s.
		hcl := fmt.Sprintf(`storage "raft" {
  path = %q
  node_id = %q
  performance_multiplier = 1
%s}
listener "tcp" {
  address = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable = true
}
api_addr = %q
cluster_addr = "https://127.0.0.1:%d"
disable_mlock = true
log_level = "warn"
`, data, node.Name, joins.String(), ports[2*i], ports[2*i+1], node.Addr, ports[2*i+1])
		node.config = filepath.Join(dir, node.Name+".hcl")
		if err := os.WriteFile(node.config, []byte(hcl), 0o600); err != nil {
			return c, err
		}
		cfg := api.DefaultConfig()
		cfg.Address = node.Addr
		cfg.MaxRetries = 0
		cfg.Timeout = 10 * time.Second
		if node.Client, err = api.NewClient(cfg); err != nil {
			return c, err
		}
		c.Nodes = append(c.Nodes, node)
		if err := node.start(); err != nil {
			return c, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := c.Nodes[0]
	var init *api.InitResponse
	if err := poll(ctx, func() (err error) {
		init, err = first.Client.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
		return err
	}); err != nil {
		return c, fmt.Errorf("init: %w", err)
	}
	c.Token, c.unsealKey = init.RootToken, init.KeysB64[0]
	for _, node := range c.Nodes {
		node.Client.SetToken(c.Token)
	}
	if err := first.unseal(ctx); err != nil {
		return c, err
	}
	// Autopilot makes a joined node a voter once it has been healthy this long; Vault's 10 s
	// default would make every start and heal wait for it.
	if err := poll(ctx, func() error {
		_, err := first.Client.Logical().WriteWithContext(ctx, "sys/storage/raft/autopilot/configuration",
			map[string]any{"server_stabilization_time": "1s"})
		return err
	}); err != nil {
		return c, fmt.Errorf("autopilot configuration: %w", err)
	}
	for _, node := range c.Nodes[1:] {
		if err := node.unseal(ctx); err != nil {
			return c, err
		}
	}
	if err := c.waitHealthy(ctx); err != nil {
		return c, err
	}
	policy, err := os.ReadFile(filepath.Join(moduleRoot(), "deploy", "vault", "token-rotator.hcl"))
	if err != nil {
		return c, err
	}
	leader := first.Client
	if err := leader.Sys().MountWithContext(ctx, "secret", &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		return c, fmt.Errorf("mount secret/: %w", err)
	}
	if err := leader.Sys().PutPolicyWithContext(ctx, "token-rotator", string(policy)); err != nil {
		return c, fmt.Errorf("policy: %w", err)
	}
	// A new KV v2 mount upgrades itself in the background; writes fail until it has.
	if err := poll(ctx, func() error {
		_, err := leader.KVv2("secret").Put(ctx, "cluster-ready", map[string]any{"ok": "yes"})
		return err
	}); err != nil {
		return c, fmt.Errorf("secret/ not writable: %w", err)
	}
	return c, nil
}

// JobToken returns a new token with the job's policy (and Vault's default policy), periodic with
// the given period so that the job renews it, as a production token would be.
func (c *Cluster) JobToken(tb testing.TB, period time.Duration) string {
	tb.Helper()
	client := c.Leader(tb).Client
	s, err := client.Auth().Token().Create(&api.TokenCreateRequest{
		Policies: []string{"token-rotator"}, Period: period.String(),
	})
	if err != nil {
		tb.Fatalf("create the job's token: %v", err)
	}
	return s.Auth.ClientToken
}

// Leader returns the node that leads now, waiting up to 30 s for an election.
func (c *Cluster) Leader(tb testing.TB) *Node {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var leader *Node
	err := poll(ctx, func() error {
		leader = c.leader(ctx)
		if leader == nil {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("vault cluster: no leader within 30 s\n%s", c.logs())
	}
	return leader
}

// leader asks each running, unsealed node which node leads, and returns the one that says it is.
func (c *Cluster) leader(ctx context.Context) *Node {
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		l, err := n.Client.Sys().LeaderWithContext(ctx)
		if err == nil && l.IsSelf {
			return n
		}
	}
	return nil
}

// Standby returns a running, unsealed node that does not lead.
func (c *Cluster) Standby(tb testing.TB) *Node {
	tb.Helper()
	leader := c.Leader(tb)
	for _, n := range c.Nodes {
		if n != leader && n.running() {
			if h, err := n.Client.Sys().Health(); err == nil && !h.Sealed && h.Standby {
				return n
			}
		}
	}
	tb.Fatalf("vault cluster: no unsealed standby\n%s", c.logs())
	return nil
}

// Heal brings every node back: a stopped or killed node is started, a sealed one unsealed, and
// it waits until autopilot reports every node a healthy voter. Tests that break the cluster call
// it when done, so the next test finds the cluster whole.
func (c *Cluster) Heal(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, n := range c.Nodes {
		if !n.running() {
			if err := n.start(); err != nil {
				tb.Fatalf("vault cluster: restart %s: %v", n.Name, err)
			}
		}
	}
	for _, n := range c.Nodes {
		if err := n.unseal(ctx); err != nil {
			tb.Fatalf("vault cluster: %v\n%s", err, c.logs())
		}
	}
	if err := c.waitHealthy(ctx); err != nil {
		tb.Fatalf("vault cluster: %v\n%s", err, c.logs())
	}
	for _, n := range c.Nodes {
		// Autopilot's view lags a restart; each node must also answer as active or standby.
		if err := poll(ctx, func() error {
			h, err := n.Client.Sys().HealthWithContext(ctx)
			if err != nil || h.Sealed || !h.Initialized {
				return fmt.Errorf("%s not serving: %v", n.Name, err)
			}
			return nil
		}); err != nil {
			tb.Fatalf("vault cluster: %v\n%s", err, c.logs())
		}
	}
}

// waitHealthy waits until autopilot, asked through a running node, reports the cluster healthy
// with every node a voter.
func (c *Cluster) waitHealthy(ctx context.Context) error {
	var last string
	err := poll(ctx, func() error {
		for _, n := range c.Nodes {
			if !n.running() {
				continue
			}
			s, err := n.Client.Sys().RaftAutopilotStateWithContext(ctx)
			if err != nil || s == nil {
				last = fmt.Sprint(err)
				continue
			}
			voters := 0
			for _, srv := range s.Servers {
				if (srv.Status == "voter" || srv.Status == "leader") && srv.Healthy {
					voters++
				}
			}
			if s.Healthy && voters == len(c.Nodes) {
				return nil
			}
			last = fmt.Sprintf("autopilot: healthy %v, %d of %d nodes healthy voters", s.Healthy, voters, len(c.Nodes))
			return fmt.Errorf("%s", last)
		}
		return fmt.Errorf("no node answers: %s", last)
	})
	if err != nil {
		return fmt.Errorf("not healthy: %s", last)
	}
	return nil
}

// Stop stops every node and removes the cluster's data.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.signal(syscall.SIGKILL)
	}
	_ = os.RemoveAll(c.dir)
}

func (c *Cluster) logs() string {
	var b strings.Builder
	for _, n := range c.Nodes {
		if n.out != nil {
			fmt.Fprintf(&b, "--- %s (%s)\n%s", n.Name, n.Addr, lastLines(n.out.String(), 20))
		}
	}
	return b.String()
}

// Kill ends the node with SIGKILL, as a crash or an OOM kill would, and waits until it is gone.
func (n *Node) Kill(tb testing.TB) {
	tb.Helper()
	n.signal(syscall.SIGKILL)
}

// Stop ends the node with SIGTERM, as an orderly restart or a drained pod would, and waits until
// it is gone (a leader steps down first).
func (n *Node) Stop(tb testing.TB) {
	tb.Helper()
	n.signal(syscall.SIGTERM)
}

// Start starts a stopped or killed node again on its ports and data. It comes up sealed, as a
// restarted production node does: Unseal it, or Heal the cluster.
func (n *Node) Start(tb testing.TB) {
	tb.Helper()
	if err := n.start(); err != nil {
		tb.Fatalf("vault cluster: start %s: %v", n.Name, err)
	}
}

// Unseal unseals the node with the cluster's key, waiting until it answers unsealed.
func (n *Node) Unseal(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.unseal(ctx); err != nil {
		tb.Fatal(err)
	}
}

// Seal leaves the node running but sealed, answering 503 to every request: the leader is sealed
// through sys/seal; a standby, which Vault will not seal, is restarted and left sealed, as a node
// is during an upgrade.
func (n *Node) Seal(tb testing.TB) {
	tb.Helper()
	if h, err := n.Client.Sys().Health(); err == nil && !h.Standby && !h.Sealed {
		if err := n.Client.Sys().Seal(); err != nil {
			tb.Fatalf("vault cluster: seal %s: %v", n.Name, err)
		}
		return
	}
	n.Stop(tb)
	n.Start(tb)
}

// Sealed reports whether the node answers, sealed.
func (n *Node) Sealed() bool {
	s, err := n.Client.Sys().SealStatus()
	return err == nil && s.Sealed
}

func (n *Node) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		select {
		case <-n.exited:
		default:
			return nil // running
		}
	}
	if n.out == nil {
		n.out = &SyncBuffer{}
	}
	cmd := exec.Command(n.cluster.bin, "server", "-config="+n.config)
	cmd.Env = append(os.Environ(), "HOME="+n.cluster.dir, "VAULT_ADDR=", "VAULT_TOKEN=")
	cmd.Stdout, cmd.Stderr = n.out, n.out
	dieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	n.cmd, n.exited = cmd, exited
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return poll(ctx, func() error {
		select {
		case <-exited:
			return fmt.Errorf("%s exited", n.Name)
		default:
		}
		_, err := n.Client.Sys().SealStatusWithContext(ctx)
		return err
	})
}

func (n *Node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

func (n *Node) signal(sig syscall.Signal) {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// unseal gives the node the key until it answers unsealed; a node that has not yet joined the
// cluster (retry_join) answers "not initialized" and is asked again.
func (n *Node) unseal(ctx context.Context) error {
	err := poll(ctx, func() error {
		s, err := n.Client.Sys().SealStatusWithContext(ctx)
		if err == nil && s.Initialized && !s.Sealed {
			return nil
		}
		s, err = n.Client.Sys().UnsealWithContext(ctx, n.cluster.unsealKey)
		if err != nil {
			return err
		}
		if s.Sealed {
			return fmt.Errorf("still sealed")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("unseal %s: %w", n.Name, err)
	}
	return nil
}

// poll calls f every 100 ms until it returns nil or ctx ends, and returns f's last error then.
func poll(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	seen := map[int]bool{}
	var ports []int
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !seen[port] {
			seen[port] = true
			ports = append(ports, port)
		}
	}
	return ports, nil
}

// moduleRoot is the directory of the token-rotator module: two up from this file.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}
