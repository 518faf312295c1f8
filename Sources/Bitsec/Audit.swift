// The audit capability: bitsec_audit_emit and its companions, bitsec_metrics_text.
internal import BitsecCore
internal import Glibc

/// Emits a security event into the runtime's audit trail (docs/audit.md has the schema).
///
/// The event is validated (JSON object, nesting at most the section's max_depth, a known
/// type, known members only), stamped with time (RFC 3339 UTC, microseconds), id and
/// sequence number, and queued; the writer thread chains it (SHA-256 or HMAC-SHA-256) and
/// writes it to the sinks. The call never waits for disk or network, except in the
/// every_event durability mode, where it returns once the record is durable (concurrent
/// emitters share one fdatasync).
///
/// Size never silences an event: a text member longer than its limit is cut by bytes at a
/// UTF-8 character boundary, details larger than max_event_bytes are cut down, and the
/// record lists what was cut in its "truncated" member; the call returns BITSEC_OK.
/// An event that is refused (the error codes below) leaves an audit/event_rejected record
/// in the chain instead (reason, status, source, request id; never the refused content),
/// coalesced per rejected_interval_ms.
///
/// rt: the runtime (its configuration must have an audit section).
/// event, event_len: the event, UTF-8 JSON, not necessarily NUL-terminated; caller-owned,
/// only read during the call. At most BITSEC_AUDIT_MAX_EVENT_BYTES.
/// out_seq: optional; receives the record's sequence number, or 0 when the queue was full
/// and the drop policy dropped the event (counted in bitsec_audit_events_dropped_total and
/// reported by an audit/events_dropped record), or when the event was refused. With a
/// shared file sink (several processes on one chain) outside every_event mode the record's
/// number is not known yet: out_seq receives the event's local number in this runtime
/// (1, 2, 3, ... in queue order).
/// Returns BITSEC_OK (also when cut down, and when dropped under the drop policy);
/// BITSEC_E_INVALID_ARGUMENT (not an object, unknown type or member, bad value: the detail
/// says which; also rt or event NULL); BITSEC_E_MALFORMED (invalid JSON or UTF-8, nesting
/// deeper than max_depth); BITSEC_E_TOO_LARGE (more than BITSEC_AUDIT_MAX_EVENT_BYTES);
/// BITSEC_E_TIMEOUT (block policy: the queue stayed full for block_timeout_ms and the event
/// was dropped; every_event: queued but not confirmed durable within durable_timeout_ms);
/// BITSEC_E_IO (every_event: queued but the file sink is failing); BITSEC_E_UNSUPPORTED (in
/// a child after fork() when the runtime's file sink is not shared: the parent owns the file;
/// the detail names the remedy); BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread; events from one thread keep their order. Safe
/// across fork() (docs/audit.md: the child gets its own writer thread).
/// Since: 0.1.0
@c(bitsec_audit_emit)
public func bitsec_audit_emit(_ rt: OpaquePointer?, _ event: UnsafePointer<CChar>?, _ event_len: UInt, _ out_seq: UnsafeMutablePointer<UInt64>?) -> Int32 {
    out_seq?.pointee = 0
    return withRuntime(rt, timed: .auditEmit) { (r) throws(BitsecError) in
        let audit = try r.require(r.audit)
        if event != nil, event_len > UInt(AuditConfig.maxEventBytesLimit) {
            throw audit.rejected(.tooLarge("event of \(event_len) bytes exceeds \(AuditConfig.maxEventBytesLimit) bytes"), nil)
        }
        let n = try sizeArg(event_len, "event_len", max: AuditConfig.maxEventBytesLimit)
        let bytes = try bytesArg(UnsafeRawPointer(event), n, "event", max: AuditConfig.maxEventBytesLimit)
        store(out_seq, try audit.emit(bytes))
    }
}

/// Hands a batch of events to the audit trail in one call: each is validated, stamped and
/// recorded as bitsec_audit_emit would record it, but by the writer thread, outside the
/// queue's lock and off the caller's thread. For a caller with many events at once: a
/// server hands over the request records of one event-loop turn (bitsec's FastAPI guard
/// does). The call never waits (for room, disk or network), so it is refused where an emit
/// may wait: under the block policy and in every_event mode.
///
/// Each event gets its sequence number in the call, in the order given; bitsec_audit_flush
/// returns once they are durable. An event the writer refuses (as bitsec_audit_emit would
/// refuse it) leaves an audit/event_rejected record at its sequence number instead (reason,
/// status, source "bitsec_audit_submit", request id; never the refused content): the caller
/// learns of it from bitsec_audit_stats ("rejected") and the trail, not from the return
/// value. Events the queue has no room for are dropped as the drop policy drops an emit
/// (counted in bitsec_audit_events_dropped_total, reported by an audit/events_dropped
/// record) and not counted in out_accepted.
///
/// rt: the runtime (its configuration must have an audit section).
/// events, events_len: the events' UTF-8 JSON texts back to back, no separators; caller-owned,
/// only read during the call (the texts are copied; one longer than the section's
/// max_event_bytes is validated in the call, on the caller's thread, so that what waits for
/// the writer stays as small as an emit's record). At most BITSEC_MAX_ARGUMENT_BYTES
/// (16 MiB) in all: split a larger batch.
/// lengths, count: each event's length in bytes, in order; they add up to events_len.
/// count at most BITSEC_AUDIT_SUBMIT_MAX_EVENTS; 0 submits nothing. An event longer than
/// BITSEC_AUDIT_MAX_EVENT_BYTES is refused as the writer refuses any other (its
/// event_rejected record says BITSEC_E_TOO_LARGE).
/// out_accepted: optional; receives how many events were queued.
/// Returns BITSEC_OK (also when some were dropped for room); BITSEC_E_INVALID_ARGUMENT (rt
/// NULL, events NULL with events_len > 0, lengths NULL with count > 0, lengths that do not
/// add up to events_len, count over the limit); BITSEC_E_TOO_LARGE (events_len over
/// BITSEC_MAX_ARGUMENT_BYTES); BITSEC_E_UNSUPPORTED (the
/// block policy or every_event durability; in a child after fork() when the file sink is not
/// shared); BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED. Nothing is queued on an error.
/// Thread safety: safe from any thread; the events of one call are consecutive in the
/// chain, and calls from one thread keep their order (also among bitsec_audit_emit calls).
/// Since: 0.3.0
@c(bitsec_audit_submit)
public func bitsec_audit_submit(_ rt: OpaquePointer?, _ events: UnsafePointer<CChar>?, _ events_len: UInt,
                                _ lengths: UnsafePointer<UInt>?, _ count: UInt, _ out_accepted: UnsafeMutablePointer<UInt>?) -> Int32 {
    out_accepted?.pointee = 0
    return withRuntime(rt) { (r) throws(BitsecError) in
        let audit = try r.require(r.audit)
        let bytes = try bytesArg(UnsafeRawPointer(events), events_len, "events", lengthName: "events_len")
        guard count <= UInt(AuditService.submitMaxEvents) else {
            throw .invalid("count: \(count) events exceeds the limit of \(AuditService.submitMaxEvents)")
        }
        guard count == 0 || lengths != nil else { throw .invalid("lengths is NULL") }
        let lens = UnsafeBufferPointer(start: count == 0 ? nil : lengths, count: Int(count))
        store(out_accepted, UInt(try audit.submit(bytes, lengths: lens)))
    }
}

/// Waits until every event emitted before the call is durable: written to every sink and,
/// with a file sink, fdatasync'ed, whatever the durability mode.
///
/// rt: the runtime.
/// Returns BITSEC_OK; BITSEC_E_IO (the file sink is failing; records stay queued and are
/// retried); BITSEC_E_TIMEOUT (not durable within durable_timeout_ms);
/// BITSEC_E_UNSUPPORTED (in a child after fork() when the file sink is not shared);
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED; BITSEC_E_INVALID_ARGUMENT.
/// Thread safety: safe from any thread. bitsec_runtime_close flushes too.
/// Since: 0.1.0
@c(bitsec_audit_flush)
public func bitsec_audit_flush(_ rt: OpaquePointer?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        try r.require(r.audit).flush()
    }
}

/// The audit trail's state as JSON: queued, capacity, last_seq, written_seq, durable_seq,
/// written, dropped, rejected, fsyncs, sink_errors and sink_records_lost per sink,
/// file_failure (the current file sink error, or null). With a shared file sink the
/// counters and last_seq are the host's (every process on the chain), written_seq and
/// durable_seq this process's last record written and known durable.
///
/// rt: the runtime.
/// out_buf, out_cap: caller-owned buffer. out_len: receives the JSON's length (excluding the
/// NUL written after it when there is room), also when the buffer is too small.
/// Returns BITSEC_OK; BITSEC_E_BUFFER_TOO_SMALL (*out_len holds the size needed);
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED; BITSEC_E_INVALID_ARGUMENT.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_audit_stats)
public func bitsec_audit_stats(_ rt: OpaquePointer?, _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        try writeOutput(r.require(r.audit).statsJSON().serialized, out_buf, out_cap, out_len)
    }
}

/// The runtime's metrics in the Prometheus text exposition format (version 0.0.4): audit
/// event counters named <type>_events_total{event_subtype,result[,sensitive_data_accessed]}
/// (so ADR-007's alert rules select them), drops, rejections, sink errors, queue gauges
/// (when the runtime has an audit section); then, for each bounded in-process table of the
/// configured capabilities, bitsec_table_entries, bitsec_table_capacity,
/// bitsec_table_evictions_total and bitsec_table_full_refusals_total with a table label;
/// then, unless the configuration's metrics.histograms is off, the latency histograms of this
/// process (labels operation and pid): bitsec_operation_duration_seconds for the timed calls
/// of the configured sections and bitsec_redis_roundtrip_seconds with a redis section.
/// last, always, bitsec_abi_calls_total{pid}: the calls through the C ABI on this runtime in this
/// process (every function taking the runtime handle counts one, this one included).
///
/// rt: the runtime.
/// out_buf, out_cap: caller-owned buffer. out_len: receives the text's length (excluding the
/// NUL written after it when there is room), also when the buffer is too small.
/// Returns BITSEC_OK; BITSEC_E_BUFFER_TOO_SMALL (*out_len holds the size needed);
/// BITSEC_E_CLOSED; BITSEC_E_INVALID_ARGUMENT.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_metrics_text)
public func bitsec_metrics_text(_ rt: OpaquePointer?, _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        try writeOutput(Array(r.metricsText().utf8), out_buf, out_cap, out_len)
    }
}

/// Verifies audit files: each record's hash, each link to the record before, and that
/// sequence numbers follow without gap, duplicate or inversion across the files (rotated
/// files and the current one, in any order). Needs no runtime.
///
/// paths, paths_len: a JSON array of file paths (UTF-8), at most 4096 entries; caller-owned.
/// key, key_len: the trail's hmac_key when it is keyed (NULL/0 for a SHA-256 chain);
/// caller-owned, only read during the call.
/// out_buf, out_cap, out_len: receive the report, JSON: intact (bool), records, files (in
/// chain order), first_seq, last_seq, last_hash, chain, torn_tail (null or {file, bytes}: an
/// unterminated last line left by a crash), problem (null or {kind: edited | deleted |
/// inserted | reordered, file, line, seq, detail}), the first problem found.
/// Returns BITSEC_OK whether or not the chain is intact (read intact); BITSEC_E_IO (a file
/// cannot be read); BITSEC_E_MALFORMED (paths is not a JSON array of strings);
/// BITSEC_E_BUFFER_TOO_SMALL (*out_len holds the size needed); BITSEC_E_INVALID_ARGUMENT;
/// BITSEC_E_TOO_LARGE.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_audit_verify)
public func bitsec_audit_verify(_ paths: UnsafePointer<CChar>?, _ paths_len: UInt, _ key: UnsafePointer<UInt8>?, _ key_len: UInt,
                                _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    abiCall { () throws(BitsecError) in
        let n = try sizeArg(paths_len, "paths_len", max: 1 << 20)
        let raw = try bytesArg(UnsafeRawPointer(paths), n, "paths", max: 1 << 20)
        let kn = try sizeArg(key_len, "key_len", max: Limits.maxSecretBytes)
        let kraw = try bytesArg(UnsafeRawPointer(key), kn, "key", max: Limits.maxSecretBytes)
        let list = try AuditVerifier.pathList(raw)
        let secret: SecretBytes? = kn > 0 ? SecretBytes(kraw.bindMemory(to: UInt8.self)) : nil
        let report = try AuditVerifier.verify(paths: list, key: secret)
        try writeOutput(report.json.serialized, out_buf, out_cap, out_len)
    }
}
