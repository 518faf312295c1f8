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
