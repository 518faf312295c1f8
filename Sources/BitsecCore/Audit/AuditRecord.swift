/// The bytes of one record, as written to every sink (one JSON line):
///
/// `{"seq":N,"id":"…","time":"…","type":…,…,"details":{…},"prev":"<64 hex>","hash":"<64 hex>"}\n`
///
/// The canonical bytes the chain covers are the line without its `,"hash":"…"` member, i.e.
/// everything up to `prev`'s value followed by `}`. `hash` is always the last member and has a
/// fixed length, so a verifier recovers the canonical bytes exactly, without re-serialising.
public enum AuditRecord {
    /// `,"hash":"` + 64 hex + `"}`
    static let hashSuffixCount = 9 + 64 + 2
    /// The longest record the writer can produce, and so the most a reader parses per line:
    /// `details` serialized is at most `max_event_bytes` (at most `maxEventBytesLimit`), but
    /// the text members beside it (`reason`, `user_agent`, `resource` up to 1,024 bytes
    /// each; `actor`, `tenant`, `session_id`, `resource_id` up to 256; `action`,
    /// `data_classification` up to 64) are bounded as received, and a control character or
    /// DEL in them is written as six bytes (`\u007f`): up to about 25 KiB more, plus the
    /// record's own members and `truncated`. 64 KiB covers that with room to spare, so a
    /// record the writer accepted is never reported as edited for its length.
    static let maxRecordBytes = AuditConfig.maxEventBytesLimit + (64 << 10)
    static let hashMarker: [UInt8] = Array(",\"hash\":\"".utf8)

    /// A record's id: a UUID (version 8, RFC 9562) made of the writer instance's 8 random
    /// bytes and the sequence number, so it is unique across processes and restarts
    /// without a random draw per event.
    static func appendID(instance: [UInt8], seq: UInt64, to out: inout [UInt8]) {
        var b = [UInt8](repeating: 0, count: 16)
        for k in 0..<8 { b[k] = k < instance.count ? instance[k] : 0 }
        for k in 0..<8 { b[8 + k] = UInt8(truncatingIfNeeded: seq >> (56 - 8 * UInt64(k))) }
        b[6] = (b[6] & 0x0F) | 0x80
        // The variant bits would overwrite the sequence's top bits; keep them in byte 7 instead.
        let top = b[8] & 0xC0
        b[8] = (b[8] & 0x3F) | 0x80
        b[7] = (b[7] & 0x3F) | top
        for (k, x) in b.enumerated() {
            if k == 4 || k == 6 || k == 8 || k == 10 { out.append(0x2D) }
            out.append(HexCodec.digits[Int(x >> 4)]); out.append(HexCodec.digits[Int(x & 0xF)])
        }
    }

    /// Builds the line for (seq, body) chained after `prev`; returns it with its hash.
    static func make(seq: UInt64, instance: [UInt8], body: [UInt8], prev: [UInt8], hasher: ChainHasher) throws(BitsecError) -> (line: [UInt8], hash: [UInt8]) {
        var r: [UInt8] = []
        r.reserveCapacity(body.count + 256)
        r.append(contentsOf: "{\"seq\":".utf8)
        HexCodec.appendDecimal(seq, to: &r)
        r.append(contentsOf: ",\"id\":\"".utf8)
        appendID(instance: instance, seq: seq, to: &r)
        r.append(contentsOf: "\",".utf8)
        r.append(contentsOf: body)
        r.append(contentsOf: ",\"prev\":\"".utf8)
        HexCodec.append(prev, to: &r)
        r.append(contentsOf: "\"}".utf8)
        let hash = try hasher.chain(prev: prev, canonical: r)
        r.removeLast()
        r.append(contentsOf: hashMarker)
        HexCodec.append(hash, to: &r)
        r.append(contentsOf: "\"}\n".utf8)
        return (r, hash)
    }

    /// A line taken apart for verification.
    struct Parsed {
        var seq: UInt64
        var prev: [UInt8]
        var hash: [UInt8]
        var canonical: [UInt8]
        /// bitsec's own gap reports: the `count` of an `audit`/`event_rejected` or
        /// `audit`/`events_dropped` record (0 for every other record).
        var rejected: UInt64 = 0
        var dropped: UInt64 = 0
    }

    /// Parses one line (without its newline). Nil with a reason when it is not a record.
    static func parse(_ line: ArraySlice<UInt8>) -> (Parsed?, String) {
        let n = line.count
        guard n > hashSuffixCount + 2 else { return (nil, "not a bitsec record (too short)") }
        let s = line.startIndex
        let markerAt = s + n - hashSuffixCount
        guard line[markerAt..<(markerAt + hashMarker.count)].elementsEqual(hashMarker),
              line[s + n - 2] == 0x22, line[s + n - 1] == 0x7D,
              let hash = HexCodec.decode(line[(markerAt + hashMarker.count)..<(s + n - 2)], count: 32)
        else { return (nil, "not a bitsec record (no hash member at the end)") }
        var canonical = Array(line[s..<markerAt])
        canonical.append(0x7D)
        let doc: JSONValue
        do {
            doc = try JSONReader.parse(canonical, options: .init(maxBytes: maxRecordBytes,
                                                                 maxDepth: AuditConfig.maxDepthLimit + 2))
        } catch {
            return (nil, "not valid JSON (\(error.detail))")
        }
        guard case .object(let o) = doc, let first = o.members.first, first.key == "seq",
              let seq = first.value.int64Value, seq > 0,
              let last = o.members.last, last.key == "prev", let prevText = last.value.stringValue,
              let prev = HexCodec.decode(Array(prevText.utf8), count: 32)
        else { return (nil, "not a bitsec record (seq or prev missing)") }
        var p = Parsed(seq: UInt64(seq), prev: prev, hash: hash, canonical: canonical)
        if o["type"]?.stringValue == AuditSchema.internalType, let sub = o["subtype"]?.stringValue,
           let count = o["details"]?["count"]?.int64Value, count > 0 {
            if sub == "event_rejected" { p.rejected = UInt64(count) }
            if sub == "events_dropped" { p.dropped = UInt64(count) }
        }
        return (p, "")
    }
}
