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
    // Written only by `close`, after every caller has left and no new one can enter.
    private nonisolated(unsafe) var runtime: Runtime?

    init(_ runtime: Runtime) { self.runtime = runtime }

    /// Returns the runtime and counts the caller in, or nil when closed.
    @inline(__always)
    func enter() -> Runtime? {
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
        runtime?.shutdown()
        runtime = nil
    }
}
