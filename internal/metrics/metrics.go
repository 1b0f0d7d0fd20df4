// Package metrics keeps cyberdrew's Prometheus metrics in a registry of its
// own and serves them in the text format. The engine and the HTTP surface
// feed it through the small observer interfaces they declare; nothing here
// scans the store on a scrape except the one queue-depth call.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// QueueDepth reports the number of runs waiting to be claimed.
type QueueDepth func(ctx context.Context) (int, error)

// Metrics are the daemon's counters, gauges and histograms.
type Metrics struct {
	reg *prometheus.Registry

	eventsAccepted prometheus.Counter
	eventsRejected *prometheus.CounterVec
	runsStarted    *prometheus.CounterVec
	runsSkipped    *prometheus.CounterVec
	runsFinished   *prometheus.CounterVec
	stepDuration   *prometheus.HistogramVec
	stepConflicts  *prometheus.CounterVec
	startLag       prometheus.Histogram
	leasesLost     prometheus.Counter
	leaseTakeovers prometheus.Counter
	storeErrors    *prometheus.CounterVec
	httpRequests   *prometheus.CounterVec
	emailDelivery  *prometheus.CounterVec
}

// New registers every metric in a new registry. depth, when not nil, is
// called once per scrape for cyberdrew_queue_depth.
func New(depth QueueDepth) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		eventsAccepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cyberdrew_events_accepted_total", Help: "Events accepted by the event API.",
		}),
		eventsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cyberdrew_events_rejected_total", Help: "Event API requests rejected, by reason.",
		}, []string{"reason"}),
		runsStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cyberdrew_runs_started_total", Help: "Runs started for the first time, by function.",
		}, []string{"function"}),
		runsSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cyberdrew_runs_skipped_total",
			Help: "Events that matched a function but started no run of their own, by function and reason (idempotency, rate_limit, singleton, debounce); counted by the daemon that took the event.",
		}, []string{"function", "reason"}),
		runsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cyberdrew_runs_finished_total", Help: "Runs finished by this daemon's workers, by function and status.",
		}, []string{"function", "status"}),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cyberdrew_step_duration_seconds",
			Help:    "Duration of step attempts, by function and outcome (completed, failed, retry).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"function", "outcome"}),
		stepConflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cyberdrew_step_conflicts_total",
			Help: "Transactional step commits refused because a key the step read had changed; the step body ran again. By function.",
		}, []string{"function"}),
		startLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cyberdrew_event_to_start_seconds",
			Help:    "Time from a run's creation (its event's arrival) to its first start.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 12),
		}),
		leasesLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cyberdrew_leases_lost_total", Help: "Runs this daemon stopped because another worker took their lease.",
		}),
		leaseTakeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cyberdrew_lease_takeovers_total", Help: "Runs this daemon's workers claimed from another worker whose lease had lapsed.",
		}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cyberdrew_store_errors_total", Help: "Failed store calls, by operation.",
		}, []string{"op"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cyberdrew_http_requests_total", Help: "HTTP requests, by route pattern and status code.",
		}, []string{"route", "code"}),
		emailDelivery: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cyberdrew_email_delivery_total",
			Help: "Delivery statuses Resend's webhooks reported for the contact emails, by email (notification, confirmation) and status (delivered, bounced, complained, delivery_delayed, failed).",
		}, []string{"email", "status"}),
	}
	m.reg.MustRegister(m.eventsAccepted, m.eventsRejected, m.runsStarted, m.runsSkipped, m.runsFinished, m.stepDuration, m.stepConflicts,
		m.startLag, m.leasesLost, m.leaseTakeovers, m.storeErrors, m.httpRequests, m.emailDelivery,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if depth != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cyberdrew_queue_depth", Help: "Runs due now and waiting for a worker (-1 when the store does not answer).",
		}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			n, err := depth(ctx)
			if err != nil {
				m.StoreError("queue depth")
				return -1
			}
			return float64(n)
		}))
	}
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Series names what the daemon's labelled counters count, so they exist at
// zero from the start: an alert on a rate of failures or rejections sees a
// series before the first one, not "no data".
type Series struct {
	Functions        []string // runs started, finished (by end status), step conflicts
	FinishStatuses   []string
	RejectionReasons []string // events rejected
	Emails           []string // email deliveries, by email and status
	DeliveryStatuses []string
	// Skips are the reasons each function can skip an event for (its flow
	// control): runs skipped, by function and reason.
	Skips map[string][]string
}

// Declare creates every series of s at zero.
func (m *Metrics) Declare(s Series) {
	for _, r := range s.RejectionReasons {
		m.eventsRejected.WithLabelValues(r)
	}
	for _, fn := range s.Functions {
		m.runsStarted.WithLabelValues(fn)
		m.stepConflicts.WithLabelValues(fn)
		for _, st := range s.FinishStatuses {
			m.runsFinished.WithLabelValues(fn, st)
		}
	}
	for fn, reasons := range s.Skips {
		for _, r := range reasons {
			m.runsSkipped.WithLabelValues(fn, r)
		}
	}
	for _, e := range s.Emails {
		for _, st := range s.DeliveryStatuses {
			m.emailDelivery.WithLabelValues(e, st)
		}
	}
}

// EventsAccepted counts n accepted events.
func (m *Metrics) EventsAccepted(n int) { m.eventsAccepted.Add(float64(n)) }

// EventsRejected counts one rejected intake request.
func (m *Metrics) EventsRejected(reason string) { m.eventsRejected.WithLabelValues(reason).Inc() }

// Request counts one HTTP request; route is the matched pattern.
func (m *Metrics) Request(route string, code int) {
	m.httpRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
}

// RunStarted counts a run's first start, lag after its creation.
func (m *Metrics) RunStarted(function string, lag time.Duration) {
	m.runsStarted.WithLabelValues(function).Inc()
	m.startLag.Observe(max(lag, 0).Seconds())
}

// RunSkipped counts an event that started no run of function, for reason.
func (m *Metrics) RunSkipped(function, reason string) {
	m.runsSkipped.WithLabelValues(function, reason).Inc()
}

// RunFinished counts a finished run.
func (m *Metrics) RunFinished(function, status string) {
	m.runsFinished.WithLabelValues(function, status).Inc()
}

// StepAttempt observes one step attempt's duration.
func (m *Metrics) StepAttempt(function, outcome string, d time.Duration) {
	m.stepDuration.WithLabelValues(function, outcome).Observe(d.Seconds())
}

// StepConflict counts a transactional step commit that conflicted.
func (m *Metrics) StepConflict(function string) { m.stepConflicts.WithLabelValues(function).Inc() }

// LeaseLost counts a run stopped because its lease was lost.
func (m *Metrics) LeaseLost() { m.leasesLost.Inc() }

// LeaseTakenOver counts a run claimed from a lapsed lease of another worker.
func (m *Metrics) LeaseTakenOver() { m.leaseTakeovers.Inc() }

// StoreError counts a failed store call.
func (m *Metrics) StoreError(op string) { m.storeErrors.WithLabelValues(op).Inc() }

// EmailDelivery counts a delivery status reported for one of the contact
// emails.
func (m *Metrics) EmailDelivery(email, status string) {
	m.emailDelivery.WithLabelValues(email, status).Inc()
}
