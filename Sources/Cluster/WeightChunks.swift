import Buffers
import CCRC32C
import Dispatch

/// CRC-32C (Castagnoli), the checksum of weight chunks and manifests: the SSE4.2 instruction,
/// several GB/s, so checking a chunk costs far less than moving it.
public enum CRC32C {
    public static func checksum(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        charter_crc32c(seed, bytes.baseAddress, bytes.count)
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { checksum($0) } }
}

/// How a version of a flat parameter buffer is cut into checksummed chunks for the broadcast.
public struct WeightManifest: Sendable, Equatable {
    public struct Chunk: Sendable, Equatable {
        public let index: Int, offset: Int, size: Int
        public let crc32c: UInt32
        public init(index: Int, offset: Int, size: Int, crc32c: UInt32) {
            self.index = index; self.offset = offset; self.size = size; self.crc32c = crc32c
        }
    }

    public let version: Int
    public let totalBytes: Int
    public let chunks: [Chunk]

    /// Checksum over the chunk list (index, offset, size, crc), so a corrupted manifest is caught too.
    public var checksum: UInt32 {
        var bytes: [UInt8] = []
        for c in chunks {
            for v in [UInt64(c.index), UInt64(c.offset), UInt64(c.size), UInt64(c.crc32c)] {
                withUnsafeBytes(of: v.littleEndian) { bytes += $0 }
            }
        }
        return CRC32C.checksum(bytes)
    }

    public init(version: Int, totalBytes: Int, chunks: [Chunk]) {
        self.version = version; self.totalBytes = totalBytes; self.chunks = chunks
    }

    public init(version: Int, buffer: UnsafeRawBufferPointer, chunkSize: Int = 4 << 20) {
        self.init(version: version, copying: buffer, into: nil, chunkSize: chunkSize)
    }

    /// The manifest of `source`, copied into `destination` (if given) on the way: each chunk is
    /// copied and then checksummed while it is still in cache, chunks spread over the cores.
    public init(version: Int, copying source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer?, chunkSize: Int = 4 << 20) {
        precondition(chunkSize > 0, "chunk size must be positive")
        precondition(destination.map { $0.count >= source.count } ?? true, "destination too small")
        let count = (source.count + chunkSize - 1) / chunkSize
        var crcs = [UInt32](repeating: 0, count: count)
        crcs.withUnsafeMutableBufferPointer { out in
            // Each iteration touches its own chunk and its own slot of `out`.
            nonisolated(unsafe) let out = out, source = source, destination = destination
            DispatchQueue.concurrentPerform(iterations: count) { i in
                let range = i * chunkSize ..< min((i + 1) * chunkSize, source.count)
                var bytes = UnsafeRawBufferPointer(rebasing: source[range])
                if let destination {
                    let target = UnsafeMutableRawBufferPointer(rebasing: destination[range])
                    target.copyMemory(from: bytes)
                    bytes = UnsafeRawBufferPointer(target)
                }
                out[i] = CRC32C.checksum(bytes)
            }
        }
        let chunks = crcs.indices.map { i in
            Chunk(index: i, offset: i * chunkSize, size: min(chunkSize, source.count - i * chunkSize), crc32c: crcs[i])
        }
        self.init(version: version, totalBytes: source.count, chunks: chunks)
    }
}

/// Collects the chunks of one version into a buffer. A chunk is kept only if its checksum holds;
/// the version is complete only when every chunk is in, so a worker never runs a mix of versions.
public final class WeightAssembler {
    public enum Outcome: Sendable, Equatable { case stored, badChecksum, wrongSize, unknownChunk, alreadyHeld }

    public let manifest: WeightManifest
    /// Where the chunks land; `reusing` a previous version's storage of the same size saves
    /// faulting in fresh pages (a fifth of a second for SmolLM2's 540 MB).
    public let storage: SharedBuffer
    public var buffer: UnsafeMutableRawBufferPointer { storage.bytes }
    public private(set) var held: Set<Int> = []

    public init(manifest: WeightManifest, reusing old: SharedBuffer? = nil) {
        self.manifest = manifest
        storage = old.flatMap { $0.bytes.count == max(manifest.totalBytes, 1) ? $0 : nil } ?? SharedBuffer(count: manifest.totalBytes)
    }

    public var missing: [Int] { manifest.chunks.map(\.index).filter { !held.contains($0) } }
    public var isComplete: Bool { held.count == manifest.chunks.count }

    public func accept(index: Int, bytes: UnsafeRawBufferPointer) -> Outcome {
        guard manifest.chunks.indices.contains(index) else { return .unknownChunk }
        if held.contains(index) { return .alreadyHeld }
        let c = manifest.chunks[index]
        guard bytes.count == c.size else { return .wrongSize }
        guard CRC32C.checksum(bytes) == c.crc32c else { return .badChecksum }
        UnsafeMutableRawBufferPointer(rebasing: buffer[c.offset ..< c.offset + c.size]).copyMemory(from: bytes)
        held.insert(index)
        return .stored
    }
}
