import Alignment
@testable import Cluster
import XCTest

/// A version of a model made of several buffers (a reward model: trunk, then head), as the
/// coordinator publishes it and a worker serves it to peers.
final class ModelVersionTests: XCTestCase {
    func buffers(_ sizes: [Int]) -> [UnsafeMutableBufferPointer<Float>] {
        var next: Float = 0
        return sizes.map { n in
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
            for i in 0..<n { b[i] = next; next += 1 }
            addTeardownBlock { b.deallocate() }
            return b
        }
    }

    func testAVersionIsItsBuffersEndToEndAndOnlyHoldersOfItTakeTasks() throws {
        var settings = Coordinator.Settings()
        settings.bind = "tcp://127.0.0.1:*"
        settings.chunkSize = 64 // bytes: the head's 5 floats straddle a chunk edge
        let coordinator = try Coordinator(settings: settings, configText: "", rollout: RolloutSettings(), runId: "t", logger: .silent)
        let parts = buffers([30, 5])
        coordinator.publish(ModelName.helpful, buffers: parts, version: 1)
        let whole = (0..<35).map(Float.init)
        let expected = whole.withUnsafeBytes { WeightManifest(version: 1, buffer: $0, chunkSize: 64) }
        XCTAssertEqual(coordinator.published[ModelName.helpful]?.manifest, expected)
        XCTAssertEqual(coordinator.published[ModelName.helpful]?.manifest?.chunks.count, 3) // 140 bytes
        coordinator.held["w"] = [ModelName.helpful: 0]
        XCTAssertFalse(coordinator.holdsCurrentModels("w"), "a worker without version 1 takes no task")
        coordinator.held["w"] = [ModelName.helpful: 1]
        XCTAssertTrue(coordinator.holdsCurrentModels("w"), "policy version 0 needs no confirmation")
    }

    func testAChunkAcrossTwoBuffersIsServedWhole() {
        let parts = buffers([30, 5])
        let bytes = parts.bytes(in: 112 ..< 140) // floats 28 ..< 35: the trunk's last two, the head
        let floats = bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        XCTAssertEqual(floats, (28..<35).map(Float.init))
        XCTAssertEqual(parts.bytes(in: 0 ..< 8).count, 8)
    }
}
