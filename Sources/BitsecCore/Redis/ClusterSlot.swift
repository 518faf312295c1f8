/// Redis Cluster's key-to-slot mapping and the key a command is routed by.
///
/// A key's slot is CRC16 (XMODEM: polynomial 0x1021, initial value 0) of the key modulo
/// 16384; when the key holds a hash tag (the bytes between the first `{` and the first `}`
/// after it, if not empty) only the tag is hashed, so keys sharing a tag share a slot. Every
/// script and multi-key command bitsec sends keeps its keys under one tag.
public enum ClusterSlot {
    public static let count = 16384

    private static let table: [UInt16] = (0..<256).map { i -> UInt16 in
        var crc = UInt16(i) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }

    /// CRC16/XMODEM of `bytes`.
    public static func crc16<C: Collection>(_ bytes: C) -> UInt16 where C.Element == UInt8 {
        var crc: UInt16 = 0
        table.withUnsafeBufferPointer { t in
            for b in bytes { crc = (crc << 8) ^ t[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ b)] }
        }
        return crc
    }

    /// The slot of `key` (`CLUSTER KEYSLOT key`).
    public static func of<C: Collection>(_ key: C) -> Int where C.Element == UInt8, C.Index == Int {
        if let open = key.firstIndex(of: UInt8(ascii: "{")) {
            let after = key.index(after: open)
            if let close = key[after...].firstIndex(of: UInt8(ascii: "}")), close > after {
                return Int(crc16(key[after..<close]) & 0x3FFF)
            }
        }
        return Int(crc16(key) & 0x3FFF)
    }

    public static func of(_ key: String) -> Int { of(Array(key.utf8)) }

    /// The position of the key a command is routed by: the first key of `EVAL`/`EVALSHA`
    /// (argument 3, when it declares keys), nothing for commands without a key (`PING`),
    /// argument 1 otherwise (`GET`, `SET`, `DEL`, `EXISTS`, `MGET`, `XADD`, ...).
    static func keyIndex(command: [UInt8], count: Int, numKeys: () -> Int?) -> Int? {
        if equalsIgnoringCase(command, "EVALSHA") || equalsIgnoringCase(command, "EVAL")
            || equalsIgnoringCase(command, "EVALSHA_RO") || equalsIgnoringCase(command, "EVAL_RO") {
            guard let n = numKeys(), n > 0, count > 3 else { return nil }
            return 3
        }
        if equalsIgnoringCase(command, "PING") || equalsIgnoringCase(command, "ASKING") || equalsIgnoringCase(command, "CLUSTER")
            || equalsIgnoringCase(command, "INFO") || equalsIgnoringCase(command, "TIME") || equalsIgnoringCase(command, "SCRIPT") {
            return nil
        }
        return count > 1 ? 1 : nil
    }

    /// The slot a command given as arguments is routed by (nil: any node will do).
    public static func of(command args: [[UInt8]]) -> Int? {
        guard let first = args.first else { return nil }
        guard let i = keyIndex(command: first, count: args.count, numKeys: { args.count > 2 ? parseInt(args[2][...]) : nil }) else { return nil }
        return of(args[i])
    }

    /// The slot a command already encoded in RESP (`RESPEncoder`) is routed by: the same
    /// rule, read from the encoding (nil: no key, or not a well-formed command).
    public static func of(resp: [UInt8]) -> Int? {
        resp.withUnsafeBufferPointer { b -> Int? in
            var p = 0
            guard let n = readLength(b, &p, marker: UInt8(ascii: "*")), n >= 1 else { return nil }
            var args: [Range<Int>] = []
            args.reserveCapacity(4)
            for _ in 0..<min(n, 4) {
                guard let len = readLength(b, &p, marker: UInt8(ascii: "$")), len <= b.count - p - 2 else { return nil }
                args.append(p..<(p + len))
                p += len + 2
            }
            let cmd = Array(b[args[0]])
            guard let i = keyIndex(command: cmd, count: n, numKeys: { args.count > 2 ? parseInt(b[args[2]]) : nil }),
                  i < args.count else { return nil }
            return of(Array(b[args[i]]))
        }
    }

    private static func readLength(_ b: UnsafeBufferPointer<UInt8>, _ p: inout Int, marker: UInt8) -> Int? {
        guard p < b.count, b[p] == marker else { return nil }
        p += 1
        var v = 0
        var digits = 0
        while p < b.count, b[p] >= 48, b[p] <= 57, digits < 12 {
            v = v * 10 + Int(b[p] - 48)
            p += 1
            digits += 1
        }
        guard digits > 0, p + 1 < b.count, b[p] == 13, b[p + 1] == 10 else { return nil }
        p += 2
        return v
    }

    private static func parseInt<C: Collection>(_ s: C) -> Int? where C.Element == UInt8 {
        guard !s.isEmpty, s.count <= 12 else { return nil }
        var v = 0
        for c in s {
            guard c >= 48, c <= 57 else { return nil }
            v = v * 10 + Int(c - 48)
        }
        return v
    }

    private static func equalsIgnoringCase(_ a: [UInt8], _ b: StaticString) -> Bool {
        guard a.count == b.utf8CodeUnitCount else { return false }
        let p = b.utf8Start
        for i in 0..<a.count where a[i] & 0xDF != p[i] & 0xDF { return false }
        return true
    }
}
