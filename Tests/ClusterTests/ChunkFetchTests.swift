@testable import Cluster
import XCTest

/// Which source a fetch asks, and when: the relay chain's failure rules (PROTOCOL.md, "Weight broadcast").
final class ChunkFetchTests: XCTestCase {
    let bytes = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 * 13) }
    func manifest() -> WeightManifest { bytes.withUnsafeBytes { WeightManifest(version: 2, buffer: $0, chunkSize: 1000) } }
    func chunk(_ i: Int) -> ArraySlice<UInt8> { bytes[i * 1000 ..< (i + 1) * 1000] }

    func testAWindowGoesToTheNearestSourceAndMissingChunksAreAskedAgainSoon() {
        let fetch = ChunkFetch(model: "policy", manifest: manifest(), sources: ["peer", "coordinator"], now: 0, reusing: nil)
        let first = fetch.due(now: 0)
        XCTAssertEqual(first.map(\.index), [0, 1, 2, 3])
        XCTAssertEqual(Set(first.map(\.source)), ["peer"])
        XCTAssertTrue(fetch.due(now: 0.001).isEmpty, "the window is full")
        fetch.notHeld(index: 0, now: 0.01)
        XCTAssertTrue(fetch.due(now: 0.02).isEmpty, "a missing chunk waits, and keeps its place in the window")
        XCTAssertEqual(fetch.due(now: 0.04).map(\.index), [0])
        XCTAssertEqual(Array(chunk(1)).withUnsafeBytes { fetch.received(index: 1, bytes: $0, now: 0.05) }, .stored)
        XCTAssertEqual(fetch.due(now: 0.05).map(\.index), [4])
    }

    func testAStalledSourceIsLeftForTheNextAndABadChunkGoesToTheCoordinator() {
        let fetch = ChunkFetch(model: "policy", manifest: manifest(), sources: ["peer", "coordinator"], now: 0, reusing: nil)
        _ = fetch.due(now: 0)
        var corrupted = Array(chunk(2))
        corrupted[5] ^= 0xFF
        XCTAssertEqual(corrupted.withUnsafeBytes { fetch.received(index: 2, bytes: $0, now: 0.1) }, .badChecksum)
        XCTAssertEqual(fetch.due(now: 0.1).map { "\($0.index)@\($0.source)" }, ["2@coordinator"])
        // No chunk stored for longer than the timeout: everything in flight is asked of the next source.
        let later = fetch.due(now: ProtocolTiming.chunkFetchTimeoutSeconds + 0.01)
        XCTAssertEqual(fetch.source, 1)
        XCTAssertEqual(later.map(\.index), [0, 1, 2, 3])
        XCTAssertEqual(Set(later.map(\.source)), ["coordinator"])
        for i in 0..<10 { _ = Array(chunk(i)).withUnsafeBytes { fetch.received(index: i, bytes: $0, now: 3) } }
        XCTAssertTrue(fetch.assembler.isComplete)
        XCTAssertEqual(Array(fetch.assembler.buffer.prefix(bytes.count)), bytes)
        // The coordinator is the last source: a stall there keeps asking it.
        XCTAssertEqual(ChunkFetch(model: "policy", manifest: manifest(), sources: ["coordinator"], now: 0, reusing: nil).due(now: 10).first?.source, "coordinator")
    }

    func testPublishingCopiesAndChecksumsInOnePass() {
        var copy = [UInt8](repeating: 0, count: bytes.count)
        let viaCopy = bytes.withUnsafeBytes { src in copy.withUnsafeMutableBytes { WeightManifest(version: 2, copying: src, into: $0, chunkSize: 1000) } }
        XCTAssertEqual(viaCopy, manifest())
        XCTAssertEqual(copy, bytes)
    }
}

final class WorkerSourceTests: XCTestCase {
    /// A chunk server bound to every interface is announced as tcp://0.0.0.0:P; workers dial it on
    /// the host they reach the coordinator by.
    func testWildcardSourcesAreDialledOnTheCoordinatorsHost() throws {
        var options = Worker.Options(connect: "tcp://10.1.2.3:5555", id: "t")
        options.chunkBind = nil
        let worker = try Worker(options: options)
        XCTAssertEqual(worker.reachable("tcp://0.0.0.0:6000"), "tcp://10.1.2.3:6000")
        XCTAssertEqual(worker.reachable("tcp://*:6000"), "tcp://10.1.2.3:6000")
        XCTAssertEqual(worker.reachable("tcp://10.0.0.9:6000"), "tcp://10.0.0.9:6000")
    }
}
