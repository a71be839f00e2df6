package health

import (
	"math"
	"time"
)

// Trend fits a least-squares line to the samples of a sliding window,
// decimated to at most about TrendPoints points whatever the sampling
// rate: a sample closer than window/TrendPoints to the last point kept
// replaces it.
type Trend struct {
	window time.Duration
	t      []time.Time
	v      []float64
}

// TrendPoints bounds the points a trend keeps.
const TrendPoints = 120

// NewTrend keeps samples younger than window.
func NewTrend(window time.Duration) *Trend { return &Trend{window: window} }

// Len is the number of points kept.
func (tr *Trend) Len() int { return len(tr.t) }

// Add appends a sample and drops those older than the window.
func (tr *Trend) Add(t time.Time, v float64) {
	if n := len(tr.t); n >= 2 && t.Sub(tr.t[n-2]) < tr.window/TrendPoints {
		tr.t[n-1], tr.v[n-1] = t, v // within the last point's span
		return
	}
	tr.t = append(tr.t, t)
	tr.v = append(tr.v, v)
	i := 0
	for i < len(tr.t) && t.Sub(tr.t[i]) > tr.window {
		i++
	}
	if i > 0 {
		tr.t = append(tr.t[:0], tr.t[i:]...)
		tr.v = append(tr.v[:0], tr.v[i:]...)
	}
}

// Full reports whether the samples span (nearly) the whole window.
func (tr *Trend) Full() bool {
	return len(tr.t) >= 3 && tr.t[len(tr.t)-1].Sub(tr.t[0]) >= tr.window*9/10
}

// Fit returns the slope per hour and R squared (0 for fewer than 3
// samples or no variation).
func (tr *Trend) Fit() (perHour, r2 float64) {
	n := float64(len(tr.t))
	if n < 3 {
		return 0, 0
	}
	t0 := tr.t[0]
	var sx, sy, sxx, sxy, syy float64
	for i := range tr.t {
		x := tr.t[i].Sub(t0).Hours()
		y := tr.v[i]
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
		syy += y * y
	}
	vx := sxx - sx*sx/n
	vy := syy - sy*sy/n
	if vx <= 0 {
		return 0, 0
	}
	slope := (sxy - sx*sy/n) / vx
	if vy <= 0 {
		return slope, 0
	}
	r := (sxy - sx*sy/n) / math.Sqrt(vx*vy)
	return slope, r * r
}

// LeakRule holds the detector's settings.
type LeakRule struct {
	Warmup       time.Duration
	Window       time.Duration
	GrowthFactor float64
	MinSlope     float64 // units per hour
	// RelSlope raises MinSlope to this fraction of the baseline per hour:
	// resident memory creeps as the runtime touches pages, which is not a
	// leak; the live heap does not, so it uses the absolute floor only.
	RelSlope float64
	MinFit   float64
}

// Leak watches one quantity (live heap, RSS, open descriptors) for a leak:
// no verdict before warm-up and a full window; then a leak while the
// window's least-squares trend rises faster than MinSlope with a fit of at
// least MinFit, or while it still rises (with that fit) after growing past
// GrowthFactor times the baseline taken at the end of warm-up. It clears
// when the growth stops.
type Leak struct {
	rule     LeakRule
	start    time.Time
	trend    *Trend
	baseline float64
	based    bool
	detected bool
	since    time.Time
	slope    float64
	fit      float64
}

// NewLeak starts a detector at start.
func NewLeak(rule LeakRule, start time.Time) *Leak {
	return &Leak{rule: rule, start: start, trend: NewTrend(rule.Window)}
}

// Add takes a sample and returns whether a leak is detected now.
func (l *Leak) Add(t time.Time, v float64) bool {
	if t.Sub(l.start) < l.rule.Warmup {
		return false
	}
	if !l.based {
		l.baseline, l.based = v, true
	}
	l.trend.Add(t, v)
	if !l.trend.Full() {
		return false
	}
	l.slope, l.fit = l.trend.Fit()
	rising := l.slope > 0 && l.fit >= l.rule.MinFit
	minSlope := max(l.rule.MinSlope, l.rule.RelSlope*l.baseline)
	leak := rising && (l.slope >= minSlope || v >= l.rule.GrowthFactor*l.baseline)
	if leak && !l.detected {
		l.since = t
	}
	l.detected = leak
	return leak
}

// Detected reports the current verdict and since when.
func (l *Leak) Detected() (bool, time.Time) { return l.detected, l.since }

// Baseline is the value at the end of warm-up (false before).
func (l *Leak) Baseline() (float64, bool) { return l.baseline, l.based }

// Slope is the last fitted growth per hour and its R squared.
func (l *Leak) Slope() (float64, float64) { return l.slope, l.fit }
