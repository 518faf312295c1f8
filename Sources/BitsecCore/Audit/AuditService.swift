internal import Glibc

/// The `audit` capability: validates events, queues them without blocking the caller, and a
/// writer thread sequences, chains and writes them to the sinks (docs/audit.md).
///
/// Threads: any number of emitters; one writer (a pthread, started at the first record).
/// The queue is a bounded array under one mutex; an emitter holds it for an append. The
/// writer takes the whole queue at once (a batch), formats and chains records outside the
/// lock, writes them with one `write`, and syncs per the durability mode: group commit falls
/// out of this design, since every emitter whose record is in the batch shares its fsync.
public final class AuditService: Capability, AuditHook, @unchecked Sendable {
    public static let sectionName = "audit"

    public let config: AuditConfig
    public let metrics: AuditMetrics
    let validator: EventValidator
    private let sync = AuditQueueSync()
    /// The sidecar of a shared file sink (several processes append to one chain), else nil.
    private let sharedHead: SharedAuditHead?

    // ---- guarded by `sync` ----
    private var pending: [QueuedEvent] = []
    private var spare: [QueuedEvent] = []
    private var nextSeq: UInt64
    private var writtenSeq: UInt64
    private var durableSeq: UInt64
    private var flushTarget: UInt64 = 0
    private var dropsUnreported: UInt64 = 0
    /// Refused events not yet reported by an `event_rejected` record (coalesced), the last
    /// one's reason and status, and when the current interval ends (monotonic ms).
    private var rejectsUnreported: UInt64 = 0
    private var rejectLast: (reason: String, status: String, source: String) = ("", "", "")
    private var rejectWindowEnd: Int64 = 0
    private var fileFailure: String? = nil
    /// Set once an `fdatasync` of the file failed, for the rest of this runtime's life. Linux
    /// may drop the dirty pages of a failed sync and a later sync then succeeds without them,
    /// so nothing written before can be promised durable again: `durableSeq` stops, durable
    /// emits and flushes fail with `BITSEC_E_IO`, and the sink reports failing until the
    /// runtime is reopened (the reopen's recovery reads back and checks what really is on
    /// disk). Fail-stop, as PostgreSQL does after "fsyncgate".
    private var syncFailure: String? = nil
    private var started = false
    private var stopping = false
    private var stopped = false
    private var paused = false
    private var writerWaiting = false
    /// Someone (the writer thread or a leading emitter) is writing a batch.
    private var writerBusy = false
    /// The role holder left chained records unwritten after a file error (read under the lock).
    private var retryPending = false
    /// Copies of the file sink's sync state for readers holding only the lock.
    private var unsyncedSeen = false
    private var unsyncedSinceSeen: Int64 = 0
    private var blockedEmitters = 0
    /// Shared file: the local sequence numbers (queue order) of recent batches and the chain
    /// sequence number their first record received, so an emitter that waited for its
    /// record can return the record's `seq`.
    private var globalOffsets: [(first: UInt64, last: UInt64, global: UInt64)] = []
    private var writtenGlobal: UInt64 = 0
    private var durableGlobal: UInt64 = 0
    /// Set in the child of a fork() when the file sink is not shared: every call fails
    /// (the parent still owns the file; two writers would fork the chain).
    private var forkedUnshared = false
    /// The parent's pid in a forked child (reported by the child's `started` record).
    private var forkedFrom: Int32 = 0

    // ---- writer thread only ----
    private let file: FileSink?
    private var secondaries: [SecondarySink] = []
    private var sinkTrouble: [String: (errors: Int, lost: Int)] = [:]
    private var unwritten: [OutRecord] = []
    /// Shared file: events of a batch whose write failed, chained again at the next attempt
    /// (the head may have moved meanwhile).
    private var unwrittenEvents: [QueuedEvent] = []
    /// Shared file: bytes of torn tails cut since the last `started`/`writer_recovered` record.
    private var tornCut: Int64 = 0
    private var fileFailureCount = 0
    private let hasher: ChainHasher
    private var lastHash: [UInt8]
    private let instance: [UInt8]
    private var recovery: FileSink.Recovery
    private var unsyncedEvents = 0
    private var firstUnsyncedAt: Int64 = 0
    private var thread = pthread_t()

    /// Queued records that wake the writer early; its longest linger otherwise (ms).
    static let wakeBatch = 512
    static let lingerMs = 2

    struct QueuedEvent {
        var seq: UInt64
        var event: PreparedEvent
        /// A submitted event (`submit`): its text, validated and encoded by the writer
        /// (`event` is a placeholder until then); nil for an event validated at emit.
        var submitted: Submitted? = nil
    }

    /// An event of `submit`, as the caller gave it, and when it was handed over.
    struct Submitted {
        var text: [UInt8]
        /// The text's length when it was over the event limit (then `text` is empty).
        var oversize: Int
        var micros: Int64
    }

    /// The most events one `submit` takes (BITSEC_AUDIT_SUBMIT_MAX_EVENTS).
    public static let submitMaxEvents = 4096

    init(config: AuditConfig, redis: RedisPool?) throws(BitsecError) {
        self.config = config
        validator = EventValidator(maxBytes: config.maxEventBytes, maxDepth: config.maxDepth, extraTypes: config.extraTypes)
        hasher = try ChainHasher(key: config.hmacKey)
        instance = try OpenSSL.randomBytes(count: 8)
        if let f = config.file {
            let fs = FileSink(f)
            recovery = try fs.open(hasher: hasher)
            file = fs
            sharedHead = f.shared ? try SharedAuditHead(filePath: f.path) : nil
        } else {
            recovery = FileSink.Recovery()
            file = nil
            sharedHead = nil
        }
        metrics = AuditMetrics(shared: sharedHead)
        if let sharedHead, let fs = file {
            // Checks the shared chain's head now (a last record failing its hash check
            // refuses to open, as for a file of one's own).
            let hasher = self.hasher
            var rec = FileSink.Recovery()
            let fingerprint = try hasher.chain(prev: ChainHasher.genesis, canonical: Array("bitsec shared audit chain".utf8))
            try sharedHead.withLock { (_) throws(BitsecError) in
                guard sharedHead.checkChainFingerprintLocked(fingerprint) else {
                    throw .config("audit file sink: \(fs.path) is shared by runtimes that chain with another function (another hmac_key, or one with and one without): every runtime on a shared trail needs the same hmac_key")
                }
                if let h = sharedHead.readHead(), let cut = try fs.adopt(h) {
                    rec.lastSeq = h.lastSeq
                    rec.lastHash = h.lastHash
                    rec.truncatedBytes = cut
                } else {
                    try fs.reopenPath()
                    rec = try fs.recover(hasher: hasher)
                    sharedHead.writeHead(fs.head(lastSeq: rec.lastSeq, lastHash: rec.lastHash))
                }
            }
            recovery = rec
        }
        lastHash = recovery.lastHash
        // A shared file's records get the chain's sequence numbers when written; the queue
        // counts in local numbers (1, 2, 3, ... per runtime).
        let base = sharedHead != nil ? 0 : recovery.lastSeq
        nextSeq = base + 1
        writtenSeq = base
        durableSeq = base
        if config.stdout { secondaries.append(StdoutSink()) }
        if let s = config.syslog { secondaries.append(SyslogSink(s)) }
        if let r = config.redis, let redis { secondaries.append(RedisStreamSink(r, pool: redis)) }
        pending.reserveCapacity(min(config.queueCapacity, 4096))
        ForkSafety.register(self)
    }

    deinit { ForkSafety.unregister(id: ObjectIdentifier(self)) }

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> AuditService {
        let c = try AuditConfig.read(o, context: context)
        return try AuditService(config: c, redis: context.redis)
    }

    public var sinkNames: [String] {
        (file != nil ? ["file"] : []) + secondaries.map(\.name)
    }

    public func describe() -> JSONValue {
        func n(_ v: Int) -> JSONValue { .number(JSONNumber(int64: Int64(v))) }
        var sinks: [JSONValue] = []
        if let f = config.file {
            sinks.append(.object(JSONObject([("type", .string("file")), ("path", .string(f.path)),
                                             ("rotate_bytes", .number(JSONNumber(int64: f.rotateBytes))),
                                             ("rotate_seconds", .number(JSONNumber(int64: f.rotateSeconds))),
                                             ("shared", .bool(f.shared))])))
        }
        if config.stdout { sinks.append(.object(JSONObject([("type", .string("stdout"))]))) }
        if let s = config.syslog {
            sinks.append(.object(JSONObject([("type", .string("syslog")), ("socket", .string(s.socketPath)),
                                             ("facility", n(s.facility)), ("app_name", .string(s.appName))])))
        }
        if let r = config.redis {
            sinks.append(.object(JSONObject([("type", .string("redis")), ("stream", .string(r.stream)),
                                             ("maxlen", .number(JSONNumber(int64: r.maxLen)))])))
        }
        return .object(JSONObject([
            ("sinks", .array(sinks)),
            ("durability", .string(config.durability.rawValue)),
            ("batch_max_events", n(config.batchMaxEvents)),
            ("batch_max_ms", n(config.batchMaxMs)),
            ("queue_capacity", n(config.queueCapacity)),
            ("full_policy", .string(config.fullPolicy.rawValue)),
            ("max_event_bytes", n(config.maxEventBytes)),
            ("max_depth", n(config.maxDepth)),
            ("rejected_interval_ms", n(config.rejectedIntervalMs)),
            ("automatic_events", .bool(config.automaticEvents)),
            ("chain", .string(config.hmacKey != nil ? "hmac-sha256" : "sha256")),
        ]))
    }

    // MARK: - Emitting

    /// Validates, stamps and queues a caller's event (JSON). Returns its sequence number, or
    /// 0 when the drop policy dropped it (counted, reported later by an `events_dropped`
    /// record). In every-event mode, returns once the record is durable.
    ///
    /// An event that cannot be recorded (not JSON, not an object, an unknown type or member,
    /// a bad value, nesting deeper than `max_depth`, more than 1 MiB) throws, and leaves an
    /// `audit`/`event_rejected` record in its place (coalesced: `rejected(_:_:)`).
    public func emit(_ bytes: UnsafeRawBufferPointer, at micros: Int64 = 0) throws(BitsecError) -> UInt64 {
        let b: EventBuilder
        do { b = try validator.validate(bytes) } catch { throw rejected(error, bytes) }
        let p = b.encode(timeMicros: micros > 0 ? micros : Clock.nowMicros(), service: config.service)
        return try enqueue(p, waitDurable: config.durability == .everyEvent, policy: config.fullPolicy)
    }

    /// Hands `lengths.count` events (their texts back to back in `bytes`) to the writer, which
    /// validates and encodes each as `emit` would, outside the queue's lock and off the
    /// caller's thread: one call and one lock for a batch (a server's request records of one
    /// event-loop turn). Each event gets its sequence number here, in order. Never waits: the
    /// events the queue has no room for are dropped and counted as `emit` drops them (an
    /// `events_dropped` record reports them). An event the writer refuses leaves an
    /// `audit`/`event_rejected` record in its place (reason, status, source, request id; never
    /// the content), one per refused event. Only with the `drop` policy outside every_event
    /// mode (elsewhere an emit may wait, and this call never does). Returns how many were
    /// queued.
    public func submit(_ bytes: UnsafeRawBufferPointer, lengths: UnsafeBufferPointer<UInt>) throws(BitsecError) -> Int {
        guard config.durability != .everyEvent, config.fullPolicy == .drop else {
            throw BitsecError(.unsupported, "audit: submit never waits, and this trail's \(config.durability == .everyEvent ? "every_event durability" : "block policy") asks emits to wait; use bitsec_audit_emit")
        }
        guard lengths.count <= Self.submitMaxEvents else {
            throw .invalid("count: \(lengths.count) events exceeds the limit of \(Self.submitMaxEvents)")
        }
        var total = 0
        for n in lengths {
            guard n <= UInt(bytes.count - total) else {
                throw .invalid("lengths: the events' lengths add up to more than events_len (\(bytes.count))")
            }
            total += Int(n)
        }
        guard total == bytes.count else {
            throw .invalid("lengths: the events' lengths add up to \(total), not events_len (\(bytes.count))")
        }
        let micros = Clock.nowMicros()
        var items: [QueuedEvent] = []
        items.reserveCapacity(lengths.count)
        var offset = 0
        var refusedAt: [Int] = []
        for n in lengths {
            let len = Int(n)
            if len > config.maxEventBytes {
                // Longer than a record may be: prepared here, on the caller's thread, as an
                // emit would prepare it (cut down, or its refusal), so that what waits for the
                // writer stays within max_event_bytes per event, as the emits' records do.
                let raw = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + len)])
                let s = Submitted(text: len > AuditConfig.maxEventBytesLimit ? [] : Array(raw),
                                  oversize: len > AuditConfig.maxEventBytesLimit ? len : 0, micros: micros)
                let (event, refused) = prepare(s)
                if refused { refusedAt.append(items.count) }  // counted once queued
                items.append(QueuedEvent(seq: 0, event: event))
            } else {
                items.append(QueuedEvent(seq: 0, event: Self.placeholder,
                                         submitted: Submitted(text: Array(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + len)])),
                                                              oversize: 0, micros: micros)))
            }
            offset += len
        }
        sync.lock()
        try admitLocked(UInt64(items.count))
        let before = pending.count
        let accepted = min(items.count, max(0, config.queueCapacity - before))
        for i in 0..<accepted {
            items[i].seq = nextSeq
            nextSeq &+= 1
            pending.append(items[i])
        }
        let dropped = items.count - accepted
        if dropped > 0 { dropsUnreported &+= UInt64(dropped) }
        if writerWaiting && accepted > 0 && (before == 0 || (before < Self.wakeBatch && pending.count >= Self.wakeBatch)) {
            sync.signal(.work)
        }
        sync.unlock()
        if dropped > 0 { metrics.addDropped(UInt64(dropped), timeout: false) }
        for i in refusedAt where i < accepted { metrics.addRejected() }
        return accepted
    }

    static let placeholder = PreparedEvent(body: [], key: MetricKey(type: "", subtype: "", result: "", sensitive: nil))

    /// The writer's part of `submit`: each submitted event of `batch` validated and encoded,
    /// or replaced, at its sequence number, by the `event_rejected` record of its refusal.
    private func prepareSubmitted(_ batch: inout [QueuedEvent]) {
        for i in batch.indices {
            guard let s = batch[i].submitted else { continue }
            batch[i].submitted = nil
            let (event, refused) = prepare(s)
            if refused { metrics.addRejected() }
            batch[i].event = event
        }
    }

    /// A submitted event validated and encoded, or the `event_rejected` record of its refusal
    /// (then `refused`; the caller counts it once the record is queued).
    private func prepare(_ s: Submitted) -> (event: PreparedEvent, refused: Bool) {
        let outcome: Result<EventBuilder, BitsecError>
        if s.oversize > 0 {
            outcome = .failure(.tooLarge("event of \(s.oversize) bytes exceeds \(AuditConfig.maxEventBytesLimit) bytes"))
        } else {
            outcome = s.text.withUnsafeBytes { (raw) -> Result<EventBuilder, BitsecError> in
                do throws(BitsecError) { return .success(try validator.validate(raw)) } catch { return .failure(error) }
            }
        }
        switch outcome {
        case .success(let b):
            return (b.encode(timeMicros: s.micros, service: config.service), false)
        case .failure(let error):
            let rid = s.text.isEmpty ? nil : s.text.withUnsafeBytes { Self.requestID($0) }
            var d: [(key: String, value: JSONValue)] = [
                ("count", .number(JSONNumber(int64: 1))), ("status", .string(Self.statusName(error.status))),
                ("source", .string("bitsec_audit_submit")),
            ]
            if let rid { d.append(("request_id", .string(rid))) }
            var b = EventBuilder()
            b.type = AuditSchema.internalType
            b.subtype = "event_rejected"
            b.result = "failure"
            b.reason = UTF8Cut.prefix(error.detail, 512)
            b.details = .object(JSONObject(d))
            return (b.encode(timeMicros: s.micros, service: config.service), true)
        }
    }

    static func statusName(_ status: Status) -> String {
        switch status {
        case .invalidArgument: return "BITSEC_E_INVALID_ARGUMENT"
        case .malformed: return "BITSEC_E_MALFORMED"
        case .tooLarge: return "BITSEC_E_TOO_LARGE"
        default: return "BITSEC_E_\(status.rawValue)"
        }
    }

    public func emit(_ text: String) throws(BitsecError) -> UInt64 {
        try Array(text.utf8).withRawBytes { (raw) throws(BitsecError) -> UInt64 in try emit(raw) }
    }

    /// Counts a refused event and records the refusal in the chain: the first refusal of an
    /// interval (`rejected_interval_ms`) at once, as an `audit`/`event_rejected` record with
    /// the reason, the status, the source and the request id when the event had a plain one
    /// in `details.request_id`; later ones in the same interval are only counted, and one
    /// summary record (`coalesced: true`, `count`, the last reason) is written when the
    /// interval ends, at a flush or at close. Never records the refused content. Returns
    /// `error` for the caller to throw.
    public func rejected(_ error: BitsecError, _ bytes: UnsafeRawBufferPointer?, source: String = "bitsec_audit_emit") -> BitsecError {
        metrics.addRejected()
        let rid = bytes.flatMap(Self.requestID)
        let reason = UTF8Cut.prefix(error.detail, 512)
        let status = Self.statusName(error.status)
        sync.lock()
        defer { sync.unlock() }
        if stopping || forkedUnshared { return error }
        if !started {
            do { try startWriterLocked() } catch { return error }
        }
        let now = Clock.monotonicMillis()
        if rejectsUnreported == 0 && now >= rejectWindowEnd {
            var d: [(key: String, value: JSONValue)] = [
                ("count", .number(JSONNumber(int64: 1))), ("status", .string(status)), ("source", .string(source)),
            ]
            if let rid { d.append(("request_id", .string(rid))) }
            appendInternalLocked("event_rejected", result: "failure", reason: reason, details: d)
            rejectWindowEnd = now &+ Int64(config.rejectedIntervalMs)
        } else {
            rejectsUnreported &+= 1
            rejectLast = (reason, status, source)
            if now >= rejectWindowEnd { appendRejectSummaryLocked(now: now) }
        }
        if writerWaiting && pending.count == 1 { sync.signal(.work) }
        return error
    }

    /// The summary of the refusals counted since the last `event_rejected` record.
    private func appendRejectSummaryLocked(now: Int64) {
        guard rejectsUnreported > 0 else { return }
        appendInternalLocked("event_rejected", result: "failure", reason: rejectLast.reason, details: [
            ("count", .number(JSONNumber(int64: Int64(truncatingIfNeeded: rejectsUnreported)))),
            ("coalesced", .bool(true)), ("status", .string(rejectLast.status)), ("source", .string(rejectLast.source)),
        ])
        rejectsUnreported = 0
        rejectWindowEnd = now &+ Int64(config.rejectedIntervalMs)
    }

    private func rejectSummaryDue() -> Bool {
        rejectsUnreported > 0 && Clock.monotonicMillis() >= rejectWindowEnd
    }

    /// `details.request_id` of a refused event when it is readable JSON and the id is a plain
    /// token (`[A-Za-z0-9._:-]{1,128}`); nothing else of the event is looked at.
    static func requestID(_ bytes: UnsafeRawBufferPointer) -> String? {
        guard bytes.count <= EventValidator.maxInputBytes,
              let doc = try? JSONReader.parse(bytes, options: .init(maxBytes: EventValidator.maxInputBytes, maxDepth: AuditConfig.maxDepthLimit)),
              case .string(let r)? = doc["details"]?["request_id"] else { return nil }
        let u = r.utf8
        guard !u.isEmpty, u.count <= 128, u.allSatisfy({ c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F || c == 0x3A || c == 0x2D
        }) else { return nil }
        return r
    }

    public var automaticEventsEnabled: Bool { config.automaticEvents }

    /// Automatic events never wait: not for room (drop policy), not for durability.
    public func emitAutomatic(_ e: AutomaticAuditEvent) {
        guard config.automaticEvents else { return }
        func clip(_ s: String?, _ n: Int) -> String? {
            guard let s else { return nil }
            if s.utf8.count <= n { return s }
            var u = Array(s.utf8.prefix(n))
            while !u.isEmpty && !UTF8Validation.isValid(u) { u.removeLast() }
            return String(decoding: u, as: UTF8.self)
        }
        var b = EventBuilder()
        b.type = AuditSchema.isName(e.type) ? e.type : "application"
        b.subtype = AuditSchema.isSubtype(e.subtype) ? e.subtype : "unspecified"
        b.result = AuditSchema.results.contains(e.result) ? e.result : "unknown"
        b.reason = clip(e.reason, 256)
        b.actor = clip(e.actor, 256)
        b.tenant = clip(e.tenant, 256)
        b.resource = clip(e.resource, 1024)
        b.action = clip(e.action, 64)
        if !e.details.isEmpty { b.details = .object(JSONObject(e.details)) }
        b.automatic = true
        let p = b.encode(timeMicros: Clock.nowMicros(), service: config.service)
        _ = try? enqueue(p, waitDurable: false, policy: .drop)
    }

    private func startWriterLocked() throws(BitsecError) {
        let ctx = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            guard let arg else { return nil }
            var s = Unmanaged<AuditService>.fromOpaque(arg).takeRetainedValue()
            // The loop comes back when idle for a second: if this thread holds the last
            // reference (the runtime was dropped without shutdown, e.g. a later section of
            // the configuration failed after an automatic event started the writer), it
            // closes the sinks and ends instead of keeping the service alive forever.
            while s.writerLoop() {
                if isKnownUniquelyReferenced(&s) {
                    s.abandonedByOwner()
                    break
                }
            }
            return nil
        }, ctx)
        guard rc == 0 else {
            Unmanaged<AuditService>.fromOpaque(ctx).release()
            throw .internalError("audit: cannot start the writer thread (error \(rc))")
        }
        started = true
        // The first record of every run says so, with what recovery found.
        var d: [(key: String, value: JSONValue)] = [
            ("pid", .number(JSONNumber(int64: Int64(getpid())))),
            ("chain", .string(hasher.keyed ? "hmac-sha256" : "sha256")),
            ("durability", .string(config.durability.rawValue)),
        ]
        if sharedHead != nil { d.append(("shared", .bool(true))) }
        if forkedFrom != 0 { d.append(("forked_from", .number(JSONNumber(int64: Int64(forkedFrom))))) }
        if let from = recovery.from {
            d.append(("recovered_from", .string(from)))
            d.append(("recovered_seq", .number(JSONNumber(int64: Int64(recovery.lastSeq)))))
        }
        if recovery.truncatedBytes > 0 {
            d.append(("torn_bytes_truncated", .number(JSONNumber(int64: recovery.truncatedBytes))))
        }
        appendInternalLocked("started", result: "success", details: d)
    }

    private func appendInternalLocked(_ subtype: String, result: String, reason: String? = nil, details: [(key: String, value: JSONValue)]) {
        var b = EventBuilder()
        b.type = AuditSchema.internalType
        b.subtype = subtype
        b.result = result
        b.reason = reason
        b.details = .object(JSONObject(details))
        let p = b.encode(timeMicros: Clock.nowMicros(), service: config.service)
        pending.append(QueuedEvent(seq: nextSeq, event: p))
        nextSeq &+= 1
    }

    static let forkedUnsharedMessage = "audit: this runtime was opened before fork() and its file sink is not shared, so only the parent process may write it; set \"shared\": true on the file sink (every process then appends to the same chain), or open the runtime in each process after fork()"

    /// With the lock held, before `events` are queued: refused in a forked child that does not
    /// own the file (the events counted as dropped: never silent, an automatic event has no
    /// caller to hand the error to) and once closing; the writer started at the first record.
    /// Unlocks before it throws.
    private func admitLocked(_ events: UInt64) throws(BitsecError) {
        if forkedUnshared {
            sync.unlock()
            metrics.addDropped(events, timeout: false)
            throw BitsecError(.unsupported, Self.forkedUnsharedMessage)
        }
        if stopping {
            sync.unlock()
            throw BitsecError(.closed, "audit: the runtime is closing")
        }
        if !started {
            do { try startWriterLocked() } catch { sync.unlock(); throw error }
        }
    }

    private func enqueue(_ p: PreparedEvent, waitDurable: Bool, policy: AuditConfig.FullPolicy) throws(BitsecError) -> UInt64 {
        sync.lock()
        try admitLocked(1)
        if pending.count >= config.queueCapacity {
            if policy == .drop {
                dropsUnreported &+= 1
                sync.unlock()
                metrics.addDropped(1, timeout: false)
                return 0
            }
            let deadline = Clock.monotonicMillis() + Int64(config.blockTimeoutMs)
            blockedEmitters += 1
            while pending.count >= config.queueCapacity && !stopping {
                if !sync.wait(.room, untilMillis: deadline) { break }
            }
            blockedEmitters -= 1
            if stopping {
                sync.unlock()
                throw BitsecError(.closed, "audit: the runtime is closing")
            }
            if pending.count >= config.queueCapacity {
                dropsUnreported &+= 1
                sync.unlock()
                metrics.addDropped(1, timeout: true)
                throw BitsecError(.timeout, "audit: queue full for block_timeout_ms (\(config.blockTimeoutMs) ms); event dropped and counted")
            }
        }
        let seq = nextSeq
        nextSeq &+= 1
        pending.append(QueuedEvent(seq: seq, event: p))
        // Wake the writer for the first record after it went idle, for a durable wait, or
        // when a batch's worth is waiting; otherwise it wakes by itself after lingering.
        if writerWaiting && !waitDurable && (pending.count == 1 || pending.count == Self.wakeBatch) { sync.signal(.work) }
        if waitDurable {
            let deadline = Clock.monotonicMillis() + Int64(config.durableTimeoutMs)
            var yielded = false
            while durableSeq < seq && !stopped {
                if let f = fileFailure {
                    sync.unlock()
                    throw BitsecError(.io, "audit: record \(seq) queued but not durable: \(f)")
                }
                if !writerBusy && !paused && !stopping && writtenSeq < seq {
                    // Let emitters that were just woken queue their records first, so the
                    // fsync is shared by more of them.
                    if !yielded {
                        yielded = true
                        sync.unlock()
                        sched_yield()
                        sync.lock()
                        continue
                    }
                    writeBatchLocked(retry: false)
                    continue
                }
                if !sync.wait(.durable, untilMillis: deadline) { break }
            }
            if durableSeq < seq {
                sync.unlock()
                throw BitsecError(.timeout, "audit: record \(seq) queued but not confirmed durable within durable_timeout_ms (\(config.durableTimeoutMs) ms)")
            }
            if sharedHead != nil, let g = globalSeqLocked(seq) {
                sync.unlock()
                return g
            }
        }
        sync.unlock()
        return seq
    }

    /// Shared file: the chain sequence number of the record queued as `local`.
    private func globalSeqLocked(_ local: UInt64) -> UInt64? {
        for r in globalOffsets.reversed() where local >= r.first && local <= r.last { return r.global &+ (local &- r.first) }
        return nil
    }

    /// Returns once every record emitted before the call is durable (written and, with a
    /// file sink, fdatasync'ed), whatever the durability mode.
    public func flush() throws(BitsecError) {
        sync.lock()
        defer { sync.unlock() }
        if forkedUnshared { throw BitsecError(.unsupported, Self.forkedUnsharedMessage) }
        if started && !stopping { appendRejectSummaryLocked(now: Clock.monotonicMillis()) }
        let target = nextSeq &- 1
        guard durableSeq < target, started else { return }
        flushTarget = max(flushTarget, target)
        sync.signal(.work)
        let deadline = Clock.monotonicMillis() + Int64(config.durableTimeoutMs)
        while durableSeq < target && !stopped {
            if let f = fileFailure { throw BitsecError(.io, "audit flush: \(f)") }
            if !sync.wait(.durable, untilMillis: deadline) { break }
        }
        if durableSeq < target {
            throw BitsecError(.timeout, "audit flush: not durable within durable_timeout_ms (\(config.durableTimeoutMs) ms)")
        }
    }

    /// Flushes, stops the writer thread and closes the sinks. Later emits fail with `closed`.
    public func shutdown() {
        sync.lock()
        if stopping { sync.unlock(); return }
        let wasStarted = started
        if wasStarted {
            appendRejectSummaryLocked(now: Clock.monotonicMillis())
            appendInternalLocked("stopped", result: "success", details: [])
        }
        stopping = true
        paused = false
        sync.broadcast(.work)
        sync.broadcast(.room)
        sync.unlock()
        if wasStarted {
            pthread_join(thread, nil)
        } else {
            file?.close()
            for s in secondaries { s.close() }
        }
    }

    // MARK: - Test hooks

    /// Holds the writer before its next batch (tests: a full queue, exactly). Not in the ABI.
    public func pauseWriter() { sync.lock(); paused = true; sync.unlock() }
    public func resumeWriter() { sync.lock(); paused = false; sync.broadcast(.work); sync.unlock() }

    // MARK: - State

    public struct Stats: Sendable {
        public var queued: Int
        public var capacity: Int
        public var lastSeq: UInt64
        public var writtenSeq: UInt64
        public var durableSeq: UInt64
        public var fileFailure: String?
        public var metrics: AuditMetrics.Snapshot
    }

    public func stats() -> Stats {
        sync.lock()
        var s = (pending.count, nextSeq &- 1, writtenSeq, durableSeq, fileFailure)
        if sharedHead != nil { s.2 = writtenGlobal; s.3 = durableGlobal }
        sync.unlock()
        // A shared trail's last sequence number is the host's (any process's last record).
        if let sharedHead, let h = try? sharedHead.withLock({ (_) throws(BitsecError) in sharedHead.readHead() }) {
            s.1 = h.lastSeq
        }
        return Stats(queued: s.0, capacity: config.queueCapacity, lastSeq: s.1, writtenSeq: s.2, durableSeq: s.3,
                     fileFailure: s.4, metrics: metrics.snapshot())
    }

    public func statsJSON() -> JSONValue {
        let s = stats()
        func n(_ v: UInt64) -> JSONValue { .number(JSONNumber(int64: Int64(truncatingIfNeeded: v))) }
        var errs: [(key: String, value: JSONValue)] = []
        var lost: [(key: String, value: JSONValue)] = []
        for name in sinkNames {
            errs.append((name, n(s.metrics.sinkErrors[name] ?? 0)))
            lost.append((name, n(s.metrics.sinkLost[name] ?? 0)))
        }
        return .object(JSONObject([
            ("queued", n(UInt64(s.queued))), ("capacity", n(UInt64(s.capacity))),
            ("last_seq", n(s.lastSeq)), ("written_seq", n(s.writtenSeq)), ("durable_seq", n(s.durableSeq)),
            ("written", n(s.metrics.written)), ("dropped", n(s.metrics.dropped)), ("rejected", n(s.metrics.rejected)),
            ("fsyncs", n(s.metrics.fsyncs)),
            ("sink_errors", .object(JSONObject(errs))), ("sink_records_lost", .object(JSONObject(lost))),
            ("file_failure", s.fileFailure.map { .string($0) } ?? .null),
        ]))
    }

    /// Prometheus text exposition of the audit counters and queue gauges.
    public func metricsText() -> String {
        let s = stats()
        return metrics.text(sinks: sinkNames, gauges: [
            ("bitsec_audit_queue_depth", "Events waiting for this process's writer (per process).", Int64(s.queued)),
            ("bitsec_audit_queue_capacity", "Capacity of this process's audit queue (per process).", Int64(s.capacity)),
            ("bitsec_audit_last_sequence", sharedHead != nil ? "Sequence number of the last record of the shared trail (host-wide)." : "Sequence number of the last accepted record.", Int64(truncatingIfNeeded: s.lastSeq)),
            ("bitsec_audit_durable_sequence", sharedHead != nil ? "Highest sequence number of this process's records known durable (per process)." : "Highest sequence number known durable.", Int64(truncatingIfNeeded: s.durableSeq)),
            ("bitsec_audit_sink_failing", "1 while this process's file sink is failing (per process).", s.fileFailure == nil ? 0 : 1),
        ])
    }

    // MARK: - The writer thread

    /// Returns true after a second with nothing to do (the caller checks ownership and calls
    /// again), false once stopped.
    private func writerLoop() -> Bool {
        sync.lock()
        while true {
            while !stopping && (paused || writerBusy || (pending.isEmpty && !retryPending && flushTarget <= durableSeq && !batchSyncDue() && !rejectSummaryDue())) {
                writerWaiting = true
                if !paused, unsyncedSeen, config.durability == .batched {
                    sync.wait(.work, untilMillis: rejectsUnreported > 0 ? min(rejectWindowEnd, unsyncedSinceSeen + Int64(config.batchMaxMs))
                                                                     : unsyncedSinceSeen + Int64(config.batchMaxMs))
                } else if !paused, rejectsUnreported > 0 {
                    sync.wait(.work, untilMillis: rejectWindowEnd)
                } else if !sync.wait(.work, untilMillis: Clock.monotonicMillis() + 1000),
                          !stopping, !paused, !writerBusy, pending.isEmpty, !retryPending, flushTarget <= durableSeq, !unsyncedSeen {
                    writerWaiting = false
                    sync.unlock()
                    return true
                }
                writerWaiting = false
            }
            // Outside every_event mode nobody waits for this batch: linger a moment so a
            // stream of emits makes one batch (and one wake-up) instead of one each.
            if config.durability != .everyEvent && !stopping && !paused && flushTarget <= durableSeq && pending.count < Self.wakeBatch {
                let until = Clock.monotonicMillis() + Int64(min(config.batchMaxMs, Self.lingerMs))
                writerWaiting = true
                while !stopping && flushTarget <= durableSeq && pending.count < Self.wakeBatch {
                    if !sync.wait(.work, untilMillis: until) { break }
                }
                writerWaiting = false
            }
            while writerBusy { writerWaiting = true; sync.wait(.work); writerWaiting = false }
            if retryPending && pending.isEmpty && !stopping {
                // A leader left records unwritten after a file error: retry after a pause.
                sync.wait(.work, untilMillis: Clock.monotonicMillis() + 50)
                if writerBusy { continue }
            }
            writeBatchLocked(retry: true)
            if stopping && pending.isEmpty && dropsUnreported == 0 && !writerBusy {
                break
            }
        }
        sync.unlock()
        if let file {
            do { try file.sync(); metrics.addFsync() } catch { metrics.sinkError("file", lost: 0) }
            file.close()
        }
        for s in secondaries { s.close() }
        sync.lock()
        if file?.unsynced != true && syncFailure == nil { durableSeq = writtenSeq; durableGlobal = writtenGlobal }
        stopped = true
        sync.broadcast(.durable)
        sync.unlock()
        return false
    }

    /// What a writer does after a failed write to the file sink.
    private enum AfterFileFailure { case giveUp, keepForLater, retry }

    /// Counts a failed write of `pending` records to the file sink and publishes the failure
    /// (stats, waiters); then: give up (stopping, third failure: the records are counted
    /// lost), keep the records for a later batch (`retry` false), or retry after a pause
    /// that doubles up to 2 s.
    private func afterFileFailure(_ detail: String, failures: inout Int, backoffMs: inout UInt32, pending: Int,
                                  retry: Bool) -> AfterFileFailure {
        failures += 1
        fileFailureCount += 1
        metrics.sinkError("file", lost: 0)
        sync.lock()
        fileFailure = detail
        sync.broadcast(.durable)
        let giveUp = stopping && failures >= 3
        sync.unlock()
        if giveUp {
            metrics.sinkError("file", lost: pending)
            return .giveUp
        }
        guard retry else { return .keepForLater }
        usleep(backoffMs * 1000)
        backoffMs = min(backoffMs * 2, 2000)
        return .retry
    }

    /// Nobody but the writer thread references the service any more: close quietly (the
    /// thread is not joined by anyone; the service is released when it returns).
    private func abandonedByOwner() {
        sync.lock()
        stopping = true
        sync.unlock()
        file?.close()
        for s in secondaries { s.close() }
        pthread_detach(pthread_self())
    }

    /// Takes the whole queue and writes it (chain, sinks, sync per the mode). Called with the
    /// lock held by whoever holds the writer role: the writer thread, or in every_event mode
    /// an emitter waiting for its own record (leader-based group commit: no hand-off to
    /// another thread and back, and the others queue behind the leader's fsync). Returns with
    /// the lock held.
    private func writeBatchLocked(retry: Bool) {
        writerBusy = true
        if rejectSummaryDue() || (stopping && rejectsUnreported > 0) { appendRejectSummaryLocked(now: Clock.monotonicMillis()) }
        if dropsUnreported > 0 {
            appendInternalLocked("events_dropped", result: "failure",
                                 details: [("count", .number(JSONNumber(int64: Int64(truncatingIfNeeded: dropsUnreported)))),
                                           ("policy", .string(config.fullPolicy.rawValue))])
            dropsUnreported = 0
        }
        var batch = pending
        pending = spare
        pending.removeAll(keepingCapacity: true)
        if blockedEmitters > 0 { sync.broadcast(.room) }
        let forceSync = flushTarget > durableSeq || stopping
        sync.unlock()

        prepareSubmitted(&batch)

        let last = sharedHead != nil ? processShared(batch, retry: retry) : process(batch, retry: retry)
        let stillUnwritten = !unwritten.isEmpty || !unwrittenEvents.isEmpty
        let synced = syncIfDue(force: forceSync, wroteAny: !batch.isEmpty)
        batch.removeAll(keepingCapacity: true)

        sync.lock()
        spare = batch
        if let last { writtenSeq = max(writtenSeq, last) }
        if synced && !stillUnwritten && syncFailure == nil { durableSeq = writtenSeq; durableGlobal = writtenGlobal }
        unsyncedSeen = file?.unsynced == true
        unsyncedSinceSeen = firstUnsyncedAt
        retryPending = stillUnwritten
        writerBusy = false
        sync.broadcast(.durable)
        if writerWaiting { sync.signal(.work) }
    }

    private func batchSyncDue() -> Bool {
        guard config.durability == .batched, unsyncedSeen else { return false }
        return Clock.monotonicMillis() - unsyncedSinceSeen >= Int64(config.batchMaxMs)
    }

    /// Chains and writes a batch; returns the last sequence written. A failed file write
    /// keeps the chained records (`unwritten`) to be written first next time, so nothing is
    /// lost or reordered; the writer thread retries with backoff (`retry`), a leading
    /// emitter does not (it reports the failure to its caller instead of hanging).
    private func process(_ batch: [QueuedEvent], retry: Bool) -> UInt64? {
        var out = unwritten
        unwritten = []
        out.reserveCapacity(out.count + batch.count)
        for q in batch {
            do {
                let (line, hash) = try AuditRecord.make(seq: q.seq, instance: instance, body: q.event.body, prev: lastHash, hasher: hasher)
                lastHash = hash
                out.append(OutRecord(seq: q.seq, line: line, key: q.event.key))
            } catch {
                metrics.sinkError("chain", lost: 1)
            }
        }
        guard !out.isEmpty else { return nil }
        if let file {
            var backoffMs: UInt32 = 50
            var failures = 0
            while true {
                do {
                    try file.write(out.map { ($0.seq, $0.line) })
                    break
                } catch {
                    switch afterFileFailure(error.detail, failures: &failures, backoffMs: &backoffMs, pending: out.count, retry: retry) {
                    case .giveUp: return nil
                    case .keepForLater: unwritten = out; return nil
                    case .retry: continue
                    }
                }
            }
            if fileFailureCount > 0 {
                sync.lock()
                fileFailure = syncFailure
                appendInternalLocked("sink_recovered", result: "success",
                                     details: [("sink", .string("file")), ("errors", .number(JSONNumber(int64: Int64(fileFailureCount)))),
                                               ("records_lost", .number(JSONNumber(int64: 0)))])
                sync.unlock()
                fileFailureCount = 0
            }
            if unsyncedEvents == 0 { firstUnsyncedAt = Clock.monotonicMillis() }
            unsyncedEvents += out.count
        }
        deliverToSecondaries(out)
        metrics.count(out.map(\.key))
        return out.last?.seq
    }

    /// With the shared lock held: the head to append after. The file is repaired first: a
    /// tail past the committed length (a writer died mid-batch, unacknowledged) is cut; a
    /// head that does not describe the file (first use, a dead writer's half-updated head,
    /// another boot, a file moved away) is rebuilt from the file's last record.
    private func adoptHeadLocked(_ sharedHead: SharedAuditHead, _ file: FileSink) throws(BitsecError) -> SharedAuditHead.Head {
        if let h = sharedHead.readHead(), let cut = try file.adopt(h) {
            tornCut += cut
            return h
        }
        try file.reopenPath()
        let r = try file.recover(hasher: hasher)
        tornCut += r.truncatedBytes
        let h = file.head(lastSeq: r.lastSeq, lastHash: r.lastHash)
        sharedHead.writeHead(h)
        return h
    }

    /// A batch for a shared file: under the shared lock, adopt the head, chain the records
    /// after it (so their sequence numbers continue the host's one chain), write them, move
    /// the head and count them in the host-wide metrics. When a write fails part-way, the
    /// head moves past the records that reached a file and the others are kept to be
    /// chained again at the next attempt (the head may move meanwhile): each record is
    /// written once. Syncing happens after the lock is released (`syncIfDue`), so other
    /// processes write meanwhile. Returns the last local sequence number written.
    private func processShared(_ batch: [QueuedEvent], retry: Bool) -> UInt64? {
        guard let file, let sharedHead else { return nil }
        var events = unwrittenEvents
        unwrittenEvents = []
        events.append(contentsOf: batch)
        var backoffMs: UInt32 = 50
        var failures = 0
        var lastLocal: UInt64? = nil
        while !events.isEmpty {
            var recs: [OutRecord] = []
            var written = 0
            var failure: BitsecError? = nil
            do {
                try sharedHead.withLock { (_) throws(BitsecError) in
                    let h = try adoptHeadLocked(sharedHead, file)
                    var prev = h.lastHash
                    var seq = h.lastSeq
                    var hashes: [[UInt8]] = []
                    recs.reserveCapacity(events.count)
                    hashes.reserveCapacity(events.count)
                    for q in events {
                        seq &+= 1
                        let (line, hash) = try AuditRecord.make(seq: seq, instance: instance, body: q.event.body, prev: prev, hasher: hasher)
                        prev = hash
                        hashes.append(hash)
                        recs.append(OutRecord(seq: seq, line: line, key: q.event.key))
                    }
                    (written, failure) = file.writeShared(recs)
                    if written > 0 {
                        sharedHead.writeHead(file.head(lastSeq: recs[written - 1].seq, lastHash: hashes[written - 1]))
                        sharedHead.countLocked(AuditMetrics.runs(recs[..<written].map(\.key)), written: UInt64(written))
                    }
                }
            } catch {
                failure = error
            }
            if written > 0 {
                let done = Array(recs[..<written])
                sync.lock()
                globalOffsets.append((events[0].seq, events[written - 1].seq, done[0].seq))
                if globalOffsets.count > 4096 { globalOffsets.removeFirst(globalOffsets.count - 2048) }
                writtenGlobal = done[written - 1].seq
                sync.unlock()
                lastLocal = events[written - 1].seq
                events.removeFirst(written)
                if unsyncedEvents == 0 { firstUnsyncedAt = Clock.monotonicMillis() }
                unsyncedEvents += written
                deliverToSecondaries(done)
            }
            guard let failure else { break }
            switch afterFileFailure(failure.detail, failures: &failures, backoffMs: &backoffMs, pending: events.count, retry: retry) {
            case .giveUp: return lastLocal
            case .keepForLater: unwrittenEvents = events; return lastLocal
            case .retry: continue
            }
        }
        sync.lock()
        if fileFailureCount > 0 {
            fileFailure = syncFailure
            appendInternalLocked("sink_recovered", result: "success",
                                 details: [("sink", .string("file")), ("errors", .number(JSONNumber(int64: Int64(fileFailureCount)))),
                                           ("records_lost", .number(JSONNumber(int64: 0)))])
            fileFailureCount = 0
        }
        if tornCut > 0 {
            // Another process died while writing: its unacknowledged partial batch was cut.
            appendInternalLocked("torn_tail_truncated", result: "success",
                                 details: [("bytes", .number(JSONNumber(int64: tornCut)))])
            tornCut = 0
        }
        sync.unlock()
        return lastLocal
    }

    private func deliverToSecondaries(_ out: [OutRecord]) {
        for s in secondaries {
            let (lost, err) = s.deliver(out[...])
            if err != nil {
                metrics.sinkError(s.name, lost: lost)
                var t = sinkTrouble[s.name] ?? (0, 0)
                t.errors += 1
                t.lost += lost
                sinkTrouble[s.name] = t
            } else if let t = sinkTrouble[s.name] {
                sinkTrouble[s.name] = nil
                sync.lock()
                appendInternalLocked("sink_recovered", result: "success",
                                     details: [("sink", .string(s.name)), ("errors", .number(JSONNumber(int64: Int64(t.errors)))),
                                               ("records_lost", .number(JSONNumber(int64: Int64(t.lost))))])
                sync.unlock()
            }
        }
    }

    /// Syncs the file per the durability mode; true when everything written is durable.
    private func syncIfDue(force: Bool, wroteAny: Bool) -> Bool {
        guard let file else { return true }
        guard file.unsynced else { return true }
        let due: Bool
        switch config.durability {
        case .everyEvent: due = true
        case .batched: due = unsyncedEvents >= config.batchMaxEvents || Clock.monotonicMillis() - firstUnsyncedAt >= Int64(config.batchMaxMs)
        case .none: due = false
        }
        guard due || force else { return false }
        do {
            try file.sync()
            metrics.addFsync()
            unsyncedEvents = 0
            return true
        } catch {
            metrics.sinkError("file", lost: 0)
            sync.lock()
            if syncFailure == nil {
                syncFailure = error.detail + " (records written since the last good sync cannot be promised durable: reopen the runtime)"
            }
            fileFailure = syncFailure
            sync.broadcast(.durable)
            sync.unlock()
            return false
        }
    }
}

/// fork(): the child has none of the parent's threads. With a shared file sink the child's
/// runtime keeps working: it forgets the parent's queue (the parent writes those records),
/// its writer thread and its waiters, and starts its own writer at its first record, which
/// appends to the same chain under the shared lock. Without one, every audit call of the
/// child fails with `BITSEC_E_UNSUPPORTED` naming the remedy: the parent owns the file.
extension AuditService: ForkAware {
    func prepareFork() {
        sync.lock()
        metrics.lock.lock()
    }

    func afterForkInParent() {
        metrics.lock.unlock()
        sync.unlock()
    }

    func afterForkInChild() {
        metrics.lock.unlock()
        sync.reinitConditions()
        forkedFrom = getppid()
        started = false
        thread = pthread_t()
        writerBusy = false
        writerWaiting = false
        blockedEmitters = 0
        paused = false
        pending.removeAll()
        spare = []
        flushTarget = 0
        dropsUnreported = 0
        rejectsUnreported = 0
        rejectWindowEnd = 0
        writtenSeq = nextSeq &- 1
        durableSeq = writtenSeq
        retryPending = false
        unsyncedSeen = false
        fileFailure = syncFailure
        unwritten = []
        unwrittenEvents = []
        unsyncedEvents = 0
        tornCut = 0
        globalOffsets = []
        writtenGlobal = 0
        durableGlobal = 0
        if file != nil && sharedHead == nil { forkedUnshared = true }
        sync.unlock()
    }
}
