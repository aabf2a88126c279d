import Buffers
import Engine
import Foundation
import Logging
import Wire
import ZeroMQ

/// The worker's side of the weight broadcast: fetching a new version of a model chunk by chunk,
/// switching to it only when the whole set checks out, and serving the chunks it holds to peers
/// further down the chain. One model is fetched at a time; announces of others wait their turn.
extension Worker {
    /// The buffers a version of `model` replaces, in order (a version is their bytes end to end):
    /// the policy's weights, or with LoRA only the adapters'; nil if this run has no such model.
    func versionedBuffers(_ model: String) throws -> [UnsafeMutableBufferPointer<Float>]? {
        switch model {
        case ModelName.policy: return adapters.map { [$0.storage] } ?? policy.map { [$0.storage] }
        case ModelName.reference: return reference.map { [$0.weights.storage] }
        case ModelName.feedback: return [try ownJudge().weights.storage]
        case ModelName.helpful: return scorer?.models?.helpfulness?.versionedBuffers
        case ModelName.safety: return scorer?.models?.safety?.versionedBuffers
        case ModelName.valueHead: return valueHead.map { [$0.storage] }
        default: return nil
        }
    }

    func startFetch(_ a: Charter_V1_ModelAnnounce) throws {
        let model = a.model, held = versions[model] ?? 0
        if Int(clamping: a.version) == held { return try sendReady(model) }
        guard Int(clamping: a.version) > held else { return }
        if case .fetching(let current) = state, current.model != model {
            waitingAnnounces[model] = a // after the fetch in progress
            return
        }
        guard let buffers = try versionedBuffers(model) else {
            return logger.warning("announce of \(model) version \(a.version), a model this run does not have; ignored")
        }
        let size = buffers.byteCount
        guard Int(clamping: a.totalBytes) == size, model != ModelName.policy || a.lora == (adapters != nil) else {
            throw WorkerError("announced \(model) weights (\(a.totalBytes) bytes, lora \(a.lora)) do not fit this run's \(model == ModelName.policy && adapters != nil ? "adapters" : model) (\(size) bytes)")
        }
        let manifest = WeightManifest(version: Int(clamping: a.version), totalBytes: Int(clamping: a.totalBytes), chunks: a.chunks.map {
            WeightManifest.Chunk(index: Int(clamping: $0.index), offset: Int(clamping: $0.offset), size: Int(clamping: $0.size), crc32c: $0.crc32C)
        })
        guard manifest.checksum == a.manifestCrc32C else {
            logger.warning("manifest checksum mismatch; waiting for the next announce")
            return
        }
        // The same announce again (after a repeated Register): the fetch in progress goes on.
        if case .fetching(let current) = state, current.assembler.manifest == manifest { return }
        let sources = a.sources.filter { $0 != chunkServerEndpoint }.map(reachable)
        guard !sources.isEmpty else { return logger.warning("announce of \(model) version \(a.version) names no source") }
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
        let reusable = SharedBuffer.reclaim(&spareBuffers[model], count: manifest.totalBytes)
        let fetch = ChunkFetch(model: model, manifest: manifest, sources: sources, now: Self.now(), reusing: reusable)
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
            r.model = fetch.model
            r.version = UInt64(fetch.version)
            r.index = UInt32(index)
            try sourceSockets[source]?.send([.data(Wire.header(.chunkRequest(r)))], wait: false)
        }
    }

    func handleChunkReply(_ frames: [Data]) throws {
        guard case .fetching(let fetch) = state else { return }
        guard let decoded = try? Wire.decode(frames), case .chunkReply(let reply) = decoded.message,
              reply.model == fetch.model, Int(clamping: reply.version) == fetch.version else { return }
        let now = Self.now()
        guard !reply.missing, let bytes = decoded.bulk.first else {
            fetch.notHeld(index: Int(clamping: reply.index), now: now)
            return try requestChunks(fetch, now: now)
        }
        let outcome = bytes.withUnsafeBytes { fetch.received(index: Int(clamping: reply.index), bytes: $0, now: now) }
        if outcome == .badChecksum || outcome == .wrongSize {
            logger.warning("chunk \(reply.index) \(outcome); fetching it again from the coordinator")
        }
        guard fetch.assembler.isComplete else { return try requestChunks(fetch, now: now) }
        try switchVersion(fetch)
    }

    /// Copies the complete, checked set into place; only now does any task see the new version.
    func switchVersion(_ fetch: ChunkFetch) throws {
        let assembler = fetch.assembler, model = fetch.model
        guard let buffers = try versionedBuffers(model) else { return }
        buffers.scatter(from: UnsafeRawBufferPointer(assembler.buffer))
        if model == ModelName.policy, let adapters, let base, let policy {
            policy.storage.update(from: base.weights.storage)
            adapters.merge(into: policy)
        }
        versions[model] = assembler.manifest.version
        heldManifests[model] = assembler.manifest
        spareBuffers[model] = assembler.storage
        state = .ready
        try sendReady(model)
        logger.info("now at \(model) version \(assembler.manifest.version)")
        if let next = waitingAnnounces.keys.sorted().first, let a = waitingAnnounces.removeValue(forKey: next) { try startFetch(a) }
    }

    func sendReady(_ model: String) throws {
        var ready = Charter_V1_ModelReady()
        ready.model = model
        ready.version = UInt64(versions[model] ?? 0)
        try send(.modelReady(ready))
    }

    /// Answers every queued chunk request from peers: chunks of a version held, or already
    /// received of the one being fetched; anything else is `missing` (ask again, or elsewhere).
    func serveChunkRequests() {
        guard let server = chunkServer else { return }
        while let frames = try? server.receive(wait: false) {
            guard frames.count >= 2, let decoded = try? Wire.decode(Array(frames.dropFirst())),
                  case .chunkRequest(let r) = decoded.message else {
                logger.warning("dropped a malformed chunk request")
                continue
            }
            var reply = Charter_V1_ChunkReply()
            reply.model = r.model
            reply.version = r.version
            reply.index = r.index
            var bulk: [Frame] = []
            if let (frame, crc) = heldChunk(model: r.model, version: Int(clamping: r.version), index: Int(clamping: r.index)) {
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
    func heldChunk(model: String, version v: Int, index: Int) -> (Frame, UInt32)? {
        if v == versions[model], let manifest = heldManifests[model], manifest.chunks.indices.contains(index) {
            let c = manifest.chunks[index]
            if let spare = spareBuffers[model] { return (.shared(spare, offset: c.offset, count: c.size), c.crc32c) }
            guard let buffers = try? versionedBuffers(model) else { return nil }
            return (.data(buffers.bytes(in: c.offset ..< c.offset + c.size)), c.crc32c)
        }
        if case .fetching(let fetch) = state, fetch.model == model, fetch.version == v, fetch.assembler.held.contains(index) {
            let c = fetch.assembler.manifest.chunks[index]
            return (.shared(fetch.assembler.storage, offset: c.offset, count: c.size), c.crc32c)
        }
        return nil
    }
}
