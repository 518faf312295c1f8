internal import Glibc
internal import Synchronization

/// A bounded table of per-key state in a `SharedRegion`: the `host` placement of `StateTable`.
/// Every process that opens the same region and asks for the same table name shares its
/// entries. It gives the guarantees of `ShardedTable` (see its doc), across processes:
///
/// **Keyed placement.** A key's identity is its 128-bit SipHash-2-4 under the region's
/// 128-bit secret alone (`Hasher` is seeded per process and cannot be shared): the low 64 bits
/// pick the shard, the high ones the index position, and the 128 bits are stored instead of
/// the key's text. A client cannot compute where its keys land, so it cannot aim a flood at a
/// victim's shard.
///
/// **Shards.** A power of two from 1 to 64, each with room for at least 256 keys (the rule of
/// `ShardedTable.shardCount`), each behind a robust process-shared `pthread_mutex_t`. A shard
/// is a dense array of slots (16 bytes of key identity plus the value, rounded to 8 bytes) and
/// an open-addressing index of 32-bit slot numbers (linear probing, deletion by backward
/// shift, no tombstones) with about two positions per slot: 8 bytes of index per key instead
/// of the 2x slack of open addressing over whole entries.
///
/// **The bound is global**: at most `maxKeys` entries over all shards, one atomic count in the
/// region. The slot array of each shard holds `maxKeys / n + 6 * sqrt(maxKeys / n) + 8` slots
/// (all of `maxKeys` with one shard). Why that suffices: placement is a keyed PRF the client
/// cannot steer, so the number of held keys in one shard is binomial with mean `maxKeys / n`
/// and standard deviation below `sqrt(maxKeys / n)`; six deviations above the mean are
/// exceeded with probability about 1e-9 per shard, so a shard fills before the global bound
/// essentially never. Should it happen, the shard makes room among its own entries (idle, then
/// lowest rank) like a full table does: the bound is never exceeded and nothing fails open.
///
/// **Eviction** follows `ShardedTable`: idle entries of the key's shard first (a sample of 8
/// from a cursor, and up to 3 more samples of 8 while none of those examined may go: slots
/// are in insertion order, so a burst of kept entries sits side by side; half idle or more
/// and the whole shard is swept), then of up to 4
/// neighbours (only when their lock is free), then the examined entry of lowest rank; an
/// entry whose rank is nil is never evicted; when nothing may go the caller refuses and the
/// refusal is counted. A shard is swept every 1024 operations on it and when inserts have
/// doubled it since the last sweep.
///
/// **Crash safety.** A process killed while it holds a shard lock never wedges the others:
/// the next locker gets `EOWNERDEAD`, repairs the shard, and marks the lock consistent. Every
/// change of a shard is one journaled step: before it, the slot it overwrites is copied to the
/// shard's undo area together with the slot count, then the journal is marked active; after
/// it, unmarked. A repair rolls back an active step (restores the slot and the count), drops
/// duplicate identities and rebuilds the shard's index from its slots; then the global count is
/// recomputed from the shards (all shard locks taken in order under the region mutex). A lock
/// left unrecoverable (`ENOTRECOVERABLE`, which bitsec itself never causes) is reinitialised
/// under the region mutex and its shard repaired. Repairs are counted
/// (`bitsec_table_repairs_total`).
///
/// **Atomics on region memory** use `Synchronization.Atomic<UInt64>` bound onto the mapped
/// memory (`UnsafeMutablePointer<Atomic<UInt64>>`, used through its borrowed pointee): an
/// `Atomic<UInt64>` has the size and alignment of a `UInt64`, 64-bit atomics are lock-free on
/// every platform Swift supports on Linux, and lock-free atomics work between processes that
/// map the same memory; every such word is 8-byte aligned in the region.
///
/// What is shared: the entries, the count, the counters. What is not: `idle` and `rank` (each
/// process passes its own; they must agree, as they do for one build and configuration).
public final class SharedTable<Value: FixedLayoutValue>: @unchecked Sendable {
    let region: SharedRegion
    let name: String
    let maxKeys: Int
    let layout: Int
    let valueSize: Int
    let slotSize: Int
    let shardCount: Int
    let shardMask: Int
    /// Slots per shard.
    let cap: Int
    /// Index positions per shard.
    let indexSize: Int
    let shardStride: Int
    let offIndex: Int
    let offSlots: Int
    /// The table header in the region: entries, evictions, refusals, repairs.
    let header: UnsafeMutableRawPointer
    let shards: UnsafeMutableRawPointer
    let stats: BoundedTableStats
    private let idle: @Sendable (Value, Int64) -> Bool
    private let rank: @Sendable (Value, Int64) -> Int64?

    static var tableHeaderSize: Int { 256 }
    static var maxValueSize: Int { 1 << 16 }
    static var maxMaxKeys: Int { 1 << 28 }
    // Shard header offsets.
    static var sCount: Int { 64 }
    static var sCursor: Int { 68 }
    static var sOps: Int { 72 }
    static var sSweepAt: Int { 76 }
    static var sJState: Int { 80 }
    static var sJSlot: Int { 88 }
    static var sJCount: Int { 92 }
    static var sJournal: Int { 128 }
    static var noSlot: UInt32 { .max }

    /// Slots per shard for `maxKeys` over `n` shards (see the type's doc).
    static func slotsPerShard(maxKeys m: Int, shards n: Int) -> Int {
        if n <= 1 { return m }
        let mean = Double(m) / Double(n)
        let c = Int((mean + 6 * mean.squareRoot()).rounded(.up)) + 8
        return min(m, c)
    }

    /// Bytes a table of `maxKeys` values of `valueSize` bytes takes in a region.
    static func bytesNeeded(maxKeys: Int, valueSize: Int) -> Int {
        let n = ShardedTable<Int>.shardCount(forMaxKeys: maxKeys)
        return tableHeaderSize + n * geometry(maxKeys: maxKeys, valueSize: valueSize, shards: n).stride
    }

    static func geometry(maxKeys: Int, valueSize: Int, shards n: Int) -> (cap: Int, indexSize: Int, slotSize: Int, offIndex: Int, offSlots: Int, stride: Int) {
        let cap = slotsPerShard(maxKeys: maxKeys, shards: n)
        let slotSize = 16 + ((valueSize + 7) & ~7)
        let indexSize = 2 * cap + 1
        let offIndex = sJournal + ((slotSize + 63) & ~63)
        let offSlots = offIndex + ((indexSize * 4 + 63) & ~63)
        let stride = (offSlots + cap * slotSize + 63) & ~63
        return (cap, indexSize, slotSize, offIndex, offSlots, stride)
    }

    /// Finds or creates the table `name` in `region`. Every process must pass the same
    /// `maxKeys` and `layout` (and the same value type): otherwise a `config` error says which
    /// differs. Throws when the region has no room left for the table (naming the bytes needed).
    init(region: SharedRegion, name: String, maxKeys requested: Int, layout: Int,
         idle: @escaping @Sendable (Value, Int64) -> Bool,
         rank: @escaping @Sendable (Value, Int64) -> Int64?) throws(BitsecError) {
        let maxKeys = max(1, requested)
        guard maxKeys <= Self.maxMaxKeys else {
            throw .config("table \(name): max_keys \(maxKeys) is above \(Self.maxMaxKeys), the most a shared table holds")
        }
        let valueSize = Value.storedSize(layout: layout)
        guard valueSize >= 0, valueSize <= Self.maxValueSize else {
            throw .config("table \(name): a stored value of \(valueSize) bytes is outside 0-\(Self.maxValueSize)")
        }
        let n = ShardedTable<Int>.shardCount(forMaxKeys: maxKeys)
        let g = Self.geometry(maxKeys: maxKeys, valueSize: valueSize, shards: n)
        let bytes = Self.tableHeaderSize + n * g.stride
        let slot = try region.table(name: name, valueSize: valueSize, layout: layout, maxKeys: maxKeys,
                                    shardCount: n, bytes: bytes) { p in
            for i in 0..<n {
                let s = p + Self.tableHeaderSize + i * g.stride
                guard RobustMutex.initialise(s) else { return false }
                s.storeBytes(of: UInt32(ShardedTable<Int>.minSweepAt), toByteOffset: Self.sSweepAt, as: UInt32.self)
            }
            return true
        }
        self.region = region
        self.name = name
        self.maxKeys = maxKeys
        self.layout = layout
        self.valueSize = valueSize
        slotSize = g.slotSize
        shardCount = n
        shardMask = n - 1
        cap = g.cap
        indexSize = g.indexSize
        shardStride = g.stride
        offIndex = g.offIndex
        offSlots = g.offSlots
        header = region.base + slot.offset
        shards = header + Self.tableHeaderSize
        self.idle = idle
        self.rank = rank
        stats = BoundedTableStats(name: name, capacity: maxKeys,
                                  source: SharedTableCounters(region: region, header: header))
    }

    // MARK: counters

    @inline(__always) private func counter(_ i: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        (header + 8 * i).assumingMemoryBound(to: Atomic<UInt64>.self)
    }
    @inline(__always) private func addEntries(_ d: Int) {
        counter(0).pointee.wrappingAdd(UInt64(bitPattern: Int64(d)), ordering: .relaxed)
    }
    @inline(__always) private func reserve() -> Bool {
        let old = counter(0).pointee.wrappingAdd(1, ordering: .relaxed).oldValue
        if Int64(bitPattern: old) < Int64(maxKeys) { return true }
        counter(0).pointee.wrappingSubtract(1, ordering: .relaxed)
        return false
    }

    // MARK: shard memory

    @inline(__always) private func shard(_ i: Int) -> UnsafeMutableRawPointer { shards + i * shardStride }
    /// The shard's slot count, never above its slots (the region is shared memory: a count
    /// damaged by another program must not send an access outside the shard).
    @inline(__always) private func count(_ s: UnsafeMutableRawPointer) -> Int { min(Int(s.load(fromByteOffset: Self.sCount, as: UInt32.self)), cap) }
    @inline(__always) private func setCount(_ s: UnsafeMutableRawPointer, _ c: Int) { s.storeBytes(of: UInt32(truncatingIfNeeded: c), toByteOffset: Self.sCount, as: UInt32.self) }
    @inline(__always) private func slot(_ s: UnsafeMutableRawPointer, _ i: Int) -> UnsafeMutableRawPointer { s + offSlots + i * slotSize }
    @inline(__always) private func index(_ s: UnsafeMutableRawPointer) -> UnsafeMutablePointer<UInt32> { (s + offIndex).assumingMemoryBound(to: UInt32.self) }
    @inline(__always) private func keyOf(_ p: UnsafeMutableRawPointer) -> (lo: UInt64, hi: UInt64) {
        (p.load(as: UInt64.self), p.load(fromByteOffset: 8, as: UInt64.self))
    }
    @inline(__always) private func home(_ hi: UInt64) -> Int {
        Int(truncatingIfNeeded: (UInt64(UInt32(truncatingIfNeeded: hi >> 32)) &* UInt64(indexSize)) >> 32)
    }
    @inline(__always) private func next(_ p: Int) -> Int { p + 1 == indexSize ? 0 : p + 1 }
    @inline(__always) private func load(_ s: UnsafeMutableRawPointer, _ i: Int) -> Value {
        Value(loading: UnsafeRawPointer(slot(s, i) + 16), layout: layout)
    }

    /// The index position of a key's entry and its slot, or the empty position where it would go.
    @inline(__always)
    private func find(_ s: UnsafeMutableRawPointer, _ lo: UInt64, _ hi: UInt64) -> (pos: Int, slot: Int?) {
        let idx = index(s)
        let c = count(s)
        var p = home(hi)
        for _ in 0..<indexSize {
            let e = Int(idx[p])
            if e == 0 { return (p, nil) }
            if e <= c {
                let k = keyOf(slot(s, e - 1))
                if k.lo == lo && k.hi == hi { return (p, e - 1) }
            }
            p = next(p)
        }
        // A full index cannot happen (at most half full); treat as absent with no position.
        return (-1, nil)
    }

    // MARK: journaled steps

    @inline(__always) private func journalState(_ s: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt64>> {
        (s + Self.sJState).assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    /// Records what a step may overwrite (slot `i`, or nothing but the count), then marks the
    /// journal active. The fences keep the compiler from moving the step's stores across.
    @inline(__always)
    private func begin(_ s: UnsafeMutableRawPointer, slot i: Int?) {
        if let i {
            (s + Self.sJournal).copyMemory(from: UnsafeRawPointer(slot(s, i)), byteCount: slotSize)
            s.storeBytes(of: UInt32(truncatingIfNeeded: i), toByteOffset: Self.sJSlot, as: UInt32.self)
        } else {
            s.storeBytes(of: Self.noSlot, toByteOffset: Self.sJSlot, as: UInt32.self)
        }
        s.storeBytes(of: UInt32(truncatingIfNeeded: count(s)), toByteOffset: Self.sJCount, as: UInt32.self)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        journalState(s).pointee.store(1, ordering: .relaxed)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    @inline(__always)
    private func end(_ s: UnsafeMutableRawPointer) {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        journalState(s).pointee.store(0, ordering: .relaxed)
    }

    /// Stores a new value over slot `i` (one step).
    private func overwrite(_ s: UnsafeMutableRawPointer, _ i: Int, _ v: Value) {
        begin(s, slot: i)
        v.store(to: slot(s, i) + 16, layout: layout)
        end(s)
    }

    /// Appends a new entry at the empty index position `pos` (one step). False when the shard
    /// has no free slot.
    private func insert(_ s: UnsafeMutableRawPointer, pos: Int, _ lo: UInt64, _ hi: UInt64, _ v: Value) -> Bool {
        let c = count(s)
        guard c < cap, pos >= 0 else { return false }
        begin(s, slot: nil)
        let p = slot(s, c)
        p.storeBytes(of: lo, as: UInt64.self)
        p.storeBytes(of: hi, toByteOffset: 8, as: UInt64.self)
        (p + 16).initializeMemory(as: UInt8.self, repeating: 0, count: slotSize - 16)
        v.store(to: p + 16, layout: layout)
        index(s)[pos] = UInt32(c + 1)
        setCount(s, c + 1)
        end(s)
        return true
    }

    /// Removes slot `i` (one step): its index position is emptied by backward shift and the
    /// last slot moves into its place.
    private func delete(_ s: UnsafeMutableRawPointer, _ i: Int) {
        let c = count(s)
        guard i >= 0, i < c else { return }
        let idx = index(s)
        let victim = slot(s, i)
        let k = keyOf(victim)
        begin(s, slot: i)
        let f = find(s, k.lo, k.hi)
        if f.slot == i {
            var hole = f.pos
            var j = f.pos
            for _ in 0..<indexSize {
                j = next(j)
                let e = Int(idx[j])
                if e == 0 { break }
                let h = e <= c ? home(keyOf(slot(s, e - 1)).hi) : j
                // The entry at j stays when its home lies cyclically in (hole, j].
                let stays = hole < j ? (hole < h && h <= j) : (hole < h || h <= j)
                if !stays {
                    idx[hole] = UInt32(e)
                    hole = j
                }
            }
            idx[hole] = 0
        }
        let last = c - 1
        if i != last {
            let moved = slot(s, last)
            let mk = keyOf(moved)
            let g = find(s, mk.lo, mk.hi)
            victim.copyMemory(from: UnsafeRawPointer(moved), byteCount: slotSize)
            if g.pos >= 0, g.slot == last { idx[g.pos] = UInt32(i + 1) }
        }
        setCount(s, last)
        end(s)
    }

    /// Rolls back an interrupted step, drops duplicate identities and rebuilds the index.
    private func repair(_ s: UnsafeMutableRawPointer) {
        if journalState(s).pointee.load(ordering: .relaxed) != 0 {
            let js = Int(s.load(fromByteOffset: Self.sJSlot, as: UInt32.self))
            let jc = Int(s.load(fromByteOffset: Self.sJCount, as: UInt32.self))
            if js < cap {
                slot(s, js).copyMemory(from: UnsafeRawPointer(s + Self.sJournal), byteCount: slotSize)
            }
            setCount(s, min(jc, cap))
            journalState(s).pointee.store(0, ordering: .relaxed)
        }
        var c = min(count(s), cap)
        let idx = index(s)
        idx.update(repeating: 0, count: indexSize)
        var i = 0
        while i < c {
            let k = keyOf(slot(s, i))
            var p = home(k.hi)
            var duplicate = false
            for _ in 0..<indexSize {
                let e = Int(idx[p])
                if e == 0 { break }
                let o = keyOf(slot(s, e - 1))
                if o.lo == k.lo && o.hi == k.hi { duplicate = true; break }
                p = next(p)
            }
            if duplicate {
                c -= 1
                if i != c { slot(s, i).copyMemory(from: UnsafeRawPointer(slot(s, c)), byteCount: slotSize) }
                continue
            }
            idx[p] = UInt32(i + 1)
            i += 1
        }
        setCount(s, c)
        s.storeBytes(of: UInt32(0), toByteOffset: Self.sCursor, as: UInt32.self)
        counter(3).pointee.wrappingAdd(1, ordering: .relaxed)
    }

    // MARK: locks

    /// Locks shard `i`. nil: it could not be locked (an unrecoverable lock that could not be
    /// reinitialised); true: it was repaired (the caller recounts after unlocking).
    private func lock(_ i: Int, holdingRegion: Bool = false) -> Bool? {
        let s = shard(i)
        var reinitialised = false
        for _ in 0..<4 {
            switch RobustMutex.lock(s) {
            case .locked:
                if reinitialised { repair(s); return true }
                return false
            case .ownerDied:
                repair(s)
                RobustMutex.markConsistent(s)
                return true
            case .unrecoverable, .busy:
                reinitialised = reinitialise(s, holdingRegion: holdingRegion) || reinitialised
            }
        }
        return nil
    }

    /// Locks shard `i` if it is free. nil: busy; true: it was repaired.
    private func tryLock(_ i: Int) -> Bool? {
        let s = shard(i)
        switch RobustMutex.tryLock(s) {
        case .locked: return false
        case .ownerDied:
            repair(s)
            RobustMutex.markConsistent(s)
            return true
        case .busy, .unrecoverable: return nil
        }
    }

    /// Reinitialises a shard lock that answered ENOTRECOVERABLE, under the region mutex. glibc
    /// (2.36) leaves the lock word holding the caller's thread id after that answer, so every
    /// other locker sees it busy: nobody else can be using it. After the reinitialisation the
    /// lock is taken and released once with the waiters bit of the word (its first 32 bits on
    /// Linux) set, which wakes a thread that went to sleep on the old word.
    private func reinitialise(_ s: UnsafeMutableRawPointer, holdingRegion: Bool) -> Bool {
        var done = false
        let work = {
            guard RobustMutex.initialise(s) else { return }
            if RobustMutex.tryLock(s) == .locked {
                let word = s.assumingMemoryBound(to: Atomic<UInt32>.self)
                word.pointee.bitwiseOr(0x8000_0000, ordering: .relaxed)
                RobustMutex.unlock(s)
            }
            done = true
        }
        if holdingRegion { work() } else { _ = region.withRegionLock(work) }
        return done
    }

    /// Recomputes the global count from the shards, holding every shard lock at once (after a
    /// repair: a process that died may have reserved room it never used). A shard that cannot
    /// be locked leaves the count as it was: too high is the safe side (less room; a
    /// revocation table that is not empty is looked up), too low is not.
    private func recount() {
        _ = region.withRegionLock {
            var locked: [Int] = []
            var total = 0
            for i in 0..<shardCount {
                guard lock(i, holdingRegion: true) != nil else { break }
                locked.append(i)
                total += count(shard(i))
            }
            if locked.count == shardCount { counter(0).pointee.store(UInt64(total), ordering: .relaxed) }
            for i in locked { RobustMutex.unlock(shard(i)) }
        }
    }

    // MARK: operations

    /// `StateTable.update` on this table (see there).
    func update<R>(_ key: String, nowMs: Int64, _ body: (inout Value?, () -> Bool) -> R) -> R {
        let h = SipHash24.hash128(key, k0: region.k0, k1: region.k1)
        let si = Int(truncatingIfNeeded: h.lo) & shardMask
        let s = shard(si)
        guard let repaired = lock(si) else {
            // Unreachable in practice (see `lock`): refuse on the caller's safe side.
            var v: Value? = nil
            return body(&v) { false }
        }
        var recountAfter = repaired
        let ops = s.load(fromByteOffset: Self.sOps, as: UInt32.self) &+ 1
        s.storeBytes(of: ops, toByteOffset: Self.sOps, as: UInt32.self)
        if ops & 1023 == 0 { sweep(s, nowMs: nowMs) }
        let before = count(s)
        var reserved = 0
        let r: R
        let f = find(s, h.lo, h.hi)
        if let i = f.slot {
            var v: Value? = load(s, i)
            r = body(&v) { false }
            if let v { overwrite(s, i, v) } else { delete(s, i) }
        } else {
            var v: Value? = nil
            var granted: Bool? = nil
            r = body(&v) {
                guard granted == nil else { return false }
                let g = makeRoom(s, shard: si, nowMs: nowMs, reserved: &reserved, recount: &recountAfter)
                granted = g
                return g
            }
            if let v {
                var ok = granted == true
                if granted == nil, count(s) < cap, reserve() { reserved += 1; ok = true }
                if ok { _ = insert(s, pos: find(s, h.lo, h.hi).pos, h.lo, h.hi, v) }
            }
        }
        // Own-shard changes are counted here; room reserved in the global count or freed in a
        // neighbour was counted by makeRoom.
        let c = count(s)
        let delta = c - before - reserved
        if delta != 0 { addEntries(delta) }
        let sweepAt = Int(s.load(fromByteOffset: Self.sSweepAt, as: UInt32.self))
        if c > before && c >= sweepAt {
            sweep(s, nowMs: nowMs)
            let next = max(ShardedTable<Int>.minSweepAt, 2 * count(s))
            s.storeBytes(of: UInt32(truncatingIfNeeded: next), toByteOffset: Self.sSweepAt, as: UInt32.self)
        }
        RobustMutex.unlock(s)
        if recountAfter { recount() }
        return r
    }

    /// Windows of `ShardedTable.sampleSize` slots of its own shard a new key examines at most.
    static var ownWindows: Int { 4 }

    /// Makes room for one new entry in the locked shard `s` (see `ShardedTable.makeRoom`).
    private func makeRoom(_ s: UnsafeMutableRawPointer, shard index: Int, nowMs: Int64,
                          reserved: inout Int, recount: inout Bool) -> Bool {
        let ownFull = count(s) >= cap
        if !ownFull && reserve() { reserved += 1; return true }
        var own = sample(s, nowMs: nowMs)
        // Slots are in insertion order, so kept entries made in one burst (the blocks of a
        // flood) sit side by side: a window of them alone is no proof the shard has nothing
        // that may go. Up to `ownWindows` windows are examined before the neighbours.
        var looked = own.examined
        while own.dropped == 0 && own.best == nil && looked < min(count(s), ShardedTable<Int>.sampleSize * Self.ownWindows) {
            own = sample(s, nowMs: nowMs)
            looked += max(1, own.examined)
        }
        if own.dropped > 0 {
            if own.dropped * 2 >= own.examined { _ = dropIdle(s, nowMs: nowMs) }
            return true
        }
        var best: (shard: Int, lo: UInt64, hi: UInt64, rank: Int64)? = own.best.map { (index, $0.lo, $0.hi, $0.rank) }
        // Neighbours only when the own shard has nothing that may go and room in its slots.
        if !ownFull {
            for j in 0..<min(ShardedTable<Int>.neighbourShards, shardMask) where best == nil || best?.shard != index {
                let n = (index + j + 1) & shardMask
                guard let rep = tryLock(n) else { continue }
                if rep { recount = true }
                let ns = shard(n)
                let got = sample(ns, nowMs: nowMs)
                if got.dropped > 0 { addEntries(-got.dropped) }
                RobustMutex.unlock(ns)
                if got.dropped > 0 && reserve() { reserved += 1; return true }
                if let b = got.best, best == nil || b.rank < (best?.rank ?? .max) { best = (n, b.lo, b.hi, b.rank) }
            }
        }
        if let best {
            if best.shard == index {
                if let i = find(s, best.lo, best.hi).slot {
                    delete(s, i)
                    counter(1).pointee.wrappingAdd(1, ordering: .relaxed)
                    return true
                }
            } else if let rep = tryLock(best.shard) {
                if rep { recount = true }
                let ns = shard(best.shard)
                var evicted = false
                // The entry may have changed since it was examined: evict it only if it still may go.
                if let i = find(ns, best.lo, best.hi).slot, rank(load(ns, i), nowMs) != nil {
                    delete(ns, i)
                    addEntries(-1)
                    evicted = true
                }
                RobustMutex.unlock(ns)
                if evicted {
                    counter(1).pointee.wrappingAdd(1, ordering: .relaxed)
                    if reserve() { reserved += 1; return true }
                }
            }
        }
        counter(2).pointee.wrappingAdd(1, ordering: .relaxed)
        return false
    }

    /// Examines up to `sampleSize` slots of a locked shard from its cursor, drops the idle ones
    /// and returns how many it dropped and the examined entry of lowest rank.
    private func sample(_ s: UnsafeMutableRawPointer, nowMs: Int64) -> (dropped: Int, examined: Int, best: (lo: UInt64, hi: UInt64, rank: Int64)?) {
        let c = count(s)
        let n = min(ShardedTable<Int>.sampleSize, c)
        guard n > 0 else { return (0, 0, nil) }
        var start = Int(s.load(fromByteOffset: Self.sCursor, as: UInt32.self))
        if start >= c { start = 0 }
        var best: (lo: UInt64, hi: UInt64, rank: Int64)? = nil
        var idleSlots: (Int, Int, Int, Int, Int, Int, Int, Int) = (-1, -1, -1, -1, -1, -1, -1, -1)
        var dropped = 0
        withUnsafeMutableBytes(of: &idleSlots) { raw in
            let slots = raw.bindMemory(to: Int.self)
            for k in 0..<n {
                let i = (start + k) % c
                let v = load(s, i)
                if idle(v, nowMs) {
                    slots[dropped] = i
                    dropped += 1
                } else if let r = rank(v, nowMs), best == nil || r < (best?.rank ?? .max) {
                    let key = keyOf(slot(s, i))
                    best = (key.lo, key.hi, r)
                }
            }
            s.storeBytes(of: UInt32((start + n) % c), toByteOffset: Self.sCursor, as: UInt32.self)
            // Highest slot first: a deletion moves the last slot, never one still to delete.
            var a = 0
            while a < dropped {
                var m = a
                for b in (a + 1)..<max(a + 1, dropped) where slots[b] > slots[m] { m = b }
                slots.swapAt(a, m)
                delete(s, slots[a])
                a += 1
            }
        }
        return (dropped, n, best)
    }

    /// Removes the idle entries of a locked shard; returns how many. The global count is the
    /// caller's business.
    private func dropIdle(_ s: UnsafeMutableRawPointer, nowMs: Int64) -> Int {
        var removed = 0
        var i = count(s) - 1
        while i >= 0 {
            if idle(load(s, i), nowMs) { delete(s, i); removed += 1 }
            i -= 1
        }
        if removed > 0 { s.storeBytes(of: UInt32(0), toByteOffset: Self.sCursor, as: UInt32.self) }
        return removed
    }

    /// Drops the idle entries of a locked shard and counts them out of the global count.
    private func sweep(_ s: UnsafeMutableRawPointer, nowMs: Int64) {
        let removed = dropIdle(s, nowMs: nowMs)
        if removed > 0 { addEntries(-removed) }
    }

    /// Removes a key's entry.
    func remove(_ key: String) {
        let h = SipHash24.hash128(key, k0: region.k0, k1: region.k1)
        let si = Int(truncatingIfNeeded: h.lo) & shardMask
        let s = shard(si)
        guard let repaired = lock(si) else { return }
        if let i = find(s, h.lo, h.hi).slot {
            delete(s, i)
            addEntries(-1)
        }
        RobustMutex.unlock(s)
        if repaired { recount() }
    }

    /// Entries held, over all shards.
    var count: Int {
        var n = 0
        for i in 0..<shardCount {
            guard let repaired = lock(i) else { continue }
            n += count(shard(i))
            RobustMutex.unlock(shard(i))
            if repaired { recount() }
        }
        return n
    }

    /// Sweeps every shard now.
    func sweepAll(nowMs: Int64) {
        for i in 0..<shardCount {
            guard let repaired = lock(i) else { continue }
            sweep(shard(i), nowMs: nowMs)
            RobustMutex.unlock(shard(i))
            if repaired { recount() }
        }
    }

    /// Raw addresses of a key's shard, for the crash tests: they fork a child that takes the
    /// shard lock and writes through these pointers (no Swift code after the fork), then dies.
    @_spi(Testing) public func crashProbe(forKey key: String) -> SharedShardProbe {
        let h = SipHash24.hash128(key, k0: region.k0, k1: region.k1)
        let si = Int(truncatingIfNeeded: h.lo) & shardMask
        let s = shard(si)
        var slotAddress: UnsafeMutableRawPointer? = nil
        if lock(si) != nil {
            if let i = find(s, h.lo, h.hi).slot { slotAddress = slot(s, i) }
            RobustMutex.unlock(s)
        }
        return SharedShardProbe(mutex: s, journalState: s + Self.sJState, journalSlot: s + Self.sJSlot,
                                journalCount: s + Self.sJCount, journalCopy: s + Self.sJournal,
                                count: s + Self.sCount, slot: slotAddress,
                                slotIndex: slotAddress.map { ($0 - (s + offSlots)) / slotSize } ?? -1,
                                slotSize: slotSize)
    }

    /// Repairs counted for this table (all processes).
    var repairs: UInt64 { counter(3).pointee.load(ordering: .relaxed) }
}

/// The addresses a crash test writes through (see `SharedTable.crashProbe`): the shard's
/// `pthread_mutex_t`, its journal (state: u64, 1 = a step in progress; slot: u32; count: u32;
/// copy: `slotSize` bytes), its slot count (u32) and the key's slot (16 bytes of identity,
/// then the value), if the key is present.
@_spi(Testing) public struct SharedShardProbe: @unchecked Sendable {
    public let mutex: UnsafeMutableRawPointer
    public let journalState: UnsafeMutableRawPointer
    public let journalSlot: UnsafeMutableRawPointer
    public let journalCount: UnsafeMutableRawPointer
    public let journalCopy: UnsafeMutableRawPointer
    public let count: UnsafeMutableRawPointer
    public let slot: UnsafeMutableRawPointer?
    public let slotIndex: Int
    public let slotSize: Int
}

/// The counters of a shared table, read from the region (host-wide numbers).
final class SharedTableCounters: BoundedTableSource, @unchecked Sendable {
    let region: SharedRegion
    let header: UnsafeMutableRawPointer

    init(region: SharedRegion, header: UnsafeMutableRawPointer) {
        self.region = region
        self.header = header
    }

    private func load(_ i: Int) -> UInt64 {
        (header + 8 * i).assumingMemoryBound(to: Atomic<UInt64>.self).pointee.load(ordering: .relaxed)
    }
    var entries: Int { Int(Int64(bitPattern: load(0))) }
    var evictions: UInt64 { load(1) }
    var refusals: UInt64 { load(2) }
    var repairs: UInt64 { load(3) }
}
