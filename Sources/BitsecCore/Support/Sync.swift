internal import Glibc

/// A mutex with a condition variable, for the few places that must wait (the Redis pool,
/// queues). Everything else uses `Synchronization.Mutex` or atomics.
public final class ConditionLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    public init() {
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
    }

    @inline(__always) public func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) public func unlock() { pthread_mutex_unlock(mutex) }

    public func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        lock()
        defer { unlock() }
        return try body()
    }

    public func signal() { pthread_cond_signal(cond) }
    public func broadcast() { pthread_cond_broadcast(cond) }

    /// Waits (lock held) until signalled or `deadlineMillis` (monotonic) passes.
    /// Returns false on timeout.
    @discardableResult
    public func wait(untilMonotonicMillis deadline: Int64) -> Bool {
        var ts = timespec()
        ts.tv_sec = Int(deadline / 1000)
        ts.tv_nsec = Int((deadline % 1000) * 1_000_000)
        return pthread_cond_timedwait(cond, mutex, &ts) == 0
    }

    public func wait() { pthread_cond_wait(cond, mutex) }
}

#if BITSEC_TSAN_MUTEX
/// ThreadSanitizer builds only (`make sanitize-thread` compiles with -DBITSEC_TSAN_MUTEX;
/// release and test builds never do): the same API as `Synchronization.Mutex`, which this
/// module-level type shadows, over a pthread mutex.
///
/// Why: on Linux, `Synchronization.Mutex` locks with atomics and futex syscalls inside the
/// uninstrumented standard library, so TSan sees no happens-before edge between two
/// critical sections and reports every access under the lock as a race (a six-line program
/// that only increments a Mutex-protected dictionary from 8 threads gets reports and the
/// right total; docs/sanitizers.md). TSan intercepts pthread_mutex_lock/unlock, so with this
/// type it checks what is ours: that every shared access is under the lock.
struct Mutex<Value: ~Copyable>: ~Copyable, @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    private let value: UnsafeMutablePointer<Value>

    init(_ initialValue: consuming sending Value) {
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
        value = .allocate(capacity: 1)
        value.initialize(to: initialValue)
    }

    deinit {
        value.deinitialize(count: 1)
        value.deallocate()
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    borrowing func withLock<Result: ~Copyable, E: Error>(_ body: (inout sending Value) throws(E) -> sending Result) throws(E) -> sending Result {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return try body(&value.pointee)
    }

    /// As `Synchronization.Mutex.withLockIfAvailable`: nil, without waiting, when the lock is held.
    borrowing func withLockIfAvailable<Result: ~Copyable, E: Error>(_ body: (inout sending Value) throws(E) -> sending Result) throws(E) -> sending Result? {
        guard pthread_mutex_trylock(lock) == 0 else { return nil }
        defer { pthread_mutex_unlock(lock) }
        return try body(&value.pointee)
    }
}
#endif
