// The runtime handle behind `bitsec_runtime *`.
internal import BitsecCore
internal import Glibc
internal import Synchronization

/// The object a `bitsec_runtime *` points at.
///
/// Calls enter and leave the handle with one atomic add each; `close` sets the closed bit,
/// waits for calls in flight to leave, then releases the runtime. The small handle object
/// itself is deliberately never freed, so a call on a closed handle reads a valid object and
/// gets `BITSEC_E_CLOSED` instead of a use-after-free (it costs ~64 bytes per closed runtime).
final class RuntimeHandle: @unchecked Sendable {
    static let liveMagic: UInt64 = 0x5254_4345_5354_4942  // "BITSECRT"
    private static let closedBit = 1 << 40

    let magic: UInt64 = RuntimeHandle.liveMagic
    private let state = Atomic<Int>(0)
    /// +1 reference owned by the handle, released by `close` after every caller has left.
    /// Callers borrow it without retaining (they are counted in `state` instead), so a
    /// call costs two atomic adds and no reference counting.
    private let runtime: Unmanaged<Runtime>

    /// In a child after fork() only the forking thread exists, and it is not inside a call:
    /// the calls the parent's other threads had in flight are forgotten, so `close` in the
    /// child does not wait for them forever. Dropped at close.
    private var forkHook: ForkChildHook?

    init(_ runtime: Runtime) {
        self.runtime = Unmanaged.passRetained(runtime)
        // unowned is safe here, in the child too: a handle is never freed (a call on a closed
        // handle must read a valid object), and a weak reference would allocate a side table
        // that LeakSanitizer reports.
        forkHook = ForkChildHook { [unowned self] in
            let s = self.state.load(ordering: .relaxed)
            self.state.store(s & Self.closedBit, ordering: .relaxed)
        }
    }

    /// Counts the caller in and returns the runtime, or nil when closed. A non-nil result
    /// must be balanced by `leave()`; the runtime stays alive until then.
    @inline(__always)
    func enter() -> Unmanaged<Runtime>? {
        let s = state.add(1, ordering: .acquiring).newValue
        if s & Self.closedBit != 0 {
            state.subtract(1, ordering: .releasing)
            return nil
        }
        return runtime
    }

    @inline(__always)
    func leave() { state.subtract(1, ordering: .releasing) }

    /// Closes once; later calls are no-ops. Blocks until calls in flight have returned.
    func close() {
        let old = state.bitwiseOr(Self.closedBit, ordering: .acquiringAndReleasing).oldValue
        if old & Self.closedBit != 0 { return }
        var spins = 0
        while state.load(ordering: .acquiring) & (Self.closedBit - 1) != 0 {
            spins += 1
            if spins < 100 { sched_yield() } else { usleep(200) }
        }
        runtime.takeUnretainedValue().shutdown()
        runtime.release()
        forkHook = nil
    }
}
