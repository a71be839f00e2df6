// Command floorprog is the Go floor of phonebookd's footprint (issue 19):
// the smallest Go daemon of phonebookd's shape, with the project's own
// runtime tuning, so that the footprint of the router build has a
// baseline measured under identical conditions (same build flags, same
// kernel, same network namespace, same time) and the part of the RSS the
// Go runtime and std hold on their own is a figure printed in every run,
// not a one-off. scripts/footprint.sh and TestFootprintRouterBuild run it
// beside the daemon and give the daemon's RSS over it.
//
// What it holds and why each part is there:
//   - a UDP socket and a TCP listener on -listen (127.0.0.1:0 unless
//     given), each with a goroutine blocked on it: the netpoller, its
//     epoll descriptor and thread, as for SIP over UDP and TCP;
//   - os/signal, stopping on SIGTERM or SIGINT: the signal goroutine and
//     its thread, as procd's stop;
//   - log/slog with the text handler on stderr: the daemon's logger;
//   - runtime/metrics read on a ticker (-every, 60 s as the shipped
//     health_check_interval): the health evaluation's read of the
//     runtime, logged as one line of the memory classes (KB), the
//     goroutines and the OS threads;
//   - runtimetune: NewTuner, Configure with the health settings, Run in a
//     goroutine and Started once listening, as cmd/phonebookd and the
//     daemon do it: the memory limit, GOGC, the scavenger and the code
//     page-out.
//
// The health settings are the shipped defaults (config.Defaults, which
// its test checks against files/etc/config/phonebook on every setting
// runtimetune reads), or, with -c CONFDIR (and -t SAVEDIR), the phonebook
// package loaded from that directory as the daemon loads it, so the floor
// runs with the very settings the daemon beside it runs with.
//
// Build it with scripts/router-build.sh's flags (CGO_ENABLED=0,
// -trimpath, -ldflags '-s -w', -tags nodbus, -gcflags
// 'github.com/aredn/...=-l'): runtimetune and config are the project's.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/metrics"
	"strings"
	"syscall"
	"time"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/runtimetune"
	"github.com/aredn/phonebookd/uci"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "UDP and TCP address to listen on")
	confDir := flag.String("c", "", "UCI configuration directory to read phonebook.health from (empty: the shipped defaults)")
	saveDir := flag.String("t", "", "UCI save directory (uncommitted changes), with -c")
	every := flag.Duration("every", 60*time.Second, "period of the runtime/metrics read and its log line")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, *listen, *confDir, *saveDir, *every); err != nil {
		log.Error("floorprog", "err", err)
		os.Exit(1)
	}
}

// run is the program until SIGTERM or SIGINT.
func run(log *slog.Logger, listen, confDir, saveDir string, every time.Duration) error {
	if every <= 0 {
		return fmt.Errorf("-every %v: want a positive period", every)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	h, settings, err := healthSettings(confDir, saveDir)
	if err != nil {
		return err
	}
	tuner := runtimetune.NewTuner(log)
	tuner.Configure(h)
	go tuner.Run(ctx)

	udp, err := net.ListenPacket("udp", listen)
	if err != nil {
		return fmt.Errorf("listen udp %s: %w", listen, err)
	}
	defer udp.Close()
	tcp, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen tcp %s: %w", listen, err)
	}
	defer tcp.Close()
	go drainUDP(udp)
	go acceptTCP(tcp)
	log.Info("floorprog started", "pid", os.Getpid(), "udp", udp.LocalAddr().String(), "tcp", tcp.Addr().String(),
		"settings", settings, "every", every.String())
	tuner.Started()

	r := newMemReader()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("floorprog stopping")
			return nil
		case <-tick.C:
			log.LogAttrs(ctx, slog.LevelInfo, "runtime", r.read()...)
		}
	}
}

// healthSettings are the health settings the tuner gets, and where they
// came from for the log.
func healthSettings(confDir, saveDir string) (config.Health, string, error) {
	if confDir == "" {
		return config.Defaults().Health, "defaults", nil
	}
	c, errs := config.LoadStore(uci.Store{ConfDir: confDir, SaveDir: saveDir}, nil)
	if len(errs) > 0 {
		return config.Health{}, "", fmt.Errorf("load %s from %s: %w", config.Package, confDir, errors.Join(errs...))
	}
	return c.Health, confDir, nil
}

// drainUDP reads and drops datagrams until the socket is closed: the
// goroutine parked in the netpoller that a UDP server keeps.
func drainUDP(c net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		if _, _, err := c.ReadFrom(buf); errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

// acceptTCP accepts connections and closes them until the listener is
// closed: the goroutine parked in accept that a TCP server keeps.
func acceptTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err == nil {
			c.Close()
		}
	}
}

// memMetric is one figure of the log line: its key and its
// runtime/metrics name.
type memMetric struct{ key, name string }

// memMetrics are the figures logged at each tick: every memory class
// (they sum to total), the goroutines and the OS threads. Bytes are
// logged in KB (keys ending _kb).
var memMetrics = []memMetric{
	{"heap_objects_kb", "/memory/classes/heap/objects:bytes"},
	{"heap_unused_kb", "/memory/classes/heap/unused:bytes"},
	{"heap_free_kb", "/memory/classes/heap/free:bytes"},
	{"heap_released_kb", "/memory/classes/heap/released:bytes"},
	{"stacks_kb", "/memory/classes/heap/stacks:bytes"},
	{"os_stacks_kb", "/memory/classes/os-stacks:bytes"},
	{"mspan_inuse_kb", "/memory/classes/metadata/mspan/inuse:bytes"},
	{"mspan_free_kb", "/memory/classes/metadata/mspan/free:bytes"},
	{"mcache_inuse_kb", "/memory/classes/metadata/mcache/inuse:bytes"},
	{"mcache_free_kb", "/memory/classes/metadata/mcache/free:bytes"},
	{"metadata_other_kb", "/memory/classes/metadata/other:bytes"},
	{"other_kb", "/memory/classes/other:bytes"},
	{"profiling_buckets_kb", "/memory/classes/profiling/buckets:bytes"},
	{"total_kb", "/memory/classes/total:bytes"},
	{"goroutines", "/sched/goroutines:goroutines"},
	{"threads", "/sched/threads/total:threads"},
}

// memReader reads memMetrics; its samples are allocated once.
type memReader struct {
	keys    []string
	samples []metrics.Sample
}

// newMemReader keeps the figures this runtime has (metrics.All): one a
// later Go drops is left out of the line rather than logged as zero.
func newMemReader() *memReader {
	have := make(map[string]bool)
	for _, d := range metrics.All() {
		have[d.Name] = true
	}
	r := &memReader{}
	for _, m := range memMetrics {
		if have[m.name] {
			r.keys = append(r.keys, m.key)
			r.samples = append(r.samples, metrics.Sample{Name: m.name})
		}
	}
	return r
}

// read reads the figures now, as slog attributes: bytes in KB (rounded
// down), counts as they are.
func (r *memReader) read() []slog.Attr {
	metrics.Read(r.samples)
	attrs := make([]slog.Attr, 0, len(r.samples))
	for i, s := range r.samples {
		if s.Value.Kind() != metrics.KindUint64 {
			continue
		}
		v := s.Value.Uint64()
		if strings.HasSuffix(s.Name, ":bytes") {
			v >>= 10
		}
		attrs = append(attrs, slog.Uint64(r.keys[i], v))
	}
	return attrs
}
