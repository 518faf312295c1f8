// libFuzzer harness of bitsec's C ABI. One executable serves every target: the
// target is chosen once, in LLVMFuzzerInitialize, from BITSEC_FUZZ_TARGET, and each input
// then goes to that target's function. Targets call the exported functions of the Bitsec
// module exactly as a C caller would: a pointer and a length into exactly-sized heap copies
// of the fuzzer's bytes (so AddressSanitizer sees any read past an argument), outputs into
// fixed caller buffers. A status code is always an acceptable answer; a crash, a sanitizer
// report, a leak or a timeout is a finding. docs/fuzzing.md describes every target.
import Bitsec
import Glibc

// MARK: - libFuzzer entry points

/// The chosen target's function, set once by LLVMFuzzerInitialize before any input runs.
nonisolated(unsafe) private var runInput: ((UnsafeRawBufferPointer) -> Void)?

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<Int32>?,
                           _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> Int32 {
    let name = getenv("BITSEC_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let run = makeTarget(name) else {
        die("set BITSEC_FUZZ_TARGET to one of: \(targetNames.joined(separator: " "))")
    }
    runInput = run
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    runningInput = true
    runInput?(UnsafeRawBufferPointer(start: data, count: size))
    runningInput = false
    for p in inputAllocations { free(p) }
    inputAllocations.removeAll(keepingCapacity: true)
    return 0
}

let targetNames = ["config", "jwks", "verify_token", "verify_token_jose", "policy", "check_permission",
                   "totp", "decrypt_field", "audit_emit", "csrf", "password_phc", "session"]

private func makeTarget(_ name: String) -> ((UnsafeRawBufferPointer) -> Void)? {
    switch name {
    case "config": return configTarget()
    case "jwks": return jwksTarget()
    case "verify_token": return verifyTokenTarget()
    case "verify_token_jose": return verifyTokenJOSETarget()
    case "policy": return policyTarget()
    case "check_permission": return checkPermissionTarget()
    case "totp": return totpTarget()
    case "decrypt_field": return decryptFieldTarget()
    case "audit_emit": return auditEmitTarget()
    case "csrf": return csrfTarget()
    case "password_phc": return passwordPHCTarget()
    case "session": return sessionTarget()
    default: return nil
    }
}

// MARK: - Inputs

/// One argument: an exactly-sized heap copy (malloc of at least one byte, so a zero-length
/// argument still has a valid, distinct pointer, as most C callers would pass). A value, not
/// an object: the copy belongs to the input being run and is freed after it returns (so no
/// Swift lifetime question arises while a raw pointer is in a C call); copies made while a
/// target is being set up live for the whole run.
struct Arg {
    let base: UnsafeMutablePointer<CChar>
    let count: Int

    init<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        count = bytes.count
        guard let p = malloc(Swift.max(count, 1)) else { die("out of memory") }
        base = p.assumingMemoryBound(to: CChar.self)
        var i = 0
        for b in bytes {
            base[i] = CChar(bitPattern: b)
            i += 1
        }
        if runningInput { inputAllocations.append(p) }
    }

    init(_ text: String) { self.init(Array(text.utf8)) }

    var p: UnsafePointer<CChar> { UnsafePointer(base) }
    var u8: UnsafePointer<UInt8> { UnsafeRawPointer(base).assumingMemoryBound(to: UInt8.self) }
    var len: UInt { UInt(count) }
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Frees a set-up copy once it is no longer needed (input copies are freed by the driver).
    func release() { free(base) }
}

/// Whether an input is being run (its Args are freed when it returns), and those Args.
nonisolated(unsafe) var runningInput = false
nonisolated(unsafe) var inputAllocations: [UnsafeMutableRawPointer] = []

/// The separator between the parts of a multi-argument input: ASCII RS (0x1E), which valid
/// JSON, base64url, base32 and the packed principal never contain, so seeds stay readable.
let partSeparator: UInt8 = 0x1E

/// Splits an input at the separator into at most `max` parts (the last keeps any further
/// separators). An input without a separator is one part.
func parts(_ data: UnsafeRawBufferPointer, max: Int) -> [Arg] {
    var result: [Arg] = []
    var start = 0
    var i = 0
    while i < data.count, result.count < max - 1 {
        if data[i] == partSeparator {
            result.append(Arg(data[start..<i]))
            start = i + 1
        }
        i += 1
    }
    result.append(Arg(data[start..<data.count]))
    return result
}

/// A small integer taken from an optional part: its bytes folded little-endian (0 when absent).
func number(_ a: Arg?) -> Int64 {
    guard let a else { return 0 }
    var v: UInt64 = 0
    for (k, b) in a.bytes.prefix(8).enumerated() { v |= UInt64(b) << (8 * UInt64(k)) }
    return Int64(bitPattern: v)
}

// MARK: - Output buffers (shared: libFuzzer runs one input at a time on one thread)

let outCap = 1 << 16
nonisolated(unsafe) let outBuf: UnsafeMutablePointer<CChar> = {
    guard let p = malloc(1 << 16) else { exit(3) }
    return p.assumingMemoryBound(to: CChar.self)
}()
var outBytes: UnsafeMutablePointer<UInt8> { UnsafeMutableRawPointer(outBuf).assumingMemoryBound(to: UInt8.self) }

/// The instant every time-dependent check runs at, so an input decides the same on every run.
let fixedNow: Int64 = 1_800_000_000

// MARK: - Environment

/// The repository root: BITSEC_FUZZ_REPO, else derived from this file's build-time path
/// (<root>/fuzz/Sources/BitsecFuzz/Harness.swift).
let repoRoot: String = {
    if let e = getenv("BITSEC_FUZZ_REPO") { return String(cString: e) }
    let parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    return parts.dropLast(4).joined(separator: "/")
}()

/// A private temporary directory for the run (audit files), removed at exit.
nonisolated(unsafe) var tempDir: String = ""

func makeTempDir() -> String {
    if !tempDir.isEmpty { return tempDir }
    let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    var template = Array("\(base)/bitsec-fuzz-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { buf -> String? in
        guard let b = buf.baseAddress, let p = mkdtemp(b) else { return nil }
        return String(cString: p)
    }
    guard let dir = made else { die("cannot create a temporary directory under \(base)") }
    tempDir = dir
    atexit { removeTree(tempDir) }
    return dir
}

/// Removes the files of a flat directory, then the directory.
func removeTree(_ dir: String) {
    guard !dir.isEmpty else { return }
    removeFiles(in: dir) { _ in true }
    rmdir(dir)
}

func removeFiles(in dir: String, where match: (String) -> Bool) {
    guard let d = opendir(dir) else { return }
    var names: [String] = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." && match(name) { names.append(name) }
    }
    closedir(d)
    for n in names { unlink("\(dir)/\(n)") }
}

func die(_ message: String) -> Never {
    let line = "bitsec-fuzz: \(message)\n"
    line.withCString { _ = write(2, $0, strlen($0)) }
    exit(2)
}

func lastError() -> String { String(cString: bitsec_last_error()) }

/// Reads fuzz/runtime/<name>.json, fills in @REPO@ and @TMP@, and opens a runtime from it.
func openRuntime(_ name: String) -> OpaquePointer {
    let path = "\(repoRoot)/fuzz/runtime/\(name).json"
    guard let f = fopen(path, "r") else { die("cannot read \(path) (set BITSEC_FUZZ_REPO to the repository)") }
    var text: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        if n <= 0 { break }
        text.append(contentsOf: chunk[0..<n])
    }
    fclose(f)
    var config = String(decoding: text, as: UTF8.self).replacingAll("@REPO@", with: repoRoot)
    if config.contains("@TMP@") { config = config.replacingAll("@TMP@", with: makeTempDir()) }
    let arg = Arg(config)
    var rt: OpaquePointer? = nil
    let rc = bitsec_runtime_open(arg.p, arg.len, &rt)
    arg.release()
    guard rc == 0, let rt else { die("fuzz/runtime/\(name).json does not open (\(rc)): \(lastError())") }
    // Closed at exit, so that LeakSanitizer's exit-time check sees a released runtime rather
    // than a live one (some Swift references carry tag bits LSan cannot follow).
    if setUpRuntimes.isEmpty { atexit { for r in setUpRuntimes { bitsec_runtime_close(r) } } }
    setUpRuntimes.append(rt)
    return rt
}

nonisolated(unsafe) var setUpRuntimes: [OpaquePointer] = []

extension String {
    /// Foundation-free replacement of every occurrence of a non-empty ASCII needle.
    func replacingAll(_ needle: String, with replacement: String) -> String {
        let h = Array(utf8), n = Array(needle.utf8)
        var out: [UInt8] = []
        var i = 0
        while i < h.count {
            if i + n.count <= h.count && Array(h[i..<(i + n.count)]) == n {
                out.append(contentsOf: replacement.utf8)
                i += n.count
            } else {
                out.append(h[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
