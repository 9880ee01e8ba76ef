package ha

import "testing"

// TestStandbyForwardsRequests gives the job a standby's address, as a load balancer in front of
// the cluster may: the standby forwards every request to the leader, and the pass rotates every
// client as it would against the leader.
func TestStandbyForwardsRequests(t *testing.T) {
	w := newWorld(t)
	paths := w.seed(5)
	standby := w.cluster.Standby(t)
	code, out := w.run(w.config(standby.Addr, paths))
	if code != 0 {
		t.Fatalf("exit %d through standby %s:\n%s", code, standby.Name, out)
	}
	if got := outcomes(out)["rotated"]; got != len(paths) {
		t.Errorf("rotated %d of %d through a standby:\n%s", got, len(paths), out)
	}
	if n := w.working(paths); n != len(paths) {
		t.Errorf("%d of %d secrets hold a refresh token the server accepts", n, len(paths))
	}
}
