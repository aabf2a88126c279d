/// Bytes shared between whoever fills them (a weight broadcast) and a socket that sends them
/// without a copy, which keeps a reference until libzmq has sent them. Its own module, so the
/// weight code can use it without importing a socket library.
public final class SharedBuffer: @unchecked Sendable {
    public let bytes: UnsafeMutableRawBufferPointer

    public init(count: Int) { bytes = .allocate(byteCount: max(count, 1), alignment: 64) }

    /// Empties `slot` and returns its buffer for reuse when it has `count` bytes and nothing else
    /// holds it (no frame still queued for sending); nil otherwise.
    public static func reclaim(_ slot: inout SharedBuffer?, count: Int) -> SharedBuffer? {
        guard var buffer = slot else { return nil }
        slot = nil
        return isKnownUniquelyReferenced(&buffer) && buffer.bytes.count == max(count, 1) ? buffer : nil
    }

    deinit { bytes.deallocate() }
}
