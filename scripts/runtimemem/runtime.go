package main

import (
	"debug/dwarf"
	"fmt"
)

// The walks below read the runtime's own structures, by the names and
// fields Go 1.26 gives them; each names what it reads in its errors.

// offset is the offset and size of the field at path in type t.
func offset(t dwarf.Type, tname, path string) (off, n uint64, err error) {
	f, err := obj{t: t, name: tname}.field(path)
	if err != nil {
		return 0, 0, err
	}
	if n, err = size(f.name, f.t); err != nil {
		return 0, 0, err
	}
	return f.addr, n, nil
}

// heap walks the heap arenas: the arena index (mheap_.arenas), each
// arena's heapArena struct and its spans table, and from it each span
// in use (objects) or manual (stacks, GC work buffers); the pages of
// an arena in no such span are free heap pages.
func (w *walk) heap() error {
	m, im := w.m, w.im
	mheap, err := im.variable("runtime.mheap_")
	if err != nil {
		return err
	}
	arenas, err := mheap.field("arenas")
	if err != nil {
		return err
	}
	l1n, l1elem, err := arenas.array()
	if err != nil {
		return err
	}
	l2t, err := pointee(arenas.name+"[i]", l1elem)
	if err != nil {
		return err
	}
	l2 := obj{t: l2t, name: "*" + arenas.name + "[i]"}
	l2n, l2elem, err := l2.array()
	if err != nil {
		return err
	}
	l2size, err := size(l2.name, l2t)
	if err != nil {
		return err
	}
	haT, err := pointee(l2.name+"[j]", l2elem)
	if err != nil {
		return err
	}
	haSize, err := size("runtime.heapArena", haT)
	if err != nil {
		return err
	}
	spansF, err := obj{t: haT, name: "runtime.heapArena"}.field("spans")
	if err != nil {
		return err
	}
	perArena, spanPtrT, err := spansF.array()
	if err != nil {
		return err
	}
	mspanT, err := pointee(spansF.name+"[k]", spanPtrT)
	if err != nil {
		return err
	}
	pageSize, err := im.constant("runtime._PageSize")
	if err != nil {
		if pageSize, err = im.constant("runtime.pageSize"); err != nil {
			return err
		}
	}
	arenaBytes := perArena * uint64(pageSize)
	if c, err := im.constant("runtime.heapArenaBytes"); err == nil && uint64(c) != arenaBytes {
		return fmt.Errorf("runtime.heapArenaBytes is %d, len(heapArena.spans) * pageSize %d", c, arenaBytes)
	}
	inUse, err := im.constant("runtime.mSpanInUse")
	if err != nil {
		return err
	}
	manual, err := im.constant("runtime.mSpanManual")
	if err != nil {
		return err
	}
	type fld struct{ off, n uint64 }
	var fs [5]fld
	for i, p := range []string{"startAddr", "npages", "state.s.value", "spanclass", "elemsize"} {
		if fs[i].off, fs[i].n, err = offset(mspanT, "runtime.mspan", p); err != nil {
			return err
		}
	}
	mspanSize, err := size("runtime.mspan", mspanT)
	if err != nil {
		return err
	}

	// the arena index: L1 entries point to L2 arrays of *heapArena
	l1, err := m.words(arenas.addr, l1n)
	if err != nil {
		return err
	}
	for _, p := range l1 {
		w.addMapped(arenaIndex, p, l2size)
	}
	ha, err := mheap.field("heapArenas")
	if err != nil {
		return err
	}
	haArray, _, haElem, err := m.slice(ha)
	if err != nil {
		return err
	}
	haLen, err := m.field(ha, "len")
	if err != nil {
		return err
	}
	if haLen > maxRead/haElem { // haLen*haElem must not wrap
		return fmt.Errorf("runtime.mheap_.heapArenas: length %d (the process changed under the reads?)", haLen)
	}
	idxBytes, err := m.read(haArray, haLen*haElem)
	if err != nil {
		return fmt.Errorf("runtime.mheap_.heapArenas: %w", err)
	}
	type arena struct{ idx, meta uint64 }
	var all []arena
	for i := range haLen {
		idx, err := m.word(idxBytes[i*haElem : (i+1)*haElem])
		if err != nil {
			return fmt.Errorf("runtime.mheap_.heapArenas: %w", err)
		}
		if idx/l2n >= l1n || l1[idx/l2n] == 0 {
			return fmt.Errorf("heap arena %d is not in the arena index", idx)
		}
		meta, err := m.words(l1[idx/l2n]+(idx%l2n)*m.ptr, 1)
		if err != nil {
			return err
		}
		w.addMapped(arenaIndex, meta[0], haSize)
		all = append(all, arena{idx, meta[0]})
	}
	if as, err := mheap.field("allspans"); err == nil {
		if a, c, e, err := m.slice(as); err == nil {
			w.addMapped(arenaIndex, a, c*e)
		}
	}
	w.details[arenaIndex] = fmt.Sprintf("arena index L2 (%d), %d heapArena structs of %d B, allspans", countNonzero(l1), len(all), haSize)

	// the spans: each live span once, by the spans tables' entries; an
	// entry may be stale (a freed span's, its mspan reused elsewhere),
	// which is why a span's own start and length are what count
	seen := map[uint64]bool{}
	var nobj int
	classes := map[uint64]bool{}
	var offsetFound bool
	var baseOffset uint64
	votes := map[uint64]int{}
	var live [][2]uint64 // the live spans' [start, end)
	mask := ^uint64(0)
	if m.ptr == 4 {
		mask = 1<<32 - 1
	}
	if c, err := im.constant("runtime.arenaBaseOffset"); err == nil {
		baseOffset, offsetFound = uint64(c)&mask, true
	}
	for _, a := range all {
		entries, err := m.words(a.meta+spansF.addr, perArena)
		if err != nil {
			return fmt.Errorf("heapArena %d spans: %w", a.idx, err)
		}
		for k, sp := range entries {
			if sp == 0 || seen[sp] {
				continue
			}
			seen[sp] = true
			b, err := m.read(sp, mspanSize)
			if err != nil {
				return fmt.Errorf("mspan at %#x: %w", sp, err)
			}
			var v [5]uint64
			for i, f := range fs {
				if v[i], err = m.word(b[f.off : f.off+f.n]); err != nil {
					return fmt.Errorf("mspan at %#x: %w", sp, err)
				}
			}
			start, npages, state, class := v[0], v[1], v[2], v[3]
			if state == uint64(inUse) || state == uint64(manual) {
				live = append(live, [2]uint64{start, start + npages*uint64(pageSize)})
			}
			switch state {
			case uint64(inUse):
				w.add(heapSpans, start, npages*uint64(pageSize))
				nobj++
				classes[class>>1] = true
			case uint64(manual):
				w.add(manualSpans, start, npages*uint64(pageSize))
			default:
				continue
			}
			// a live span starting at this entry's page gives the
			// arena's base, so the runtime's arenaBaseOffset (not in
			// DWARF on amd64: it does not fit an int64); a stale entry
			// may give a wrong one, so the spans vote
			if base := start - uint64(k)*uint64(pageSize); base%arenaBytes == 0 {
				votes[(base-a.idx*arenaBytes)&mask]++
			}
		}
	}
	if !offsetFound {
		best := 0
		for off, n := range votes {
			if n > best || n == best && off < baseOffset {
				baseOffset, best = off, n
			}
		}
		if best == 0 && len(all) > 0 {
			return fmt.Errorf("no live span gives the arenas' base (runtime.arenaBaseOffset is not in DWARF)")
		}
	}
	bases := map[uint64]bool{}
	for _, a := range all {
		base := (a.idx*arenaBytes + baseOffset) & mask
		bases[base] = true
		w.add(heapFree, base, arenaBytes)
	}
	// every live span lies in the arenas, or the base is wrong
	for _, sp := range live {
		if !bases[sp[0]&^(arenaBytes-1)] || !bases[(sp[1]-1)&^(arenaBytes-1)] {
			return fmt.Errorf("span [%#x, %#x) is in no heap arena (arena base offset %#x)", sp[0], sp[1], baseOffset)
		}
	}
	w.details[heapSpans] = fmt.Sprintf("%d spans in %d size classes", nobj, len(classes))
	w.details[manualSpans] = "stacks, GC work buffers"
	w.details[heapFree] = fmt.Sprintf("arena pages in no span, %d arenas of %d KB", len(all), arenaBytes>>10)
	return nil
}

func countNonzero(ws []uint64) int {
	n := 0
	for _, v := range ws {
		if v != 0 {
			n++
		}
	}
	return n
}

// spanSets walks the span sets of every mcentral (mheap_.central[i],
// partial and full): each spine, and the blocks its first spineLen
// entries point to.
func (w *walk) spanSets() error {
	m, im := w.m, w.im
	mheap, err := im.variable("runtime.mheap_")
	if err != nil {
		return err
	}
	central, err := mheap.field("central")
	if err != nil {
		return err
	}
	n, _, err := central.array()
	if err != nil {
		return err
	}
	bt, err := im.typ("runtime.spanSetBlock")
	if err != nil {
		return err
	}
	blockSize, err := size("runtime.spanSetBlock", bt)
	if err != nil {
		return err
	}
	var sets, blocks int
	for i := range n {
		el, err := central.index(i)
		if err != nil {
			return err
		}
		mc, err := el.field("mcentral")
		if err != nil {
			return err
		}
		for _, name := range []string{"partial", "full"} {
			arr, err := mc.field(name)
			if err != nil {
				return err
			}
			k, _, err := arr.array()
			if err != nil {
				return err
			}
			for j := range k {
				ss, err := arr.index(j)
				if err != nil {
					return err
				}
				var f [3]obj
				for i, path := range []string{"spine.a.value", "spineCap", "spineLen.value"} {
					if f[i], err = ss.field(path); err != nil {
						return err
					}
				}
				spine, err := m.uint(f[0])
				if err != nil {
					return err
				}
				if spine == 0 {
					continue
				}
				spineCap, err := m.uint(f[1])
				if err != nil {
					return err
				}
				spineLen, err := m.uint(f[2])
				if err != nil {
					return err
				}
				if spineLen > spineCap {
					return fmt.Errorf("%s: spineLen %d past spineCap %d", ss.name, spineLen, spineCap)
				}
				w.add(spansetSpines, spine, spineCap*m.ptr)
				sets++
				bs, err := m.words(spine, spineLen)
				if err != nil {
					return fmt.Errorf("%s spine: %w", ss.name, err)
				}
				for _, b := range bs {
					if b != 0 {
						w.add(spansetBlocks, b, blockSize)
						blocks++
					}
				}
			}
		}
	}
	w.details[spansetBlocks] = fmt.Sprintf("%d blocks of %d B", blocks, blockSize)
	w.details[spansetSpines] = fmt.Sprintf("%d span sets with a spine", sets)
	return nil
}

// markBits walks the GC's mark-bit arenas (gcBitsArenas: free, next,
// current, previous, each a list linked by next).
func (w *walk) markBits() error {
	m, im := w.m, w.im
	gb, err := im.variable("runtime.gcBitsArenas")
	if err != nil {
		return err
	}
	n := 0
	var asize uint64
	for _, list := range []string{"free", "next", "current", "previous"} {
		head, err := gb.field(list)
		if err != nil {
			return err
		}
		at, err := pointee(head.name, head.t)
		if err != nil {
			return err
		}
		if asize, err = size("runtime.gcBitsArena", at); err != nil {
			return err
		}
		next, _, err := offset(at, "runtime.gcBitsArena", "next")
		if err != nil {
			return err
		}
		p, err := m.uint(head)
		if err != nil {
			return err
		}
		for seen := map[uint64]bool{}; p != 0 && !seen[p]; {
			seen[p] = true
			w.addMapped(markBits, p, asize)
			n++
			ws, err := m.words(p+next, 1)
			if err != nil {
				return fmt.Errorf("gcBitsArena at %#x: %w", p, err)
			}
			p = ws[0]
		}
	}
	w.details[markBits] = fmt.Sprintf("%d arenas of %d KB", n, asize>>10)
	return nil
}

// persistent walks the persistentalloc chunks (persistentChunks, linked
// by their first word). Their pages not in another part (span sets,
// profiling buckets, ...) are persistentalloc-other.
func (w *walk) persistent() error {
	m, im := w.m, w.im
	pc, err := im.variable("runtime.persistentChunks")
	if err != nil {
		return err
	}
	chunk, err := im.constant("runtime.persistentChunkSize")
	if err != nil {
		return err
	}
	p, err := m.uint(pc)
	if err != nil {
		return err
	}
	n := 0
	for seen := map[uint64]bool{}; p != 0 && !seen[p]; {
		seen[p] = true
		w.add(persistentOther, p, uint64(chunk))
		n++
		ws, err := m.words(p, 1)
		if err != nil {
			return fmt.Errorf("persistentalloc chunk at %#x: %w", p, err)
		}
		p = ws[0]
	}
	w.details[persistentOther] = fmt.Sprintf("%d chunks of %d KB", n, chunk>>10)
	return nil
}

// buckets is the memory profile's hash table (buckhash); the buckets
// themselves are persistentalloc'd.
func (w *walk) buckets() error {
	m, im := w.m, w.im
	bh, err := im.variable("runtime.buckhash")
	if err != nil {
		return err
	}
	p, err := m.field(bh, "value")
	if err != nil {
		return err
	}
	t, err := im.typ("runtime.buckhashArray")
	if err != nil {
		return err
	}
	n, err := size("runtime.buckhashArray", t)
	if err != nil {
		return err
	}
	w.addMapped(profBuckets, p, n)
	w.details[profBuckets] = fmt.Sprintf("buckhash, %d KB mapped", n>>10)
	return nil
}

// pageAlloc walks the page allocator's own memory (mheap_.pages): its
// summary levels, its chunks' bitmaps (chunks[L1] -> L2 arrays) and the
// scavenger's index.
func (w *walk) pageAlloc() error {
	m, im := w.m, w.im
	mheap, err := im.variable("runtime.mheap_")
	if err != nil {
		return err
	}
	pages, err := mheap.field("pages")
	if err != nil {
		return err
	}
	sum, err := pages.field("summary")
	if err != nil {
		return err
	}
	levels, _, err := sum.array()
	if err != nil {
		return err
	}
	for i := range levels {
		s, err := sum.index(i)
		if err != nil {
			return err
		}
		a, c, e, err := m.slice(s)
		if err != nil {
			return err
		}
		w.addMapped(pageAlloc, a, c*e)
	}
	chunks, err := pages.field("chunks")
	if err != nil {
		return err
	}
	l1n, l1elem, err := chunks.array()
	if err != nil {
		return err
	}
	l2t, err := pointee(chunks.name+"[i]", l1elem)
	if err != nil {
		return err
	}
	l2size, err := size(chunks.name+"[i]", l2t)
	if err != nil {
		return err
	}
	l1, err := m.words(chunks.addr, l1n)
	if err != nil {
		return err
	}
	for _, p := range l1 {
		w.addMapped(pageAlloc, p, l2size)
	}
	scav, err := pages.field("scav.index.chunks")
	if err != nil {
		return err
	}
	a, c, e, err := m.slice(scav)
	if err != nil {
		return err
	}
	w.addMapped(pageAlloc, a, c*e)
	w.details[pageAlloc] = fmt.Sprintf("%d summary levels, %d chunk bitmaps of %d KB, scavenge index", levels, countNonzero(l1), l2size>>10)
	return nil
}

// spanQueues walks the green tea GC's span queue rings (work.spanSPMCs:
// a list of spanSPMC linked through their allnode, each with a ring of
// cap pointers mapped by itself). A runtime without green tea has no
// such list and no such memory: the part is 0 and says so.
func (w *walk) spanQueues() error {
	m, im := w.m, w.im
	work, err := im.variable("runtime.work")
	if err != nil {
		return err
	}
	list, err := work.field("spanSPMCs.list")
	if err != nil {
		w.details[spanQueues] = "none: no runtime.work.spanSPMCs (a GC without green tea)"
		return nil
	}
	p, err := m.field(list, "obj")
	if err != nil {
		return err
	}
	nodeOff, err := m.field(list, "nodeOffset")
	if err != nil {
		return err
	}
	nt, err := im.typ("runtime.listNodeManual")
	if err != nil {
		return err
	}
	next, nextSize, err := offset(nt, "runtime.listNodeManual", "next")
	if err != nil {
		return err
	}
	st, err := im.typ("runtime.spanSPMC")
	if err != nil {
		return err
	}
	ringOff, ringSize, err := offset(st, "runtime.spanSPMC", "ring")
	if err != nil {
		return err
	}
	capOff, capSize, err := offset(st, "runtime.spanSPMC", "cap")
	if err != nil {
		return err
	}
	ringT, err := obj{t: st, name: "runtime.spanSPMC"}.field("ring")
	if err != nil {
		return err
	}
	slotT, err := pointee(ringT.name, ringT.t)
	if err != nil {
		return err
	}
	slot, err := size(ringT.name+"[0]", slotT)
	if err != nil {
		return err
	}
	n, mapped := 0, uint64(0)
	for seen := map[uint64]bool{}; p != 0 && !seen[p]; {
		seen[p] = true
		read := func(off, sz uint64) (uint64, error) {
			b, err := m.read(p+off, sz)
			if err != nil {
				return 0, fmt.Errorf("spanSPMC at %#x: %w", p, err)
			}
			return m.word(b)
		}
		ring, err := read(ringOff, ringSize)
		if err != nil {
			return err
		}
		c, err := read(capOff, capSize)
		if err != nil {
			return err
		}
		w.addMapped(spanQueues, ring, c*slot)
		n++
		mapped += c * slot
		if p, err = read(nodeOff+next, nextSize); err != nil {
			return err
		}
	}
	w.details[spanQueues] = fmt.Sprintf("%d rings, %d KB mapped", n, mapped>>10)
	return nil
}

// getrandom finds the pages of the vDSO getrandom states
// (vgetrandomAlloc.states, the free ones, and each M's
// mOS.vgetrandomState), which the runtime maps by themselves. A runtime
// without them (an architecture without vDSO getrandom) has none: the
// part is 0 and says so.
func (w *walk) getrandom() error {
	m, im := w.m, w.im
	va, err := im.variable("runtime.vgetrandomAlloc")
	if err != nil {
		w.details[getrandom] = "none: no runtime.vgetrandomAlloc (no vDSO getrandom here)"
		return nil
	}
	states, err := va.field("states")
	if err != nil {
		return err
	}
	a, _, _, err := m.slice(states)
	if err != nil {
		return err
	}
	n, err := m.field(states, "len")
	if err != nil {
		return err
	}
	all, err := m.words(a, n)
	if err != nil {
		return fmt.Errorf("runtime.vgetrandomAlloc.states: %w", err)
	}
	allm, err := im.variable("runtime.allm")
	if err != nil {
		return err
	}
	mt, err := pointee(allm.name, allm.t)
	if err != nil {
		return err
	}
	stateOff, stateSize, err := offset(mt, "runtime.m", "mOS.vgetrandomState")
	if err != nil {
		return err
	}
	linkOff, linkSize, err := offset(mt, "runtime.m", "alllink")
	if err != nil {
		return err
	}
	p, err := m.uint(allm)
	if err != nil {
		return err
	}
	for seen := map[uint64]bool{}; p != 0 && !seen[p]; {
		seen[p] = true
		b, err := m.read(p+stateOff, stateSize)
		if err != nil {
			return fmt.Errorf("m at %#x: %w", p, err)
		}
		st, err := m.word(b)
		if err != nil {
			return err
		}
		all = append(all, st)
		if b, err = m.read(p+linkOff, linkSize); err != nil {
			return fmt.Errorf("m at %#x: %w", p, err)
		}
		if p, err = m.word(b); err != nil {
			return err
		}
	}
	pages := map[uint64]bool{}
	for _, s := range all {
		if s != 0 && !pages[s&^(w.page-1)] {
			pages[s&^(w.page-1)] = true
			w.add(getrandom, s&^(w.page-1), w.page)
		}
	}
	w.details[getrandom] = fmt.Sprintf("%d pages of states", len(pages))
	return nil
}
