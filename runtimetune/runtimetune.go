// Package runtimetune fits the Go runtime to a small router (issue 19,
// point 2): a memory limit derived from the router's RAM unless UCI or
// the environment sets one, GOGC for a small heap, a scavenger that
// collects idle garbage and hands free heap pages back to the kernel once
// a load has fallen, and the executable's code paged out once start-up is
// done, so that neither a burst nor the idle daemon's trickle of
// allocations leaves the RSS above what the daemon really uses.
//
// Every setting comes from phonebook.health (memory_limit_mb,
// memory_limit_share, memory_limit_min_mb, memory_limit_max_mb,
// gc_percent, scavenge_interval, code_pageout) and is applied at start
// and on each reload; GOMEMLIMIT and GOGC in the environment win over
// UCI.
//
// GOMAXPROCS is left to the runtime: since Go 1.25 it follows the CPUs
// the process may run on (affinity and cgroup limit) and keeps following
// them, which is one on a single-core router. Setting it here would stop
// that.
package runtimetune

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
	"time"

	"github.com/aredn/phonebookd/config"
)

// The derived limit's defaults (phonebook.health.memory_limit_share,
// memory_limit_min_mb, memory_limit_max_mb): RAMShare of the router's
// RAM within [MinLimit, MaxLimit], 8 MB on a 64 MB router, 16 MB on
// 128 MB. The limit is soft: past it the collector runs more often (at
// most half the CPU, the runtime's own guard), nothing fails.
const (
	RAMShare = 8 // one eighth
	MinLimit = 8 << 20
	MaxLimit = 64 << 20
)

// DefaultGCPercent is GOGC when the settings carry none (settings built
// in code rather than read from UCI, where gc_percent has a default).
const DefaultGCPercent = 50

// Source says where the memory limit in force came from; the health
// document reports it beside the limit (memory_limit_source).
type Source string

// Sources of the memory limit.
const (
	FromEnv Source = "env"     // GOMEMLIMIT in the environment, left alone
	FromRAM Source = "derived" // MemTotal / memory_limit_share, within the bounds
	FromUCI Source = "uci"     // phonebook.health.memory_limit_mb above 0
	NoLimit Source = "none"    // MemTotal unreadable (or nothing applied): no limit
)

// Tuning is what Apply found and set, for the log.
type Tuning struct {
	MemTotal   uint64 // bytes of RAM, 0 when unread
	Limit      int64  // the memory limit in force (math.MaxInt64: none)
	Source     Source
	GCPercent  int  // GOGC in force; negative: collection off (GOGC=off)
	GCFromEnv  bool // GOGC came from the environment
	GOMAXPROCS int
}

// LimitBounds are the derived limit's share and bounds, in bytes.
type LimitBounds struct {
	Share    int // the limit is MemTotal / Share
	Min, Max int64
}

// boundsOf reads the derived limit's settings; zero (settings built in
// code) is the default, and a ceiling below the floor is the floor.
func boundsOf(h config.Health) LimitBounds {
	b := LimitBounds{Share: RAMShare, Min: MinLimit, Max: MaxLimit}
	if h.MemoryLimitShare > 0 {
		b.Share = h.MemoryLimitShare
	}
	if h.MemoryLimitMinMB > 0 {
		b.Min = int64(h.MemoryLimitMinMB) << 20
	}
	if h.MemoryLimitMaxMB > 0 {
		b.Max = int64(h.MemoryLimitMaxMB) << 20
	}
	b.Max = max(b.Max, b.Min)
	return b
}

// DeriveLimit is the memory limit for a router with memTotal bytes of RAM.
func DeriveLimit(memTotal uint64, b LimitBounds) int64 {
	return min(max(int64(memTotal/uint64(max(b.Share, 1))), b.Min), b.Max)
}

// ParseMemTotal reads MemTotal (bytes) from the text of /proc/meminfo.
func ParseMemTotal(b []byte) (uint64, error) {
	for line := range bytes.Lines(b) {
		rest, ok := bytes.CutPrefix(line, []byte("MemTotal:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("meminfo: MemTotal line %q", bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil || kb == 0 || kb > 1<<44 {
			return 0, fmt.Errorf("meminfo: MemTotal %q", f[0])
		}
		return kb << 10, nil
	}
	return 0, errors.New("meminfo: no MemTotal")
}

// Apply sets the memory limit and GOGC from the settings h. The memory
// limit: GOMEMLIMIT in the environment (getenv) wins, the runtime has
// applied it; else memory_limit_mb above 0; else derived from
// MemTotal in meminfo (the path of /proc/meminfo), and no limit at all
// when that is unreadable. It is called again on each reload, so a
// memory_limit_mb going from a figure back to 0 derives the limit again
// rather than leave the old one, or none. GOGC in the environment
// likewise wins over gc_percent.
func Apply(h config.Health, getenv func(string) string, meminfo string) (Tuning, error) {
	t := Tuning{GOMAXPROCS: runtime.GOMAXPROCS(0)}
	var err error
	switch {
	case getenv("GOMEMLIMIT") != "":
		t.Source, t.Limit = FromEnv, debug.SetMemoryLimit(-1)
	case h.MemoryLimitMB > 0:
		t.Source, t.Limit = FromUCI, int64(h.MemoryLimitMB)<<20
		debug.SetMemoryLimit(t.Limit)
	default:
		var b []byte
		b, err = os.ReadFile(meminfo)
		if err == nil {
			t.MemTotal, err = ParseMemTotal(b)
		}
		if err != nil {
			t.Source, t.Limit = NoLimit, math.MaxInt64
			debug.SetMemoryLimit(t.Limit)
			err = fmt.Errorf("memory limit not derived: %w", err)
			break
		}
		t.Source, t.Limit = FromRAM, DeriveLimit(t.MemTotal, boundsOf(h))
		debug.SetMemoryLimit(t.Limit)
	}
	if getenv("GOGC") != "" {
		t.GCFromEnv = true
		t.GCPercent = readInForce().gcPercent
	} else {
		t.GCPercent = h.GCPercent
		if t.GCPercent <= 0 {
			t.GCPercent = DefaultGCPercent
		}
		debug.SetGCPercent(t.GCPercent)
	}
	return t, err
}

// InForce is the runtime's tuning as it stands, for the health
// document's memory section.
type InForce struct {
	// Limit is the memory limit in bytes; math.MaxInt64 is none.
	Limit  int64
	Source Source
	// GCPercent is GOGC in force; negative: collection off (GOGC=off).
	GCPercent int
}

type runtimeTuning struct {
	limit     int64
	gcPercent int
}

// readInForce reads the memory limit and GOGC from runtime/metrics,
// which, unlike debug.SetGCPercent, reads without setting.
func readInForce() runtimeTuning {
	s := []metrics.Sample{{Name: "/gc/gomemlimit:bytes"}, {Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	r := runtimeTuning{limit: debug.SetMemoryLimit(-1), gcPercent: DefaultGCPercent}
	if s[0].Value.Kind() == metrics.KindUint64 {
		r.limit = int64(min(s[0].Value.Uint64(), math.MaxInt64))
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		// GOGC=off is the runtime's -1, which the metric carries as
		// a uint64.
		r.gcPercent = int(int64(s[1].Value.Uint64()))
	}
	return r
}

// ReadInForce reads the limit and GOGC in force and says where the limit
// came from, by the same precedence as Apply: the environment's
// GOMEMLIMIT, then h.MemoryLimitMB when the limit in force is that one,
// else a derived limit, or none. It keeps no state of its own, so it
// tells the truth also where Apply never ran (a daemon started without
// the tuner, in tests): there the limit is none.
func ReadInForce(h config.Health, getenv func(string) string) InForce {
	r := readInForce()
	f := InForce{Limit: r.limit, GCPercent: r.gcPercent}
	switch {
	case getenv("GOMEMLIMIT") != "":
		f.Source = FromEnv
	case f.Limit == math.MaxInt64:
		f.Source = NoLimit
	case h.MemoryLimitMB > 0 && f.Limit == int64(h.MemoryLimitMB)<<20:
		f.Source = FromUCI
	default:
		f.Source = FromRAM
	}
	return f
}

// Tuner applies the settings at start and on each reload, and runs the
// scavenger; it is the daemon's one handle on the runtime
// (daemon.Options.Runtime).
type Tuner struct {
	getenv  func(string) string
	meminfo string
	log     *slog.Logger
	scav    *Scavenger

	mu   sync.Mutex
	last Tuning
	have bool
}

// NewTuner prepares a tuner on the real runtime and /proc/meminfo.
func NewTuner(log *slog.Logger) *Tuner {
	return &Tuner{getenv: os.Getenv, meminfo: "/proc/meminfo", log: log, scav: NewScavenger(log)}
}

// Configure applies the health settings h: the memory limit, GOGC, the
// scavenger's period and whether the code is paged out. The daemon calls
// it at start, before the workers, and on each reload.
func (t *Tuner) Configure(h config.Health) {
	tu, err := Apply(h, t.getenv, t.meminfo)
	t.mu.Lock()
	changed := !t.have || tu != t.last
	t.last, t.have = tu, true
	t.mu.Unlock()
	switch {
	case err != nil:
		t.log.Warn("runtime: no memory limit", "err", err, "gc_percent", tu.GCPercent, "gomaxprocs", tu.GOMAXPROCS)
	case changed:
		t.log.Info("runtime", "memory_limit_mb", tu.Limit>>20, "limit_from", string(tu.Source), "ram_mb", tu.MemTotal>>20,
			"gc_percent", tu.GCPercent, "gogc_from_env", tu.GCFromEnv, "gomaxprocs", tu.GOMAXPROCS)
	}
	t.scav.Set(intervalOf(h), h.CodePageOut)
}

// intervalOf is the scavenger's period: scavenge_interval, 10 s when
// the settings carry none.
func intervalOf(h config.Health) time.Duration {
	if h.ScavengeInterval <= 0 {
		return DefaultPeriod
	}
	return time.Duration(h.ScavengeInterval) * time.Second
}

// Run runs the scavenger until ctx ends.
func (t *Tuner) Run(ctx context.Context) { t.scav.Run(ctx) }

// Started tells the tuner that start-up is done (every worker started):
// the scavenger pages the code out now.
func (t *Tuner) Started() { t.scav.Started() }

// Scavenger is the tuner's scavenger.
func (t *Tuner) Scavenger() *Scavenger { return t.scav }

// Sample is the runtime's heap at one moment, as the scavenger reads it.
type Sample struct {
	HeapFree uint64 // free heap pages the runtime keeps mapped and resident
	Allocs   uint64 // bytes allocated since the start (a counter)
	// HeapObjects is the bytes of heap objects, garbage not yet swept
	// included; HeapLive the live heap the last collection marked. Their
	// difference is what was allocated since that collection.
	HeapObjects uint64
	HeapLive    uint64
	// HeapInUse is the bytes of the heap's spans in use: the objects and
	// the free slots between them. It grows as new spans are taken
	// (their pages touched, so resident), at once, where HeapObjects
	// counts a size class's allocations only when its cached span is
	// swapped.
	HeapInUse uint64
}

// Garbage is the heap allocated since the last collection (most of it
// garbage at idle).
func (s Sample) Garbage() uint64 {
	if s.HeapObjects < s.HeapLive {
		return 0
	}
	return s.HeapObjects - s.HeapLive
}

// ReadRuntime samples runtime/metrics.
func ReadRuntime() Sample {
	s := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}, {Name: "/gc/heap/allocs:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	metrics.Read(s)
	get := func(i int) uint64 {
		if s[i].Value.Kind() == metrics.KindUint64 {
			return s[i].Value.Uint64()
		}
		return 0
	}
	return Sample{HeapFree: get(0), Allocs: get(1), HeapObjects: get(2), HeapLive: get(3), HeapInUse: get(2) + get(4)}
}

// The scavenger's defaults.
const (
	// DefaultPeriod is scavenge_interval's default.
	DefaultPeriod = 10 * time.Second
	// DefaultMinFree is the free heap worth giving back after a burst.
	DefaultMinFree = 1 << 20
	// DefaultQuietRate is the allocation rate (bytes a second) under
	// which the daemon counts as quiet: the idle daemon allocates about
	// 1 KB/s (8bc6700: 0 to 1 KB/s in the scavenger's debug log; about
	// 20 KB/s at ee39f7c), 256 phones re-registering hourly less than that,
	// a REGISTER flood megabytes a second.
	DefaultQuietRate = 100 << 10
	// DefaultIdleGarbage is the heap allocated since the last
	// collection past which a quiet daemon collects: without it the
	// idle heap grows to the runtime's minimum goal (4 MB x GOGC/100)
	// before the first collection, minutes later, and keeps those pages.
	// The figure it is compared with lags: the runtime counts a size
	// class's allocations when its cached span is swapped, so the idle
	// daemon's ~1 KB/s showed as 50 KB over its first 2 minutes while
	// the heap arenas' resident pages grew by 160 KB. At 128 KB the
	// rule never fired before the runtime's own collection; at 32 KB it
	// collects about once a minute at idle (a collection of a
	// sub-megabyte heap: about a millisecond of CPU).
	DefaultIdleGarbage = 32 << 10
	// DefaultIdleFree is the free heap resident past which a quiet
	// daemon gives it back: the runtime collects by itself at least
	// every 2 minutes and keeps the pages that collection freed, which
	// the burst rule's MinFree leaves alone. Measured idle (1c85783):
	// 136 to 232 KB freed by those collections; at 256 KB the rule
	// left them resident, and the heap arenas grew from 1.00 to
	// 1.23 MB over 4 minutes.
	DefaultIdleFree = 64 << 10
	// DefaultIdleGrowth is the growth of the heap's spans in use past
	// which a quiet daemon collects. Measured idle (1c85783, runtime
	// metrics every 5 s): the minute's health evaluation took 80 KB of
	// new spans in the first minute (983 -> 1,063 KB in use) while the
	// heap objects figure rose by 18 KB, and the heap arenas' resident
	// pages stepped up 50-100 KB at each evaluation minute, given back
	// only at the next 2-minute collection. At 64 KB the scavenger
	// collects within a period of such a step.
	DefaultIdleGrowth = 64 << 10
	// StartupCollections is how many collections end start-up: the
	// runtime's own collection structures reach their resident size
	// within five. Its metadata/other figure (address space) stops
	// growing after three (a trivial Go 1.26 program: 1,395, 1,720,
	// 1,988 KB, then 1,988 KB for 57 more), but the mark-bit arenas
	// (64 KB each; a next, current and previous one, then reused) are
	// cleared whole when first reused, at the fourth and fifth
	// collections: the runtime's off-heap resident memory was 552, 796,
	// 880, 952, 1,012 KB after collections 1 to 5 and 1,012 KB for 7
	// more (a small program); in the daemon started with three, +60 KB
	// at its first idle collection (120 s) and +64 KB at the second
	// (240 s), then flat (TestStartupCollectionsSettleRuntime).
	StartupCollections = 5
	// DefaultPageOutEvery bounds how often the code is paged out again
	// after a load falls.
	DefaultPageOutEvery = 10 * time.Minute
)
