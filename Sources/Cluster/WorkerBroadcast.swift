import Buffers
import Engine
import Foundation
import Wire
import ZeroMQ

/// The worker's side of the weight broadcast: fetching a new version chunk by chunk, switching to it
/// only when the whole set checks out, and serving the chunks it holds to peers further down the chain.
extension Worker {
    /// The flat buffer a version replaces: the model's weights, or with LoRA only the adapters'.
    var trainedBytes: UnsafeMutableRawBufferPointer? {
        if let adapters { return UnsafeMutableRawBufferPointer(adapters.storage) }
        return policy.map { UnsafeMutableRawBufferPointer($0.storage) }
    }

    func startFetch(_ a: Charter_V1_PolicyAnnounce) throws {
        guard let trained = trainedBytes else { return }
        if Int(a.policyVersion) == version { return try sendReady() }
        guard Int(a.policyVersion) > version else { return }
        guard Int(a.totalBytes) == trained.count, a.lora == (adapters != nil) else {
            throw WorkerError("announced weights (\(a.totalBytes) bytes, lora \(a.lora)) do not fit this run's \(adapters != nil ? "adapters" : "model") (\(trained.count) bytes)")
        }
        let manifest = WeightManifest(version: Int(a.policyVersion), totalBytes: Int(a.totalBytes), chunks: a.chunks.map {
            WeightManifest.Chunk(index: Int($0.index), offset: Int($0.offset), size: Int($0.size), crc32c: $0.crc32C)
        })
        guard manifest.checksum == a.manifestCrc32C else {
            log("worker \(options.id): manifest checksum mismatch; waiting for the next announce")
            return
        }
        // The same announce again (after a repeated Register): the fetch in progress goes on.
        if case .fetching(let current) = state, current.assembler.manifest == manifest { return }
        let sources = a.sources.filter { $0 != chunkServerEndpoint }.map(reachable)
        guard !sources.isEmpty else { return log("worker \(options.id): announce of version \(a.policyVersion) names no source") }
        // Connections to sources this announce no longer names (peers gone) are closed.
        for (endpoint, socket) in sourceSockets where !sources.contains(endpoint) {
            socket.close()
            sourceSockets[endpoint] = nil
        }
        for endpoint in sources where sourceSockets[endpoint] == nil {
            let s = try ZMQSocket(context, .dealer)
            if let curve = options.curve { try s.makeCurveClient(serverKey: curve.serverKey, keys: curve.keys) }
            try s.connect(endpoint)
            sourceSockets[endpoint] = s
        }
        let reusable = SharedBuffer.reclaim(&spareBuffer, count: manifest.totalBytes)
        let fetch = ChunkFetch(manifest: manifest, sources: sources, now: Self.now(), reusing: reusable)
        state = .fetching(fetch)
        try requestChunks(fetch, now: Self.now())
    }

    /// A source bound to every interface (tcp://0.0.0.0:P) is dialled on the host this worker
    /// reaches the coordinator by.
    func reachable(_ endpoint: String) -> String {
        for wildcard in ["tcp://0.0.0.0:", "tcp://*:", "tcp://[::]:"] where endpoint.hasPrefix(wildcard) {
            let host = options.connect.split(separator: ":").dropLast().joined(separator: ":")
            return host + ":" + endpoint.dropFirst(wildcard.count)
        }
        return endpoint
    }

    func requestChunks(_ fetch: ChunkFetch, now: Double) throws {
        for (source, index) in fetch.due(now: now) {
            var r = Charter_V1_ChunkRequest()
            r.policyVersion = UInt64(fetch.version)
            r.index = UInt32(index)
            try sourceSockets[source]?.send([.data(Wire.header(.chunkRequest(r)))], wait: false)
        }
    }

    func handleChunkReply(_ frames: [Data]) throws {
        guard case .fetching(let fetch) = state else { return }
        guard let decoded = try? Wire.decode(frames), case .chunkReply(let reply) = decoded.message,
              Int(reply.policyVersion) == fetch.version else { return }
        let now = Self.now()
        guard !reply.missing, let bytes = decoded.bulk.first else {
            fetch.notHeld(index: Int(reply.index), now: now)
            return try requestChunks(fetch, now: now)
        }
        let outcome = bytes.withUnsafeBytes { fetch.received(index: Int(reply.index), bytes: $0, now: now) }
        if outcome == .badChecksum || outcome == .wrongSize {
            log("worker \(options.id): chunk \(reply.index) \(outcome); fetching it again from the coordinator")
        }
        guard fetch.assembler.isComplete else { return try requestChunks(fetch, now: now) }
        try switchVersion(fetch.assembler)
    }

    /// Copies the complete, checked set into place; only now does generation see the new version.
    func switchVersion(_ assembler: WeightAssembler) throws {
        guard let trained = trainedBytes, let policy else { return }
        trained.copyMemory(from: UnsafeRawBufferPointer(start: assembler.buffer.baseAddress, count: assembler.manifest.totalBytes))
        if let adapters, let base {
            policy.storage.update(from: base.weights.storage)
            adapters.merge(into: policy)
        }
        version = assembler.manifest.version
        heldManifest = assembler.manifest
        spareBuffer = assembler.storage
        state = .ready
        try sendReady()
        log("worker \(options.id): now at policy version \(version)")
    }

    func sendReady() throws {
        var ready = Charter_V1_PolicyReady()
        ready.policyVersion = UInt64(version)
        try send(.policyReady(ready))
    }

    /// Answers every queued chunk request from peers: chunks of the version held, or already
    /// received of the one being fetched; anything else is `missing` (ask again, or elsewhere).
    func serveChunkRequests() {
        guard let server = chunkServer else { return }
        while let frames = try? server.receive(wait: false) {
            guard frames.count >= 2, let decoded = try? Wire.decode(Array(frames.dropFirst())),
                  case .chunkRequest(let r) = decoded.message else {
                log("worker \(options.id): dropped a malformed chunk request")
                continue
            }
            var reply = Charter_V1_ChunkReply()
            reply.policyVersion = r.policyVersion
            reply.index = r.index
            var bulk: [Frame] = []
            if let (frame, crc) = heldChunk(version: Int(r.policyVersion), index: Int(r.index)) {
                reply.crc32C = crc
                bulk = [frame]
            } else {
                reply.missing = true
            }
            _ = try? server.send([.data(frames[0]), .data(Wire.header(.chunkReply(reply)))] + bulk, wait: false)
        }
    }

    /// A chunk as a frame that shares the assembled buffer (no copy), or a copy of the held weights
    /// once that buffer went to the next fetch.
    func heldChunk(version v: Int, index: Int) -> (Frame, UInt32)? {
        if v == version, let manifest = heldManifest, let trained = trainedBytes, manifest.chunks.indices.contains(index) {
            let c = manifest.chunks[index]
            if let spare = spareBuffer { return (.shared(spare, offset: c.offset, count: c.size), c.crc32c) }
            return (.data(Data(trained[c.offset ..< c.offset + c.size])), c.crc32c)
        }
        if case .fetching(let fetch) = state, fetch.version == v, fetch.assembler.held.contains(index) {
            let c = fetch.assembler.manifest.chunks[index]
            return (.shared(fetch.assembler.storage, offset: c.offset, count: c.size), c.crc32c)
        }
        return nil
    }
}
