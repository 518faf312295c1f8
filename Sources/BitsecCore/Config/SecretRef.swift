internal import Glibc

/// Where a secret comes from. In the configuration a secret is an object with exactly one of:
///
/// - `{"file": "/run/secrets/jwt.key"}`: the file's content;
/// - `{"env": "BITSEC_JWT_SECRET"}`: an environment variable;
/// - `{"value": "..."}`: inline, refused unless the document sets `"allow_inline_secrets": true`
///   (for tests and local development only).
///
/// and optionally `"encoding"`: `raw` (default: the bytes as they are; a file's content is
/// used exactly), `base64`, `base64url` or `hex` (surrounding whitespace is ignored).
public struct SecretRef: Sendable, CustomStringConvertible {
    public enum Source: Sendable { case file(String), env(String), inline }
    public let source: Source
    public let fieldPath: String
    private let secret: SecretBytes

    public var description: String {
        switch source {
        case .file(let p): return "file \(p)"
        case .env(let n): return "environment variable \(n)"
        case .inline: return "inline value"
        }
    }

    public func withBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try secret.withBytes(body)
    }

    public var bytes: SecretBytes { secret }

    /// Reads and decodes a secret reference at `path` in `obj`.
    public static func read(_ obj: ConfigObject, _ key: String, context: ConfigContext) throws(BitsecError) -> SecretRef? {
        guard let o = try obj.object(key) else { return nil }
        return try read(o, context: context)
    }

    public static func read(_ o: ConfigObject, context: ConfigContext) throws(BitsecError) -> SecretRef {
        let file = try o.string("file")
        let env = try o.string("env")
        let value = try o.string("value")
        let encoding = try o.choice("encoding", ["raw", "base64", "base64url", "hex"], default: "raw")
        try o.finish()
        let given = [file != nil, env != nil, value != nil].filter { $0 }.count
        guard given == 1 else {
            throw .config("\(o.path) must have exactly one of file, env, value")
        }
        var raw: [UInt8]
        let source: Source
        if let file {
            raw = try readSecretFile(file, fieldPath: o.path)
            source = .file(file)
        } else if let env {
            guard let p = getenv(env) else { throw .config("\(o.path).env: environment variable \(env) is not set") }
            raw = Array(String(cString: p).utf8)
            source = .env(env)
        } else {
            guard context.allowInlineSecrets else {
                throw .config("\(o.path).value: inline secrets are refused; use file or env (or set allow_inline_secrets for development)")
            }
            raw = Array((value ?? "").utf8)
            source = .inline
        }
        defer { wipe(&raw) }
        guard raw.count <= Limits.maxSecretBytes else { throw .config("\(o.path): secret exceeds \(Limits.maxSecretBytes) bytes") }
        var decoded: [UInt8]
        switch encoding {
        case "raw":
            decoded = raw
        default:
            let trimmed = trimWhitespace(raw)
            let d: [UInt8]?
            switch encoding {
            case "hex": d = Hex.decode(trimmed)
            case "base64": d = Base64.decodeLenient(trimmed, urlSafe: false)
            default: d = Base64.decodeLenient(trimmed, urlSafe: true)
            }
            guard let d else { throw .config("\(o.path): secret is not valid \(encoding)") }
            decoded = d
        }
        defer { wipe(&decoded) }
        guard !decoded.isEmpty else { throw .config("\(o.path): secret is empty") }
        return SecretRef(source: source, fieldPath: o.path, secret: SecretBytes(decoded))
    }

    private static func trimWhitespace(_ b: [UInt8]) -> ArraySlice<UInt8> {
        let isWS: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
        var s = b[...]
        while let f = s.first, isWS(f) { s = s.dropFirst() }
        while let l = s.last, isWS(l) { s = s.dropLast() }
        return s
    }
}

/// Reads a whole file into memory with a size limit, without Foundation.
public func readSecretFile(_ path: String, fieldPath: String, limit: Int = Limits.maxSecretBytes) throws(BitsecError) -> [UInt8] {
    do {
        return try readFile(path, limit: limit)
    } catch {
        throw .config("\(fieldPath).file: \(error.detail)")
    }
}

/// Reads a whole file with a size limit. Errors name the path and errno text, never content.
public func readFile(_ path: String, limit: Int) throws(BitsecError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw BitsecError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 << 10)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw BitsecError(.io, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        if n == 0 { break }
        guard out.count + n <= limit else { throw .tooLarge("\(path) exceeds the limit of \(limit) bytes") }
        out.append(contentsOf: chunk[0..<n])
    }
    return out
}

/// State shared by the section readers while one configuration document is read.
public struct ConfigContext: Sendable {
    public var allowInlineSecrets: Bool
    public init(allowInlineSecrets: Bool) { self.allowInlineSecrets = allowInlineSecrets }
}
