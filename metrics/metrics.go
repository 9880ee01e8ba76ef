// Package metrics exposes token-rotator's state to Prometheus (client_golang): what each pass did
// per client, when each access token expires, how long rotations take and what the token endpoint
// answered. Labels carry client and connection names only, never a token or secret.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/push"

	"token-rotator/rotate"
)

// Metrics holds the job's collectors in a registry of its own.
type Metrics struct {
	// Registry is what /metrics serves and --pushgateway pushes.
	Registry *prometheus.Registry

	rotations   *prometheus.CounterVec
	expiry      *prometheus.GaugeVec
	lastSuccess *prometheus.GaugeVec
	reauth      *prometheus.GaugeVec
	refreshExp  *prometheus.GaugeVec
	duration    *prometheus.HistogramVec
	responses   *prometheus.CounterVec
	lastPass    prometheus.Gauge
	ready       atomic.Bool

	mu      sync.Mutex
	tracked map[string]bool // targets with per-target series
}

// New registers the collectors, with Go and process collectors beside them.
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.rotations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "token_rotator_rotations_total",
		Help: "Rotations by client (or client/connection), grant and result (rotated, not_due, failed, ...).",
	}, []string{"client", "grant", "result"})
	m.expiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "token_rotator_access_token_expiry_timestamp_seconds",
		Help: "When the access token now in Vault stops working, Unix seconds. Alert when it nears time().",
	}, []string{"client"})
	m.lastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "token_rotator_last_success_timestamp_seconds",
		Help: "When the client was last rotated successfully by this process, Unix seconds.",
	}, []string{"client"})
	m.reauth = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "token_rotator_reauthorization_required",
		Help: "1 while the client or connection waits for an operator to authorize it again (status reauthorization_required or rotation_lost in Vault), 0 once a pass finds it otherwise.",
	}, []string{"client"})
	m.refreshExp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "token_rotator_refresh_token_expiry_timestamp_seconds",
		Help: "When the refresh token now in Vault stops working, Unix seconds, for servers that say (refresh_token_expires_in); absent when unknown. Past it, the client must be authorized again.",
	}, []string{"client"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "token_rotator_rotation_duration_seconds",
		Help:    "Time from reading a client's secret to its new token stored, for rotations attempted.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
	}, []string{"grant"})
	m.responses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "token_rotator_token_endpoint_responses_total",
		Help: "Token endpoint answers by HTTP status code, or \"transport\" for none.",
	}, []string{"status"})
	m.lastPass = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "token_rotator_last_pass_timestamp_seconds",
		Help: "When the last pass ended, Unix seconds.",
	})
	m.Registry.MustRegister(m.rotations, m.expiry, m.lastSuccess, m.reauth, m.refreshExp, m.duration, m.responses, m.lastPass,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Rotation records one target's outcome in a pass; took is how long it ran.
func (m *Metrics) Rotation(res rotate.Result, took time.Duration) {
	m.rotations.WithLabelValues(res.Client, res.Grant, string(res.Outcome)).Inc()
	switch {
	case res.Gone: // Vault holds no token for it any more
		m.forget(res.Client)
	case res.Status == "": // the pass attempted nothing: the last status seen stands
	case res.Status == rotate.StatusReauthorizationRequired, res.Status == rotate.StatusRotationLost:
		m.reauth.WithLabelValues(res.Client).Set(1)
		m.track(res.Client)
	default:
		m.reauth.WithLabelValues(res.Client).Set(0)
		m.track(res.Client)
	}
	if !res.Gone && !res.ExpiresAt.IsZero() {
		m.expiry.WithLabelValues(res.Client).Set(float64(res.ExpiresAt.Unix()))
		m.track(res.Client)
	}
	switch {
	case res.Gone || !res.RefreshExpiryRead: // forgotten above, or not looked at: the last value stands
	case res.RefreshExpiresAt.IsZero(): // Vault holds no expiry for its refresh token
		m.refreshExp.DeleteLabelValues(res.Client)
	default:
		m.refreshExp.WithLabelValues(res.Client).Set(float64(res.RefreshExpiresAt.Unix()))
		m.track(res.Client)
	}
	if res.Outcome == rotate.Rotated {
		m.lastSuccess.WithLabelValues(res.Client).SetToCurrentTime()
		m.track(res.Client)
	}
	if res.Grant != "" && (res.Outcome == rotate.Rotated || res.Outcome == rotate.Failed) {
		m.duration.WithLabelValues(res.Grant).Observe(took.Seconds())
	}
}

// TokenResponse counts one token endpoint answer: its HTTP status, or 0 for none.
func (m *Metrics) TokenResponse(status int) {
	label := "transport"
	if status > 0 {
		label = strconv.Itoa(status)
	}
	m.responses.WithLabelValues(label).Inc()
}

func (m *Metrics) track(client string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tracked == nil {
		m.tracked = map[string]bool{}
	}
	m.tracked[client] = true
}

// forget drops a target's per-target series: Vault holds no token for it.
func (m *Metrics) forget(client string) {
	m.expiry.DeleteLabelValues(client)
	m.lastSuccess.DeleteLabelValues(client)
	m.reauth.DeleteLabelValues(client)
	m.refreshExp.DeleteLabelValues(client)
	m.mu.Lock()
	delete(m.tracked, client)
	m.mu.Unlock()
}

// Targets learns the targets a pass found. When the list is complete (every connections prefix
// was listed), a target with series that is not on it (a connection deleted, metadata and all)
// loses them: Vault holds nothing for it any more.
func (m *Metrics) Targets(names []string, complete bool) {
	if !complete {
		return
	}
	listed := make(map[string]bool, len(names))
	for _, n := range names {
		listed[n] = true
	}
	m.mu.Lock()
	var gone []string
	for c := range m.tracked {
		if !listed[c] {
			gone = append(gone, c)
		}
	}
	m.mu.Unlock()
	for _, c := range gone {
		m.forget(c)
	}
}

// PassDone marks the end of a pass; the first one makes /readyz answer 200.
func (m *Metrics) PassDone() {
	m.lastPass.SetToCurrentTime()
	m.ready.Store(true)
}

// Handler serves /metrics, /healthz (the process is up) and /readyz (a pass has completed).
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "no pass has completed yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

// Serve listens on addr and serves Handler until ctx is done. The listener is open when it returns.
func (m *Metrics) Serve(ctx context.Context, addr string) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the daemon goes on rotating without its metrics endpoint
		}
	}()
	return l.Addr(), nil
}

// Push sends the registry to a Prometheus Pushgateway under job "token_rotator", for --once runs;
// each shard of a sharded run under its own "shard" grouping key, so shards do not replace each
// other's metrics. A push replaces the group's previous one: counters are the last run's.
func (m *Metrics) Push(ctx context.Context, url string, shard rotate.Shard) error {
	p := push.New(url, "token_rotator").Gatherer(m.Registry)
	if shard.Count > 1 {
		p = p.Grouping("shard", strconv.Itoa(shard.Index)+"_of_"+strconv.Itoa(shard.Count))
	}
	return p.PushContext(ctx)
}
