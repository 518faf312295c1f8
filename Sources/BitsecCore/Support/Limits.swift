/// Hard limits on everything bitsec parses. A caller-supplied size beyond these is refused
/// with `tooLarge` before any work is done.
public enum Limits {
    /// A configuration document (JSON), inline or from a file.
    public static let maxConfigBytes = 4 << 20
    /// Nesting depth of any JSON document bitsec reads.
    public static let maxJSONDepth = 64
    /// A secret read from a file or environment variable.
    public static let maxSecretBytes = 64 << 10
    /// Any single argument buffer passed through the ABI unless a capability says otherwise.
    public static let maxArgumentBytes = 16 << 20
    /// Detail messages are truncated to this many bytes (including the NUL).
    public static let maxMessageBytes = 512
}
