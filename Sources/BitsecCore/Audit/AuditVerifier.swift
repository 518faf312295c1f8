/// Verifies audit files: every record's hash (`H(prev || canonical)`), every link (`prev` is
/// the hash of the record before), and that sequence numbers follow without gap, duplicate
/// or inversion, across files (rotated files and the current one, given in any order: they
/// are put in chain order by their first sequence number).
///
/// It reports the first problem as one of:
/// - `edited`: a record's bytes no longer match its hash (or it is not a record at all), or a
///   record was rewritten with a recomputed hash so its successor no longer links to it;
/// - `deleted`: records are missing (a sequence gap) before a line;
/// - `inserted`: a line that does not belong (a copy of another record, or a foreign line
///   whose successor links to the record before it);
/// - `reordered`: a record appears before one with a smaller sequence number.
/// An unterminated last line of the newest file is reported as a torn tail (a crash while
/// writing a record nobody was told was durable), not as tampering.
///
/// Limits (docs/audit.md): without `hmac_key`, anyone who can write the file can rebuild a
/// consistent chain; deleting the newest records, or the oldest rotated files, is only
/// visible against an external copy (syslog, Redis stream) or the `started`/`stopped`
/// records and the last sequence exported in metrics.
public enum AuditVerifier {
    public struct Problem: Sendable {
        public var kind: String
        public var file: String
        public var line: Int
        public var seq: UInt64?
        public var detail: String
    }

    public struct Report: Sendable {
        public var intact: Bool { problem == nil }
        public var records = 0
        public var files: [String] = []
        public var firstSeq: UInt64 = 0
        public var lastSeq: UInt64 = 0
        public var lastHash: [UInt8] = ChainHasher.genesis
        public var keyed = false
        public var tornTail: (file: String, bytes: Int)? = nil
        /// Events refused by validation / dropped on a full queue, as the trail's own
        /// `event_rejected` / `events_dropped` records report them (sums of their counts).
        public var eventsRejected: UInt64 = 0
        public var eventsDropped: UInt64 = 0
        public var problem: Problem? = nil

        public var json: JSONValue {
            func n(_ v: Int) -> JSONValue { .number(JSONNumber(int64: Int64(v))) }
            func u(_ v: UInt64) -> JSONValue { .number(JSONNumber(int64: Int64(truncatingIfNeeded: v))) }
            var m: [(key: String, value: JSONValue)] = [
                ("intact", .bool(intact)),
                ("records", n(records)),
                ("files", .array(files.map { .string($0) })),
                ("first_seq", u(firstSeq)),
                ("last_seq", u(lastSeq)),
                ("last_hash", .string(HexCodec.string(lastHash))),
                ("chain", .string(keyed ? "hmac-sha256" : "sha256")),
                ("events_rejected", u(eventsRejected)),
                ("events_dropped", u(eventsDropped)),
            ]
            if let t = tornTail {
                m.append(("torn_tail", .object(JSONObject([("file", .string(t.file)), ("bytes", n(t.bytes))]))))
            } else {
                m.append(("torn_tail", .null))
            }
            if let p = problem {
                m.append(("problem", .object(JSONObject([
                    ("kind", .string(p.kind)), ("file", .string(p.file)), ("line", n(p.line)),
                    ("seq", p.seq.map(u) ?? .null), ("detail", .string(p.detail)),
                ]))))
            } else {
                m.append(("problem", .null))
            }
            return .object(JSONObject(m))
        }
    }

    struct Line {
        var rejected: UInt64 = 0
        var dropped: UInt64 = 0
        var file: Int
        var number: Int
        var seq: UInt64?
        var prev: [UInt8]
        var hash: [UInt8]
        var selfOK: Bool
        var why: String
    }

    /// Each file is read whole (at most `maxFileBytes`).
    public static let maxFileBytes = 1 << 32

    public static func verify(paths: [String], key: SecretBytes?) throws(BitsecError) -> Report {
        guard !paths.isEmpty else { throw .invalid("audit verify: no file given") }
        let hasher = try ChainHasher(key: key)
        var report = Report()
        report.keyed = key != nil
        // Read and split every file; order files by their first record's sequence.
        var files: [(path: String, lines: [Line], torn: Int, first: UInt64)] = []
        for path in paths {
            let content = try readFile(path, limit: maxFileBytes)
            var lines: [Line] = []
            var start = 0
            var number = 0
            var torn = 0
            var k = 0
            while start < content.count {
                number += 1
                guard let nl = content[start...].firstIndex(of: 0x0A) else {
                    torn = content.count - start
                    k = content.count
                    break
                }
                let slice = content[start..<nl]
                let (p, why) = AuditRecord.parse(slice)
                if let p {
                    var ok = false
                    if let h = try? hasher.chain(prev: p.prev, canonical: p.canonical) { ok = OpenSSL.constantTimeEqual(h, p.hash) }
                    lines.append(Line(rejected: p.rejected, dropped: p.dropped, file: files.count, number: number, seq: p.seq,
                                      prev: p.prev, hash: p.hash, selfOK: ok, why: ok ? "" : "the record's bytes do not match its hash"))
                } else {
                    lines.append(Line(file: files.count, number: number, seq: nil, prev: [], hash: [], selfOK: false, why: why))
                }
                start = nl + 1
                k = start
            }
            _ = k
            let first = lines.first(where: { $0.selfOK })?.seq ?? UInt64.max
            files.append((path, lines, torn, first))
        }
        let order = files.indices.sorted { (files[$0].first, $0) < (files[$1].first, $1) }
        report.files = order.map { files[$0].path }
        var all: [Line] = []
        for (rank, fi) in order.enumerated() {
            for var l in files[fi].lines { l.file = rank; all.append(l) }
        }
        // A torn tail only counts as a crash artifact at the end of the newest file.
        for (rank, fi) in order.enumerated() where files[fi].torn > 0 {
            if rank == order.count - 1 {
                report.tornTail = (files[fi].path, files[fi].torn)
            } else {
                report.problem = Problem(kind: "edited", file: files[fi].path, line: files[fi].lines.count + 1, seq: nil,
                                         detail: "the file ends inside a record (only the newest file may)")
                return report
            }
        }
        func problem(_ kind: String, _ i: Int, _ detail: String, seq: UInt64? = nil) -> Problem {
            Problem(kind: kind, file: report.files[all[i].file], line: all[i].number, seq: seq ?? all[i].seq, detail: detail)
        }
        var expected: UInt64 = 0
        var prevHash: [UInt8] = []
        var seenHashes: Set<[UInt8]> = []
        for i in all.indices {
            let l = all[i]
            let nextLinks = i + 1 < all.count && all[i + 1].selfOK && all[i + 1].seq == expected && all[i + 1].prev == prevHash && i > 0
            if !l.selfOK {
                if nextLinks {
                    report.problem = problem("inserted", i, "a line that is not part of the chain (\(l.why)); the next record links to the one before it")
                } else {
                    var d = l.seq.map { _ in l.why } ?? l.why
                    if i == 0 && report.keyed == false && l.seq != nil { d += " (if the trail is HMAC-keyed, give its key)" }
                    if i == 0 && report.keyed && l.seq != nil { d += " (or the key is not the trail's key)" }
                    report.problem = problem("edited", i, d)
                }
                return report
            }
            guard let seq = l.seq else { continue }
            if i == 0 {
                report.firstSeq = seq
            } else if seq == expected && l.prev != prevHash {
                report.problem = problem("edited", i - 1, "record \(expected - 1) was rewritten: its successor (line \(l.number)) does not link to it", seq: expected - 1)
                return report
            } else if seq > expected {
                let laterHasExpected = all[(i + 1)...].contains { $0.seq == expected }
                if laterHasExpected {
                    let laterHasSame = all[(i + 1)...].contains { $0.seq == seq }
                    report.problem = laterHasSame
                        ? problem("inserted", i, "a copy of record \(seq) inserted before record \(expected)")
                        : problem("reordered", i, "record \(seq) appears before record \(expected)")
                } else {
                    let missing = seq - expected
                    report.problem = problem("deleted", i, missing == 1 ? "record \(expected) is missing before this line"
                                                                        : "records \(expected)-\(seq - 1) (\(missing)) are missing before this line", seq: expected)
                }
                return report
            } else if seq < expected {
                report.problem = seenHashes.contains(l.hash)
                    ? problem("inserted", i, "a copy of record \(seq), which already appeared")
                    : problem("reordered", i, "record \(seq) appears after record \(expected - 1)")
                return report
            }
            seenHashes.insert(l.hash)
            expected = seq + 1
            prevHash = l.hash
            report.records += 1
            report.eventsRejected &+= l.rejected
            report.eventsDropped &+= l.dropped
            report.lastSeq = seq
            report.lastHash = l.hash
        }
        return report
    }
}

extension AuditVerifier {
    /// Decodes the ABI's JSON array of paths.
    public static func pathList(_ raw: UnsafeRawBufferPointer) throws(BitsecError) -> [String] {
        let doc = try JSONReader.parse(raw, options: .init(maxBytes: 1 << 20, maxDepth: 2))
        guard case .array(let a) = doc else { throw .malformed("paths must be a JSON array of strings") }
        guard !a.isEmpty, a.count <= 4096 else { throw .invalid("paths must hold 1 to 4096 paths") }
        var out: [String] = []
        for v in a {
            guard case .string(let s) = v, !s.isEmpty, !s.utf8.contains(0) else { throw .malformed("paths must be a JSON array of non-empty strings") }
            out.append(s)
        }
        return out
    }
}
