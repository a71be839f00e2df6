// Command runtimemem says which part of a running Go program's runtime
// holds its resident anonymous memory: every resident page of the
// process's anonymous mappings is attributed to the parts of the
// runtime whose memory it holds (heap spans with objects, stacks, free
// heap pages, the runtime's span sets, mark bits, page allocator, ...),
// and the parts add up to the mappings' resident sum. runtime/metrics
// says what the runtime has mapped per class; what a router pays is
// what is resident, and issue 19 asks, where the RSS target is not met,
// which part of the runtime holds the memory, with figures.
//
//	runtimemem [-md] PID EXECUTABLE_WITH_SYMBOLS
//
// The process may run the stripped router build (scripts/router-build.sh:
// -trimpath -ldflags '-s -w'); EXECUTABLE_WITH_SYMBOLS is the same build
// without -ldflags. With -trimpath the linker flags are not written into
// the build information, and -s -w drop only the symbol table and DWARF,
// which are not loaded, so both files load the same bytes at the same
// addresses. That is checked: the loaded segments and the allocated
// sections (addresses and sizes; the bytes of code, read-only data and
// data) of /proc/PID/exe and of the given file must be equal, or
// runtimemem refuses. (Without -trimpath the ldflags go into
// .go.buildinfo and every later address moves.)
//
// The runtime's variables are found by the ELF symbol table (debug/elf),
// their struct field offsets and type sizes come from DWARF (debug/dwarf)
// and its constants from DWARF too, so nothing depends on one Go version's
// layout or on the word size (the pointer size is the ELF class's: the
// mips router build is 32-bit). A field, type or constant the file lacks
// (another Go version) is an error naming it, never a zero.
//
// The process is read as it runs, not stopped: memory from
// /proc/PID/mem, resident pages from /proc/PID/pagemap (bit 63),
// mappings from /proc/PID/maps. The resident pages are read first, and only
// they are read of the anonymous mappings: reading a page the process
// never touched would allocate it, and the measure would add to what
// it measures (a page not resident holds zeros). That needs root (ptrace access to the
// process: CAP_SYS_PTRACE, or the same user with ptrace_scope 0). A busy
// process may change between the reads; an idle one, the case this is
// for, hardly does (the tests compare the total with smaps read before
// and after).
//
// The parts, in their order of precedence where their ranges overlap
// (an inner range before the chunk or arena holding it):
//
//	spanset-blocks, spanset-spines  the mcentrals' span sets
//	gc-markbits       the GC's mark-bit arenas (gcBitsArenas)
//	gc-span-queues    the green tea GC's span queue rings
//	getrandom-states  the vDSO getrandom states
//	profile-buckets   the memory profile's hash table (buckhash)
//	pagealloc         page allocator: summaries, chunk bitmaps, scavenge index
//	arena-index       arena index L2, heapArena structs, allspans
//	persistentalloc-other  the rest of the persistentalloc chunks
//	heap-spans        spans of heap objects (how many, in how many size classes)
//	manual-spans      spans of goroutine stacks and GC work buffers
//	heap-free         heap arena pages in no span (free, not yet released)
//	exe-bss           the executable's bss (anonymous after its data)
//	stack             the main thread's [stack]
//	unattributed      the rest: runtime memory none of these walks finds
//
// A page that holds more than one part (span-set blocks are 4,608 B on
// amd64, spines 2 KB, packed in the same chunks) is split between them
// by bytes, and the figures rounded to KB so that they add up.
//
// It prints one line per part, "part KB detail", largest first, every
// part even at 0 KB, then "total KB"; with -md the same lines as
// markdown table rows "| part | KB | detail |". The total is the resident
// sum of the anonymous mappings (no file, [stack], [anon: ...]). The
// pages of the executable's writable file mapping that were copied on
// write (RssAnon counts them) are not in it.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
)

func main() {
	md := flag.Bool("md", false, "print markdown table rows")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: runtimemem [-md] PID EXECUTABLE_WITH_SYMBOLS")
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	pid, err := strconv.Atoi(flag.Arg(0))
	if err != nil || pid <= 0 {
		fmt.Fprintln(os.Stderr, "runtimemem: PID must be a process id")
		os.Exit(2)
	}
	r, err := measure(pid, flag.Arg(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "runtimemem:", err)
		os.Exit(1)
	}
	if *md {
		fmt.Print(r.markdown())
	} else {
		fmt.Print(r.text())
	}
}
