package daemon

import (
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/metrics"
)

// metricsLimits are the listener's bounds from its settings.
func metricsLimits(cfg config.Metrics) metrics.Limits {
	return metrics.Limits{MaxConnections: cfg.MaxConnections, PerSource: cfg.MaxConnectionsPerSource,
		RequestTimeout: time.Duration(cfg.RequestTimeout) * time.Second}
}

// MetricsStatus is the listener's table in "phonebook status": its
// counters readable over the buses, not only on the endpoint that
// refuses.
type MetricsStatus struct {
	Enabled bool              `json:"enabled"`
	Open    int32             `json:"open"`
	Served  int64             `json:"served"`
	Refused int64             `json:"refused"`
	Shed    MetricsShedCounts `json:"shed"`
	Panics  int64             `json:"panics"`
}

// MetricsShedCounts are the listener's connections shed, by cause.
type MetricsShedCounts struct {
	PerSource      int64 `json:"per_source"`
	Busy           int64 `json:"busy"`
	Evicted        int64 `json:"evicted"`
	RequestTimeout int64 `json:"request_timeout"`
}

// metricsStatus is the listener's table in "phonebook status".
func (d *Daemon) metricsStatus() MetricsStatus {
	cfg := d.config().Metrics
	var st metrics.Stats
	if d.metricsSrv != nil {
		st = d.metricsSrv.Stats()
	}
	return MetricsStatus{Enabled: cfg.Listen != "", Open: int32(st.Open), Served: st.Served, Refused: st.Refused(),
		Shed:   MetricsShedCounts{PerSource: st.PerSource, Busy: st.Busy, Evicted: st.Evicted, RequestTimeout: st.TimedOut},
		Panics: st.Panics}
}
