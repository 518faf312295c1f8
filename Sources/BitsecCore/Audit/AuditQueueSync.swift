internal import Glibc

/// One mutex and the three conditions of the audit queue: `work` (the writer waits for
/// records, flushes or stop), `room` (blocked emitters wait for space), `durable` (emitters in
/// every-event mode and flushers wait for the durable sequence to advance). Monotonic clock.
final class AuditQueueSync: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let conds = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 3)
    enum Cond: Int { case work = 0, room = 1, durable = 2 }

    init() {
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        for k in 0..<3 { pthread_cond_init(conds + k, &attr) }
        pthread_condattr_destroy(&attr)
    }

    /// In the child after fork(), with the mutex held: the parent's waiters do not exist here.
    func reinitConditions() {
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        for k in 0..<3 { pthread_cond_init(conds + k, &attr) }
        pthread_condattr_destroy(&attr)
    }

    deinit {
        for k in 0..<3 { pthread_cond_destroy(conds + k) }
        pthread_mutex_destroy(mutex)
        conds.deallocate()
        mutex.deallocate()
    }

    @inline(__always) func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) func unlock() { pthread_mutex_unlock(mutex) }
    @inline(__always) func signal(_ c: Cond) { pthread_cond_signal(conds + c.rawValue) }
    @inline(__always) func broadcast(_ c: Cond) { pthread_cond_broadcast(conds + c.rawValue) }
    func wait(_ c: Cond) { pthread_cond_wait(conds + c.rawValue, mutex) }

    /// Waits until signalled or the monotonic deadline (ms) passes; false once it has passed.
    @discardableResult
    func wait(_ c: Cond, untilMillis deadline: Int64) -> Bool {
        if Clock.monotonicMillis() >= deadline { return false }
        var ts = timespec()
        ts.tv_sec = Int(deadline / 1000)
        ts.tv_nsec = Int((deadline % 1000) * 1_000_000)
        _ = pthread_cond_timedwait(conds + c.rawValue, mutex, &ts)
        return Clock.monotonicMillis() < deadline
    }
}
