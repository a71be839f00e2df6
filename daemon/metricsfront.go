package daemon

import (
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/metrics"
	"github.com/aredn/phonebookd/ubus"
)

// metricsLimits are the listener's bounds from its settings.
func metricsLimits(cfg config.Metrics) metrics.Limits {
	return metrics.Limits{MaxConnections: cfg.MaxConnections, PerSource: cfg.MaxConnectionsPerSource,
		RequestTimeout: time.Duration(cfg.RequestTimeout) * time.Second}
}

// metricsStatus is the listener's table in "phonebook status": its
// counters readable over ubus, not only on the endpoint that refuses.
func (d *Daemon) metricsStatus() ubus.Value {
	cfg := d.config().Metrics
	var st metrics.Stats
	if d.metricsSrv != nil {
		st = d.metricsSrv.Stats()
	}
	return ubus.Tbl("metrics", ubus.Bool("enabled", cfg.Listen != ""), ubus.I32("open", int32(st.Open)),
		ubus.I64("served", st.Served), ubus.I64("refused", st.Refused()),
		ubus.Tbl("shed", ubus.I64("per_source", st.PerSource), ubus.I64("busy", st.Busy), ubus.I64("evicted", st.Evicted), ubus.I64("request_timeout", st.TimedOut)),
		ubus.I64("panics", st.Panics))
}
