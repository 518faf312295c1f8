/// Counters of the audit trail, rendered in the Prometheus text exposition format (0.0.4).
///
/// Event counters are one family per event type, named `<type>_events_total` with labels
/// `event_subtype` and `result` (plus `sensitive_data_accessed` for `data_access`), so
/// ADR-007's alert expressions select them as written:
/// `authentication_events_total{event_subtype="failed_login"}`,
/// `authorization_events_total{result="denied"}`,
/// `data_access_events_total{sensitive_data_accessed="true"}`.
/// Events are counted when the writer has recorded them (accepted into the trail).
/// Distinct label sets are capped (`maxSeries`); beyond it, subtypes are counted as `_other`.
public final class AuditMetrics: @unchecked Sendable {
    public static let maxSeries = 2048
    let lock = ConditionLock()
    private var events: [MetricKey: UInt64] = [:]
    private var order: [MetricKey] = []
    private var dropped: UInt64 = 0
    private var droppedTimeout: UInt64 = 0
    private var rejected: UInt64 = 0
    private var sinkErrors: [String: UInt64] = [:]
    private var sinkLost: [String: UInt64] = [:]
    private var written: UInt64 = 0
    private var fsyncs: UInt64 = 0
    /// With a shared file sink the counters live in its sidecar, host-wide: every process
    /// sharing the trail reports the same values.
    let shared: SharedAuditHead?

    init(shared: SharedAuditHead? = nil) { self.shared = shared }

    /// Runs of equal keys (a burst of the same event) are counted with one lookup.
    static func runs(_ keys: [MetricKey]) -> [(MetricKey, UInt64)] {
        var runs: [(MetricKey, UInt64)] = []
        for k in keys {
            if let last = runs.last, last.0 == k { runs[runs.count - 1].1 &+= 1 } else { runs.append((k, 1)) }
        }
        return runs
    }

    /// Counts written records (in-process counters only; a shared trail's writer counts its
    /// batch in the sidecar while it holds the lock).
    func count(_ keys: [MetricKey]) {
        guard shared == nil else { return }
        let runs = Self.runs(keys)
        lock.withLock {
            written &+= UInt64(keys.count)
            for (key, n) in runs {
                var k = key
                if events[k] == nil && events.count >= Self.maxSeries {
                    k.subtype = "_other"
                }
                if let v = events[k] { events[k] = v &+ n } else { events[k] = n; order.append(k) }
            }
        }
    }

    func addDropped(_ n: UInt64, timeout: Bool) {
        if let shared { shared.add(.dropped, n, also: timeout ? .droppedTimeout : nil); return }
        lock.withLock { dropped &+= n; if timeout { droppedTimeout &+= n } }
    }
    func addRejected() {
        if let shared { shared.add(.rejected, 1); return }
        lock.withLock { rejected &+= 1 }
    }
    func addFsync() {
        if let shared { shared.add(.fsyncs, 1); return }
        lock.withLock { fsyncs &+= 1 }
    }
    func sinkError(_ sink: String, lost: Int) {
        if let shared { shared.sinkError(sink, lost: lost); return }
        lock.withLock {
            sinkErrors[sink, default: 0] &+= 1
            sinkLost[sink, default: 0] &+= UInt64(lost)
        }
    }

    public struct Snapshot: Sendable {
        public var dropped: UInt64
        public var rejected: UInt64
        public var written: UInt64
        public var fsyncs: UInt64
        public var sinkErrors: [String: UInt64]
        public var sinkLost: [String: UInt64]
        public var events: [(MetricKey, UInt64)]
    }

    public func snapshot() -> Snapshot {
        if let shared { return shared.snapshot() }
        return lock.withLock {
            Snapshot(dropped: dropped, rejected: rejected, written: written, fsyncs: fsyncs,
                     sinkErrors: sinkErrors, sinkLost: sinkLost, events: order.map { ($0, events[$0] ?? 0) })
        }
    }

    static func escape(_ s: String) -> String {
        var o = ""
        for c in s.unicodeScalars {
            switch c {
            case "\\": o += "\\\\"
            case "\"": o += "\\\""
            case "\n": o += "\\n"
            default: o.unicodeScalars.append(c)
            }
        }
        return o
    }

    /// The exposition text; `gauges` are appended as given (name, help, value).
    public func text(sinks: [String], gauges: [(String, String, Int64)]) -> String {
        let s = snapshot()
        var out = ""
        var byType: [String: [(MetricKey, UInt64)]] = [:]
        var typeOrder: [String] = []
        for (k, v) in s.events {
            if byType[k.type] == nil { typeOrder.append(k.type) }
            byType[k.type, default: []].append((k, v))
        }
        for t in typeOrder.sorted() {
            let name = "\(t)_events_total"
            out += "# HELP \(name) Audit events of type \(t) recorded by bitsec.\n# TYPE \(name) counter\n"
            for (k, v) in byType[t] ?? [] {
                out += "\(name){event_subtype=\"\(Self.escape(k.subtype))\",result=\"\(Self.escape(k.result))\""
                if let sens = k.sensitive { out += ",sensitive_data_accessed=\"\(sens)\"" }
                out += "} \(v)\n"
            }
        }
        func counter(_ name: String, _ help: String, _ v: UInt64) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) counter\n\(name) \(v)\n"
        }
        counter("bitsec_audit_records_written_total", "Records written to the audit trail.", s.written)
        counter("bitsec_audit_events_dropped_total", "Events dropped because the queue was full.", s.dropped)
        counter("bitsec_audit_events_rejected_total", "Events refused by validation.", s.rejected)
        counter("bitsec_audit_fsyncs_total", "fdatasync calls of the file sink.", s.fsyncs)
        out += "# HELP bitsec_audit_sink_errors_total Failed deliveries per sink.\n# TYPE bitsec_audit_sink_errors_total counter\n"
        for n in sinks { out += "bitsec_audit_sink_errors_total{sink=\"\(n)\"} \(s.sinkErrors[n] ?? 0)\n" }
        out += "# HELP bitsec_audit_sink_records_lost_total Records a secondary sink could not receive.\n# TYPE bitsec_audit_sink_records_lost_total counter\n"
        for n in sinks { out += "bitsec_audit_sink_records_lost_total{sink=\"\(n)\"} \(s.sinkLost[n] ?? 0)\n" }
        for (name, help, v) in gauges {
            out += "# HELP \(name) \(help)\n# TYPE \(name) gauge\n\(name) \(v)\n"
        }
        return out
    }
}
