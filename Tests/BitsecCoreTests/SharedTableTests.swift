import Testing
import Glibc
import Dispatch
@_spi(Testing) import BitsecCore

/// The bounded-table semantics, run against both placements through `StateTable`: the
/// in-process `ShardedTable` and the host-shared `SharedTable`.
private func eachPlacement(_ body: (String, TablePlacement) throws -> Void) throws {
    try body("process", .process)
    let dir = RegionDir()
    defer { dir.remove() }
    let region = try SharedRegion.open(name: "semantics", directory: dir.path, maxBytes: 8 << 20)
    try body("host", .host(region))
}

/// Forks a child that runs `child` (raw calls and pointer stores only: no Swift allocation
/// after the fork) and then kills itself with SIGKILL; waits for it. True when it died of SIGKILL.
private func inDyingChild(_ child: () -> Void) -> Bool {
    let pid = fork()
    if pid == 0 {
        child()
        kill(getpid(), SIGKILL)
        _exit(3)
    }
    var status: Int32 = 0
    guard pid > 0, waitpid(pid, &status, 0) == pid else { return false }
    return status & 0x7f == SIGKILL
}

@Suite struct SharedTableTests {
    @Test func idleEntriesGoFirst() throws {
        try eachPlacement { label, placement in
            let t = try makeCells(placement, name: "idle_first", maxKeys: 4)
            #expect(put(t, "live5", Cell(n: 5)))
            #expect(put(t, "idle", Cell(n: 0, kind: 1)))
            #expect(put(t, "live1", Cell(n: 1)))
            #expect(put(t, "live9", Cell(n: 9)))
            #expect(put(t, "new", Cell(n: 3)), "\(label)")
            #expect(get(t, "idle") == nil, "\(label): the idle entry made the room")
            for k in ["live5", "live1", "live9", "new"] { #expect(get(t, k) != nil, "\(label): \(k)") }
            #expect(t.stats.evictionCount == 0 && t.stats.refusalCount == 0, "\(label)")
            #expect(t.count == 4 && t.stats.entryCount == 4, "\(label)")
        }
    }

    @Test func theLowestRankIsEvictedAndNilRankNever() throws {
        try eachPlacement { label, placement in
            let t = try makeCells(placement, name: "lowest_rank", maxKeys: 4)
            #expect(put(t, "r5", Cell(n: 5)))
            #expect(put(t, "kept", Cell(n: -100, kind: 2)))
            #expect(put(t, "r1", Cell(n: 1)))
            #expect(put(t, "r9", Cell(n: 9)))
            #expect(put(t, "new", Cell(n: 7)))
            #expect(get(t, "r1") == nil, "\(label): the lowest rank went")
            #expect(get(t, "kept") == Cell(n: -100, kind: 2), "\(label): a nil rank is never evicted")
            #expect(t.stats.evictionCount == 1, "\(label)")
            #expect(t.count == 4 && t.stats.entryCount == 4, "\(label)")
        }
    }

    @Test func aTableFullOfKeptEntriesRefusesAndCountsIt() throws {
        try eachPlacement { label, placement in
            let t = try makeCells(placement, name: "full", maxKeys: 4)
            for i in 0..<4 { #expect(put(t, "k\(i)", Cell(n: Int64(i), kind: 2))) }
            #expect(!put(t, "new", Cell(n: 1)), "\(label): refused")
            #expect(get(t, "new") == nil)
            #expect(t.stats.refusalCount == 1, "\(label)")
            #expect(t.count == 4 && t.stats.entryCount == 4, "\(label)")
            // makeRoom answers once per call.
            let second = t.update("new2", nowMs: 1000) { (_: inout Cell?, makeRoom: () -> Bool) -> Bool in
                _ = makeRoom()
                return makeRoom()
            }
            #expect(!second)
            // Existing keys still update and can be removed; the freed room is used.
            #expect(put(t, "k2", Cell(n: 20, kind: 2)))
            #expect(get(t, "k2") == Cell(n: 20, kind: 2))
            t.remove("k2")
            #expect(t.count == 3 && t.stats.entryCount == 3)
            #expect(put(t, "new", Cell(n: 1)))
            #expect(t.count == 4)
        }
    }

    @Test func theBoundIsGlobal() throws {
        try eachPlacement { label, placement in
            let t = try makeCells(placement, name: "global", maxKeys: 1000)
            for i in 0..<3000 { put(t, "key-\(i)", Cell(n: Int64(i))) }
            #expect(t.count == 1000, "\(label): full to the bound, never beyond")
            #expect(t.stats.entryCount == 1000, "\(label)")
            #expect(t.stats.evictionCount == 2000, "\(label)")
            // Idle entries are swept.
            for i in 0..<3000 { _ = t.update("key-\(i)", nowMs: 1000) { (e: inout Cell?, _: () -> Bool) -> Bool in
                if e != nil { e = Cell(n: 0, kind: 1) }
                return true
            } }
            t.sweepAll(nowMs: 2000)
            #expect(t.count == 0 && t.stats.entryCount == 0, "\(label)")
        }
    }

    @Test func aFloodOfDistinctKeysStaysBoundedAndLosesNoKeptEntry() throws {
        try eachPlacement { label, placement in
            let maxKeys = 2048
            let t = try makeCells(placement, name: "flood", maxKeys: maxKeys)
            for i in 0..<200 { #expect(put(t, "victim-\(i)", Cell(n: Int64(i), kind: 2))) }
            // Many distinct attacker keys, live entries of rising rank.
            for i in 0..<30_000 { put(t, "attacker-\(i)", Cell(n: Int64(i))) }
            #expect(t.count <= maxKeys && t.count == t.stats.entryCount, "\(label)")
            #expect(t.stats.evictionCount > 0, "\(label)")
            // Then keys that must be kept until the table is full of them: refusals, counted.
            let refusedBefore = t.stats.refusalCount
            var refused = 0
            for i in 0..<5000 where !put(t, "kept-\(i)", Cell(n: 0, kind: 2)) { refused += 1 }
            #expect(refused > 0, "\(label)")
            #expect(t.stats.refusalCount - refusedBefore == UInt64(refused), "\(label)")
            #expect(t.count == maxKeys && t.stats.entryCount == maxKeys, "\(label)")
            for i in 0..<200 { #expect(get(t, "victim-\(i)") == Cell(n: Int64(i), kind: 2), "\(label): victim-\(i)") }
        }
    }

    @Test func threadsHammeringOneKeyCountExactly() throws {
        let dir = RegionDir()
        defer { dir.remove() }
        // Two mappings of one region: half the threads use each.
        let a = try SharedRegion.open(name: "hammer", directory: dir.path, maxBytes: 4 << 20)
        let b = try SharedRegion.open(name: "hammer", directory: dir.path, maxBytes: 4 << 20)
        let tables = [try makeCells(.host(a), maxKeys: 4096), try makeCells(.host(b), maxKeys: 4096), try makeCells(.process, maxKeys: 4096)]
        let threads = 8, perThread = 2000
        DispatchQueue.concurrentPerform(iterations: threads) { th in
            for i in 0..<perThread {
                for (j, t) in tables.enumerated() where j == 2 || j == th % 2 {
                    _ = t.update("hot", nowMs: 1000) { (e: inout Cell?, makeRoom: () -> Bool) -> Bool in
                        if var v = e { v.n += 1; e = v } else if makeRoom() { e = Cell(n: 1) }
                        return true
                    }
                    // Distinct keys too, so shards and the global count move under contention.
                    put(t, "t\(th)-\(i % 300)", Cell(n: 1))
                }
            }
        }
        #expect(get(tables[0], "hot") == Cell(n: Int64(threads * perThread)))
        #expect(get(tables[2], "hot") == Cell(n: Int64(threads * perThread)))
        #expect(tables[0].count == 1 + threads * 300 && tables[0].stats.entryCount == tables[0].count)
        #expect(tables[2].count == 1 + threads * 300 && tables[2].stats.entryCount == tables[2].count)
    }

    @Test func aProcessKilledHoldingAShardLockDoesNotWedgeTheOthers() throws {
        let dir = RegionDir()
        defer { dir.remove() }
        let r = try SharedRegion.open(name: "crash", directory: dir.path, maxBytes: 4 << 20)
        let t = try makeCells(.host(r), maxKeys: 1000)
        guard case .host(let shared) = t else { Issue.record("not a host table"); return }
        #expect(put(t, "k", Cell(n: 41)))
        let probe = shared.crashProbe(forKey: "k")
        let mutex = probe.mutex.assumingMemoryBound(to: pthread_mutex_t.self)
        #expect(inDyingChild { pthread_mutex_lock(mutex) })
        #expect(t.stats.repairCount == 0)
        // The next update of that shard takes the lock, repairs and goes on.
        #expect(put(t, "k", Cell(n: 42)))
        #expect(get(t, "k") == Cell(n: 42))
        #expect(t.stats.repairCount == 1)
        #expect(t.count == 1 && t.stats.entryCount == 1)
        #expect(BoundedTableStats.prometheusText([t.stats]).contains("bitsec_table_repairs_total{table=\"cells\"} 1\n"))
    }

    @Test func aTornUpdateIsRolledBack() throws {
        let dir = RegionDir()
        defer { dir.remove() }
        let r = try SharedRegion.open(name: "torn", directory: dir.path, maxBytes: 4 << 20)
        let t = try makeCells(.host(r), maxKeys: 1000)
        guard case .host(let shared) = t else { Issue.record("not a host table"); return }
        for i in 0..<50 { #expect(put(t, "other-\(i)", Cell(n: Int64(i)))) }
        #expect(put(t, "k", Cell(n: 42)))
        let p = shared.crashProbe(forKey: "k")
        guard let slot = p.slot else { Issue.record("no slot"); return }
        let mutex = p.mutex.assumingMemoryBound(to: pthread_mutex_t.self)
        // The child journals the slot, as an update does, then writes half of it and dies.
        #expect(inDyingChild {
            pthread_mutex_lock(mutex)
            memcpy(p.journalCopy, slot, p.slotSize)
            p.journalSlot.storeBytes(of: UInt32(p.slotIndex), as: UInt32.self)
            p.journalCount.storeBytes(of: p.count.load(as: UInt32.self), as: UInt32.self)
            p.journalState.storeBytes(of: UInt64(1), as: UInt64.self)
            memset(slot + 16, 0xff, (p.slotSize - 16) / 2)
        })
        #expect(get(t, "k") == Cell(n: 42), "the half-written value is rolled back")
        #expect(t.stats.repairCount == 1)
        for i in 0..<50 { #expect(get(t, "other-\(i)") == Cell(n: Int64(i))) }
        #expect(t.count == 51 && t.stats.entryCount == 51)
    }

    @Test func aTornInsertIsDiscarded() throws {
        let dir = RegionDir()
        defer { dir.remove() }
        let r = try SharedRegion.open(name: "torn-insert", directory: dir.path, maxBytes: 4 << 20)
        let t = try makeCells(.host(r), maxKeys: 1000)
        guard case .host(let shared) = t else { Issue.record("not a host table"); return }
        #expect(put(t, "k", Cell(n: 1)))
        let p = shared.crashProbe(forKey: "k")
        let mutex = p.mutex.assumingMemoryBound(to: pthread_mutex_t.self)
        // The child starts an insert (journal without a slot), bumps the count over a garbage
        // slot and dies before the index knows it.
        #expect(inDyingChild {
            pthread_mutex_lock(mutex)
            let c = p.count.load(as: UInt32.self)
            p.journalSlot.storeBytes(of: UInt32.max, as: UInt32.self)
            p.journalCount.storeBytes(of: c, as: UInt32.self)
            p.journalState.storeBytes(of: UInt64(1), as: UInt64.self)
            p.count.storeBytes(of: c + 1, as: UInt32.self)
        })
        #expect(get(t, "k") == Cell(n: 1))
        #expect(t.count == 1 && t.stats.entryCount == 1, "the half-made entry is gone")
        #expect(t.stats.repairCount == 1)
    }

    @Test func anUnrecoverableShardLockIsReinitialised() throws {
        let dir = RegionDir()
        defer { dir.remove() }
        let r = try SharedRegion.open(name: "unrecoverable", directory: dir.path, maxBytes: 4 << 20)
        let t = try makeCells(.host(r), maxKeys: 1000)
        guard case .host(let shared) = t else { Issue.record("not a host table"); return }
        #expect(put(t, "k", Cell(n: 5)))
        let mutex = shared.crashProbe(forKey: "k").mutex.assumingMemoryBound(to: pthread_mutex_t.self)
        #expect(inDyingChild { pthread_mutex_lock(mutex) })
        // The next locker gets EOWNERDEAD and releases the lock without marking it consistent
        // (bitsec never does): the lock becomes unrecoverable for everyone. (No trylock to
        // check it: glibc 2.36's trylock answers ENOTRECOVERABLE but leaves the lock word held.)
        let died = pthread_mutex_trylock(mutex)
        if died == 0 || died == EOWNERDEAD { pthread_mutex_unlock(mutex) }
        #expect(died == EOWNERDEAD)
        #expect(put(t, "k", Cell(n: 6)))
        #expect(get(t, "k") == Cell(n: 6))
        #expect(t.stats.repairCount >= 1)
        #expect(t.count == 1 && t.stats.entryCount == 1)
    }

    /// Not a benchmark with assertions on time: it checks the counts and prints what one
    /// thread's updates cost in each placement (`--filter SharedTableTests` shows it).
    @Test func updateCostPerPlacement() throws {
        let keys = (0..<10_000).map { "10.0.\($0 / 256).\($0 % 256)" }
        let rounds = 20
        try eachPlacement { label, placement in
            let t = try makeCells(placement, name: "throughput", maxKeys: 20_000)
            var ts = timespec(), te = timespec()
            clock_gettime(CLOCK_MONOTONIC, &ts)
            for _ in 0..<rounds {
                for k in keys {
                    _ = t.update(k, nowMs: 1000) { (e: inout Cell?, makeRoom: () -> Bool) -> Bool in
                        if var v = e { v.n += 1; e = v } else if makeRoom() { e = Cell(n: 1) }
                        return true
                    }
                }
            }
            clock_gettime(CLOCK_MONOTONIC, &te)
            let ns = (Int(te.tv_sec) - Int(ts.tv_sec)) * 1_000_000_000 + Int(te.tv_nsec) - Int(ts.tv_nsec)
            print("StateTable.update \(label): \(ns / (rounds * keys.count)) ns per update (\(rounds * keys.count) updates, \(keys.count) keys, one thread)")
            #expect(get(t, keys[0]) == Cell(n: Int64(rounds)))
            #expect(t.count == keys.count)
        }
    }
}
