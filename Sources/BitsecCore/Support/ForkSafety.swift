internal import Glibc

/// Objects whose state must be made consistent in the child after `fork()`: threads do not
/// survive a fork, and a mutex held by one of the parent's other threads would stay locked in
/// the child forever.
///
/// The `pthread_atfork` handlers (registered once per process) follow the usual pattern:
/// before the fork the forking thread takes each registered object's locks
/// (`prepareFork`), so the memory the child inherits is never half-updated; afterwards the
/// parent releases them (`afterForkInParent`) and the child repairs its copy
/// (`afterForkInChild`: forget the parent's threads and connections) and releases them.
protocol ForkAware: AnyObject {
    func prepareFork()
    func afterForkInParent()
    func afterForkInChild()
}

enum ForkSafety {
    private struct Entry { weak var object: (any ForkAware)?; let id: ObjectIdentifier }
    nonisolated(unsafe) private static var entries: [Entry] = []
    /// The objects locked by `prepareFork`, in order (kept alive until the fork is over).
    nonisolated(unsafe) private static var held: [any ForkAware] = []
    nonisolated(unsafe) private static let mutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()
    /// Incremented in the child after every fork (read under `mutex` or by the child itself).
    nonisolated(unsafe) private(set) static var generation = 0

    private static let handlersInstalled: Bool = {
        pthread_atfork({ ForkSafety.prepare() }, { ForkSafety.parent() }, { ForkSafety.child() })
        return true
    }()

    static func register(_ o: any ForkAware) {
        _ = handlersInstalled
        pthread_mutex_lock(mutex)
        entries.append(Entry(object: o, id: ObjectIdentifier(o)))
        pthread_mutex_unlock(mutex)
    }

    static func unregister(_ o: any ForkAware) {
        unregister(id: ObjectIdentifier(o))
    }

    /// Called from `deinit` (the weak reference is already nil there). Every registered
    /// type unregisters in its deinit, so entries are removed by identity alone: no weak
    /// reference is loaded while the registry is locked, because a loaded reference can be
    /// the last one, and its release would run a deinit that takes this same lock.
    static func unregister(id: ObjectIdentifier) {
        pthread_mutex_lock(mutex)
        entries.removeAll { $0.id == id }
        pthread_mutex_unlock(mutex)
    }

    private static func prepare() {
        // Globals the child handler uses are initialised here, in the parent (a lazy global's
        // first use in the child would be a one-time initialisation there).
        _ = generation
        pthread_mutex_lock(mutex)
        held = entries.compactMap { $0.object }
        for o in held { o.prepareFork() }
    }

    // The held references are dropped after the registry is unlocked: a last release runs
    // a deinit that unregisters (and takes the registry lock).
    //
    // The loops below index the array instead of iterating `h.reversed()`: an unoptimised
    // build asks the Swift runtime for the witness tables of that iteration on first use, and
    // in the child that first use can wait forever on a runtime lock or one-time initialisation
    // another of the parent's threads held at the fork (seen under ThreadSanitizer: the
    // child spun in swift_getWitnessTable and the parent waited for it). Only code that needs
    // no new type metadata runs in the child: an array already built in `prepare` and calls
    // through its existentials.
    private static func parent() {
        let h = held
        held = []
        var i = h.count
        while i > 0 { i -= 1; h[i].afterForkInParent() }
        pthread_mutex_unlock(mutex)
        withExtendedLifetime(h) {}
    }

    private static func child() {
        generation &+= 1
        let h = held
        held = []
        var i = h.count
        while i > 0 { i -= 1; h[i].afterForkInChild() }
        pthread_mutex_unlock(mutex)
        withExtendedLifetime(h) {}
    }
}

/// A callback run in the child after `fork()`, for the ABI layer's handle (which keeps a
/// count of calls in flight: calls of the parent's other threads never return in the child).
/// Registered while the object lives.
public final class ForkChildHook: ForkAware, @unchecked Sendable {
    private let body: () -> Void

    public init(_ body: @escaping () -> Void) {
        self.body = body
        ForkSafety.register(self)
    }

    deinit { ForkSafety.unregister(id: ObjectIdentifier(self)) }

    func prepareFork() {}
    func afterForkInParent() {}
    func afterForkInChild() { body() }
}
