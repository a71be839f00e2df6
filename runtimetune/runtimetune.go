// Package runtimetune fits the Go runtime to a small router (issue 19,
// point 2): a memory limit derived from the router's RAM unless the
// environment sets GOMEMLIMIT, and a scavenger that hands free heap pages
// back to the kernel once the load has fallen, so that a burst does not
// leave the daemon's RSS at its peak.
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
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"time"

	"github.com/aredn/phonebookd/internal/clock"
)

// The derived limit is RAMShare of the router's RAM, within
// [MinLimit, MaxLimit]: 8 MB on a 64 MB router, 16 MB on 128 MB. The
// limit is soft: past it the collector runs more often (at most half the
// CPU, the runtime's own guard), nothing fails.
const (
	RAMShare = 8 // one eighth
	MinLimit = 8 << 20
	MaxLimit = 64 << 20
)

// Source says where the memory limit in force came from.
type Source string

// Sources of the memory limit.
const (
	FromEnv     Source = "GOMEMLIMIT" // the environment's, left alone
	FromMemInfo Source = "meminfo"    // derived from MemTotal
	NoLimit     Source = "none"       // MemTotal unreadable: no limit set
)

// Tuning is what Apply found and set, for the start-up log.
type Tuning struct {
	MemTotal   uint64 // bytes of RAM, 0 when unread
	Limit      int64  // the memory limit in force (math.MaxInt64: none)
	Source     Source
	GOMAXPROCS int
}

// DeriveLimit is the memory limit for a router with memTotal bytes of RAM.
func DeriveLimit(memTotal uint64) int64 {
	return min(max(int64(memTotal/RAMShare), MinLimit), MaxLimit)
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

// Apply sets the memory limit from meminfo (the path of /proc/meminfo)
// unless getenv("GOMEMLIMIT") is set, in which case the runtime already
// applied it. A later phonebook.health.memory_limit_mb above 0 overrides
// the derived limit (the health system sets it on every configure).
func Apply(getenv func(string) string, meminfo string) (Tuning, error) {
	t := Tuning{GOMAXPROCS: runtime.GOMAXPROCS(0)}
	if getenv("GOMEMLIMIT") != "" {
		t.Source, t.Limit = FromEnv, debug.SetMemoryLimit(-1)
		return t, nil
	}
	b, err := os.ReadFile(meminfo)
	if err == nil {
		t.MemTotal, err = ParseMemTotal(b)
	}
	if err != nil {
		t.Source, t.Limit = NoLimit, debug.SetMemoryLimit(-1)
		return t, fmt.Errorf("memory limit not derived: %w", err)
	}
	t.Source, t.Limit = FromMemInfo, DeriveLimit(t.MemTotal)
	debug.SetMemoryLimit(t.Limit)
	return t, nil
}

// Sample is the runtime's heap at one moment, as the scavenger reads it.
type Sample struct {
	HeapFree uint64 // free heap pages the runtime keeps mapped and resident
	Allocs   uint64 // bytes allocated since the start (a counter)
}

// ReadRuntime samples runtime/metrics.
func ReadRuntime() Sample {
	s := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}, {Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	var out Sample
	if s[0].Value.Kind() == metrics.KindUint64 {
		out.HeapFree = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		out.Allocs = s[1].Value.Uint64()
	}
	return out
}

// Scavenger returns free heap to the kernel after a burst. Each Period it
// reads the heap; when at least MinFree bytes of free heap are resident
// and the allocation rate has fallen (under half of the period before, or
// under MinFree a period: quiet), it calls Free. During a steady load it
// leaves the pages alone: the load would only fault them back in.
type Scavenger struct {
	Period  time.Duration
	MinFree uint64
	Clock   clock.Clock
	Read    func() Sample // ReadRuntime
	Free    func()        // debug.FreeOSMemory: a collection, then every free page released
	// PageOut drops the executable's resident pages (PageOutCode) once,
	// at the first period, when start-up has touched them all: what the
	// daemon runs in faults back once (from flash, decompressed, on a
	// router), so it is not repeated at each fall of the load; nil leaves
	// them.
	PageOut func() (int, error)
	Log     *slog.Logger
}

// NewScavenger is a scavenger on the runtime: every 10 s, from 1 MB free.
func NewScavenger(log *slog.Logger) *Scavenger {
	return &Scavenger{Period: 10 * time.Second, MinFree: 1 << 20, Clock: clock.Real{}, Read: ReadRuntime, Free: debug.FreeOSMemory,
		PageOut: PageOutCode, Log: log}
}

// due is the scavenger's rule: enough free heap, and the load fell.
func (s *Scavenger) due(prevRate, rate, heapFree uint64) bool {
	return heapFree >= s.MinFree && (rate*2 <= prevRate || rate < s.MinFree)
}

// Run scavenges until ctx ends; it returns how often it freed memory.
func (s *Scavenger) Run(ctx context.Context) int {
	prev := s.Read()
	var prevRate uint64
	freed := 0
	started := false
	for {
		t := s.Clock.NewTimer(s.Period)
		select {
		case <-ctx.Done():
			t.Stop()
			return freed
		case <-t.C():
		}
		cur := s.Read()
		rate := cur.Allocs - prev.Allocs
		pageOut := !started
		started = true
		if s.due(prevRate, rate, cur.HeapFree) {
			s.Free()
			freed++
			if s.Log != nil {
				s.Log.Debug("returned free heap to the kernel", "free_kb", cur.HeapFree>>10, "alloc_kb_per_period", rate>>10)
			}
			cur = s.Read() // the collection moved the figures
		}
		if pageOut && s.PageOut != nil {
			if _, err := s.PageOut(); err != nil && s.Log != nil {
				s.Log.Debug("code pages left resident", "err", err)
			}
		}
		prev, prevRate = cur, rate
	}
}

// Start applies the memory limit, logs what the runtime runs with, and
// starts the scavenger until ctx ends: the daemon's one call.
func Start(ctx context.Context, log *slog.Logger) Tuning {
	t, err := Apply(os.Getenv, "/proc/meminfo")
	if err != nil {
		log.Warn("runtime: no memory limit", "err", err, "gomaxprocs", t.GOMAXPROCS)
	} else {
		log.Info("runtime", "memory_limit_mb", t.Limit>>20, "limit_from", string(t.Source), "ram_mb", t.MemTotal>>20, "gomaxprocs", t.GOMAXPROCS)
	}
	go NewScavenger(log).Run(ctx)
	return t
}
