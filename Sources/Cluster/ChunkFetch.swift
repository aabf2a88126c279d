import Buffers

/// One version's chunks on their way into a worker: which to ask for, from which source, and when.
///
/// Sources are chunk endpoints, nearest first, the coordinator last (see PROTOCOL.md, "Weight
/// broadcast"). A peer that does not hold a chunk yet answers `missing`, and the chunk is asked for
/// again shortly (the peer is ahead in the chain and will have it); until then it keeps its place
/// in the window, so a fetcher does not sweep ahead of a peer that is behind. When no chunk has arrived for
/// `ProtocolTiming.chunkFetchTimeoutSeconds` the fetch moves to the next source; a chunk that failed its checksum is asked
/// of the last source, the coordinator.
final class ChunkFetch {
    let model: String
    let assembler: WeightAssembler
    let sources: [String]
    private(set) var source = 0
    private var inFlight: [Int: Double] = [:]     // chunk -> when asked
    private var retryAt: [Int: Double] = [:]      // chunk -> not before (after `missing`)
    private var fromLast: Set<Int> = []
    private var lastProgress: Double

    init(model: String, manifest: WeightManifest, sources: [String], now: Double, reusing buffer: SharedBuffer?) {
        precondition(!sources.isEmpty, "a fetch needs a source")
        self.model = model
        assembler = WeightAssembler(manifest: manifest, reusing: buffer)
        self.sources = sources
        lastProgress = now
    }

    var version: Int { assembler.manifest.version }

    /// The requests to send now, as (source endpoint, chunk index).
    func due(now: Double) -> [(source: String, index: Int)] {
        if now - lastProgress > ProtocolTiming.chunkFetchTimeoutSeconds {
            if source < sources.count - 1 { source += 1 }
            inFlight = [:]
            retryAt = [:]
            lastProgress = now
        }
        var requests: [(String, Int)] = []
        for index in assembler.missing where inFlight.count + retryAt.count < ProtocolTiming.chunkFetchWindow || retryAt[index] != nil {
            guard inFlight[index] == nil, (retryAt[index] ?? 0) <= now else { continue }
            inFlight[index] = now
            retryAt[index] = nil
            requests.append((fromLast.contains(index) ? sources[sources.count - 1] : sources[source], index))
        }
        return requests
    }

    func received(index: Int, bytes: UnsafeRawBufferPointer, now: Double) -> WeightAssembler.Outcome {
        inFlight[index] = nil
        let outcome = assembler.accept(index: index, bytes: bytes)
        switch outcome {
        case .stored: lastProgress = now
        case .badChecksum, .wrongSize: fromLast.insert(index)
        case .unknownChunk, .alreadyHeld: break
        }
        return outcome
    }

    func notHeld(index: Int, now: Double) {
        inFlight[index] = nil
        retryAt[index] = now + ProtocolTiming.chunkMissingRetrySeconds
    }
}
