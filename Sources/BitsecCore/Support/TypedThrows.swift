/// The standard library's `withUnsafe*` helpers rethrow untyped errors; these keep
/// `throws(BitsecError)` intact through them.
extension Array where Element == UInt8 {
    @inline(__always)
    public func withRawBytes<R>(_ body: (UnsafeRawBufferPointer) throws(BitsecError) -> R) throws(BitsecError) -> R {
        let r = withUnsafeBytes { (raw) -> Result<R, BitsecError> in
            do throws(BitsecError) { return .success(try body(raw)) } catch { return .failure(error) }
        }
        return try r.get()
    }

    @inline(__always)
    public mutating func withMutableRawBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws(BitsecError) -> R) throws(BitsecError) -> R {
        let r = withUnsafeMutableBytes { (raw) -> Result<R, BitsecError> in
            do throws(BitsecError) { return .success(try body(raw)) } catch { return .failure(error) }
        }
        return try r.get()
    }
}
