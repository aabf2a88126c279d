import Cluster
import XCTest

final class SchedulerTests: XCTestCase {
    func testWorkIsPulledSoAFastWorkerDoesMore() {
        let s = Scheduler(heartbeatTimeout: 3)
        s.register("fast", now: 0); s.register("slow", now: 0)
        s.startIteration(0, policyVersion: 0, promptIds: Array(0..<8), promptsPerTask: 1)
        var byWorker: [String: Int] = [:]
        let slowTask = s.nextTask(for: "slow", now: 0)!
        while let t = s.nextTask(for: "fast", now: 0.1) {
            XCTAssertEqual(s.complete(t.id, from: "fast", policyVersion: 0), .accepted)
            byWorker["fast", default: 0] += 1
        }
        XCTAssertEqual(s.complete(slowTask.id, from: "slow", policyVersion: 0), .accepted)
        XCTAssertEqual(byWorker["fast"], 7)
        XCTAssertTrue(s.isIterationComplete)
    }

    /// A quarantined worker's tasks go to the others at once, and it is given none again, in this
    /// iteration or the next, while it stays registered.
    func testAQuarantinedWorkerLosesItsTasksAndGetsNoMore() {
        let s = Scheduler(heartbeatTimeout: 3)
        s.register("bad", now: 0); s.register("good", now: 0)
        s.startIteration(0, policyVersion: 0, promptIds: Array(0..<4), promptsPerTask: 1)
        let held = [s.nextTask(for: "bad", now: 0)!.id, s.nextTask(for: "bad", now: 0)!.id]
        s.quarantine("bad")
        XCTAssertEqual(s.counters.redispatched, 2)
        XCTAssertNil(s.nextTask(for: "bad", now: 1))
        var done: [String] = []
        while let t = s.nextTask(for: "good", now: 1) {
            XCTAssertEqual(s.complete(t.id, from: "good", policyVersion: 0), .accepted)
            done.append(t.id)
        }
        XCTAssertTrue(s.isIterationComplete)
        XCTAssertEqual(done.prefix(2).sorted(), held.sorted(), "the quarantined worker's tasks first")
        s.startIteration(1, policyVersion: 1, promptIds: [0], promptsPerTask: 1)
        XCTAssertNil(s.nextTask(for: "bad", now: 2))
        XCTAssertEqual(s.aliveWorkers, ["bad", "good"])
    }

    /// A worker that stops heartbeating loses its tasks to the queue; every prompt is answered once.
    func testASilentWorkersTasksAreRedispatchedAndEveryPromptIsAnsweredOnce() {
        let s = Scheduler(heartbeatTimeout: 3)
        s.register("a", now: 0); s.register("b", now: 0)
        s.startIteration(4, policyVersion: 4, promptIds: Array(0..<6), promptsPerTask: 2)
        let lost = s.nextTask(for: "a", now: 0)!        // a dies holding this one
        var answered: [Int] = []
        let first = s.nextTask(for: "b", now: 1)!
        XCTAssertEqual(s.complete(first.id, from: "b", policyVersion: 4), .accepted); answered += first.promptIds
        s.heartbeat("b", now: 2.5)
        XCTAssertEqual(s.expire(now: 3.0), [])          // a was last seen at 0: exactly 3 s is not over the limit
        s.heartbeat("b", now: 3.4)
        XCTAssertEqual(s.expire(now: 3.5), ["a"])
        XCTAssertEqual(s.counters.redispatched, 1)
        XCTAssertEqual(s.aliveWorkers, ["b"])
        while let t = s.nextTask(for: "b", now: 4) {
            XCTAssertEqual(s.complete(t.id, from: "b", policyVersion: 4), .accepted)
            answered += t.promptIds
        }
        XCTAssertTrue(s.isIterationComplete)
        XCTAssertEqual(answered.sorted(), Array(0..<6))
        XCTAssertTrue(answered.contains(lost.promptIds[0]))
        // The dead worker's late result is a duplicate, dropped and counted.
        XCTAssertEqual(s.complete(lost.id, from: "a", policyVersion: 4), .duplicate)
        XCTAssertEqual(s.counters.duplicates, 1)
    }

    /// A refused result puts its task back in the queue: the iteration still completes.
    func testARefusedResultsTaskIsQueuedAgain() {
        let s = Scheduler(heartbeatTimeout: 3)
        s.register("w", now: 0)
        s.startIteration(0, policyVersion: 0, promptIds: [0, 1], promptsPerTask: 2)
        let t = s.nextTask(for: "w", now: 0)!
        XCTAssertNil(s.nextTask(for: "w", now: 0))
        s.requeue(t.id)
        s.requeue(t.id) // already waiting: queued once
        XCTAssertEqual(s.nextTask(for: "w", now: 1), t)
        XCTAssertNil(s.nextTask(for: "w", now: 1))
        XCTAssertEqual(s.complete(t.id, from: "w", policyVersion: 0), .accepted)
        XCTAssertTrue(s.isIterationComplete)
        s.requeue(t.id) // done: stays done
        XCTAssertNil(s.nextTask(for: "w", now: 2))
        XCTAssertEqual(s.counters.redispatched, 1)
    }

    /// A queued-again task that its first holder finishes after all leaves the queue; the queue
    /// keeps its order over thousands of tasks (it compacts itself as it is drained).
    func testAQueuedAgainTaskFinishedByItsHolderIsNotHandedOutAgain() {
        let s = Scheduler(heartbeatTimeout: 3)
        s.register("w", now: 0)
        s.startStage("generate", prefix: "p", itemIds: (0..<5000).map(String.init), itemsPerTask: 1)
        var handedOut: [String] = []
        let first = s.nextTask(for: "w", now: 0)!
        s.requeue(first.id)                                   // back at the front ...
        XCTAssertEqual(s.complete(first.id, from: "w", policyVersion: 0), .accepted) // ... but done
        while let t = s.nextTask(for: "w", now: 0) {
            handedOut += t.itemIds
            XCTAssertEqual(s.complete(t.id, from: "w", policyVersion: 0), .accepted)
        }
        XCTAssertEqual(handedOut, (1..<5000).map(String.init))
        XCTAssertTrue(s.isIterationComplete)
    }

    func testStaleAndUnknownResultsAreDroppedAndCounted() {
        let s = Scheduler(heartbeatTimeout: 3)
        s.register("w", now: 0)
        s.startIteration(1, policyVersion: 1, promptIds: [0, 1], promptsPerTask: 1)
        let t = s.nextTask(for: "w", now: 0)!
        s.startIteration(2, policyVersion: 2, promptIds: [0, 1], promptsPerTask: 1)
        XCTAssertEqual(s.complete(t.id, from: "w", policyVersion: 1), .stale)
        XCTAssertEqual(s.complete("9-9", from: "w", policyVersion: 2), .unknown)
        let u = s.nextTask(for: "w", now: 1)!
        XCTAssertEqual(s.complete(u.id, from: "w", policyVersion: 1), .stale) // right task, old weights
        XCTAssertEqual(s.counters, Scheduler.Counters(redispatched: 0, duplicates: 0, stale: 2, unknown: 1))
        XCTAssertEqual(s.complete(u.id, from: "w", policyVersion: 2), .accepted)
    }

    func testAnUnregisteredWorkerGetsNoTaskAndAGoodbyeReturnsItsLeases() {
        let s = Scheduler(heartbeatTimeout: 3)
        s.register("w", now: 0)
        s.startIteration(0, policyVersion: 0, promptIds: [0], promptsPerTask: 1)
        XCTAssertNil(s.nextTask(for: "stranger", now: 0))
        _ = s.nextTask(for: "w", now: 0)
        s.remove("w")
        XCTAssertEqual(s.counters.redispatched, 1)
        s.register("v", now: 1)
        XCTAssertNotNil(s.nextTask(for: "v", now: 1))
    }

    /// A stage's items in tasks named after the coordinator process: a task id of another process
    /// is unknown, every item is dispatched once unless its worker dies, and counted.
    func testStageItemsAreCutInOrderUnderTheProcessPrefixAndCounted() {
        let s = Scheduler(heartbeatTimeout: 3)
        s.register("a", now: 0); s.register("b", now: 0)
        s.startStage("generate", prefix: "run-2", itemIds: ["x", "y", "z", "w", "v"], itemsPerTask: 2)
        let first = s.nextTask(for: "a", now: 0)!
        XCTAssertEqual(first.id, "run-2/generate-0")
        XCTAssertEqual(first.itemIds, ["x", "y"])
        XCTAssertEqual(s.complete("run-1/generate-0", from: "b", policyVersion: 0), .unknown, "a result for an earlier process")
        XCTAssertEqual(s.complete(first.id, from: "a", policyVersion: 0), .accepted)
        var items = first.itemIds
        _ = s.nextTask(for: "b", now: 1)                  // b dies holding it
        s.heartbeat("a", now: 4.5)
        XCTAssertEqual(s.expire(now: 4.5), ["b"])
        while let t = s.nextTask(for: "a", now: 4) {
            XCTAssertEqual(s.complete(t.id, from: "a", policyVersion: 0), .accepted)
            items += t.itemIds
        }
        XCTAssertTrue(s.isIterationComplete)
        XCTAssertEqual(items.sorted(), ["v", "w", "x", "y", "z"])
        XCTAssertEqual(s.counters.itemsDispatched, 7, "five items and the two of the dead worker's task again")
        XCTAssertEqual(s.counters.unknown, 1)
    }

    /// A worker that keeps a task and heartbeats without answering: once the queue is empty, an
    /// idle worker gets a copy of it after the straggler limit, and the first result is taken.
    func testAHoardedTaskIsCopiedToAnIdleWorkerAfterTheStragglerLimit() {
        let s = Scheduler(heartbeatTimeout: 3, stragglerFloor: 5)
        s.register("hoarder", now: 0); s.register("honest", now: 0)
        s.startIteration(0, policyVersion: 0, promptIds: [0, 1], promptsPerTask: 1)
        let hoarded = s.nextTask(for: "hoarder", now: 0)!
        let other = s.nextTask(for: "honest", now: 0)!
        XCTAssertEqual(s.complete(other.id, from: "honest", policyVersion: 0), .accepted)
        for t in stride(from: 0.5, through: 4.5, by: 1.0) {
            s.heartbeat("hoarder", now: t)
            XCTAssertNil(s.nextTask(for: "honest", now: t), "within the straggler limit at \(t) s")
        }
        s.heartbeat("hoarder", now: 5)
        XCTAssertEqual(s.nextTask(for: "honest", now: 5)?.id, hoarded.id)
        XCTAssertNil(s.nextTask(for: "honest", now: 6), "one copy a task")
        XCTAssertEqual(s.counters.speculative, 1)
        XCTAssertEqual(s.complete(hoarded.id, from: "honest", policyVersion: 0), .accepted)
        XCTAssertTrue(s.isIterationComplete)
        XCTAssertEqual(s.complete(hoarded.id, from: "hoarder", policyVersion: 0), .duplicate)
    }

    /// A quarantined worker's results are not believed again, even for a task it was given.
    func testAQuarantinedWorkersLaterResultsAreDropped() {
        let s = Scheduler(heartbeatTimeout: 100)
        s.register("liar", now: 0); s.register("honest", now: 0)
        s.startIteration(0, policyVersion: 0, promptIds: [0, 1], promptsPerTask: 1)
        let a = s.nextTask(for: "liar", now: 0)!, b = s.nextTask(for: "liar", now: 0)!
        s.quarantine("liar")
        XCTAssertEqual(s.complete(a.id, from: "liar", policyVersion: 0), .quarantined)
        XCTAssertEqual(s.counters.fromQuarantined, 1)
        let again = [s.nextTask(for: "honest", now: 1)?.id, s.nextTask(for: "honest", now: 1)?.id].compactMap { $0 }
        XCTAssertEqual(Set(again), [a.id, b.id], "its tasks went back to the queue")
        XCTAssertFalse(s.isIterationComplete)
    }

    /// Peers that hold a task (or a copy) get no copy; a copy that straggles too is copied again
    /// after the limit, so hoarders taking the copies cannot stall the iteration either.
    func testHoardersCannotHoldTheCopiesEither() {
        let s = Scheduler(heartbeatTimeout: 100, stragglerFloor: 5)
        for w in ["h1", "h2", "h3", "honest"] { s.register(w, now: 0) }
        s.startIteration(0, policyVersion: 0, promptIds: [0, 1], promptsPerTask: 1)
        let a = s.nextTask(for: "h1", now: 0)!, b = s.nextTask(for: "h2", now: 0)!
        XCTAssertNil(s.nextTask(for: "h1", now: 5), "a worker with a task of its own gets no copy")
        XCTAssertEqual(s.nextTask(for: "h3", now: 5)?.id, a.id)
        XCTAssertEqual(s.nextTask(for: "honest", now: 5)?.id, b.id, "a's copy is fresh: b is copied")
        XCTAssertEqual(s.complete(b.id, from: "honest", policyVersion: 0), .accepted)
        XCTAssertNil(s.nextTask(for: "honest", now: 9.9), "a's copy is younger than the limit")
        XCTAssertEqual(s.nextTask(for: "honest", now: 10)?.id, a.id)
        XCTAssertEqual(s.complete(a.id, from: "honest", policyVersion: 0), .accepted)
        XCTAssertTrue(s.isIterationComplete)
        XCTAssertEqual(s.counters.speculative, 3)
    }

    /// The limit follows the work: twice the median time from lease to result, at least the floor.
    func testTheStragglerLimitIsTwiceTheMedianTaskTime() {
        let s = Scheduler(heartbeatTimeout: 100, stragglerFloor: 5)
        s.register("w", now: 0)
        s.startIteration(0, policyVersion: 0, promptIds: [0, 1, 2], promptsPerTask: 1)
        XCTAssertEqual(s.stragglerLimit, 5, "nothing measured yet: the floor")
        var now = 0.0
        for seconds in [1.0, 10, 12] {
            let t = s.nextTask(for: "w", now: now)!
            now += seconds
            s.heartbeat("w", now: now)
            XCTAssertEqual(s.complete(t.id, from: "w", policyVersion: 0), .accepted)
        }
        XCTAssertEqual(s.stragglerLimit, 20)
    }

    /// When the holder of a copied task dies the copy carries on (nothing is queued again); when
    /// the copy's holder dies the task simply has no copy and may be copied again.
    func testACopySurvivesItsOriginalHoldersDeath() {
        let s = Scheduler(heartbeatTimeout: 3, stragglerFloor: 1)
        s.register("a", now: 0); s.register("b", now: 0); s.register("c", now: 0)
        s.startIteration(0, policyVersion: 0, promptIds: [0], promptsPerTask: 1)
        let t = s.nextTask(for: "a", now: 0)!
        XCTAssertEqual(s.nextTask(for: "b", now: 2)?.id, t.id)
        s.remove("b")
        XCTAssertEqual(s.nextTask(for: "c", now: 2)?.id, t.id, "the dead copy's task is copied again")
        s.remove("a")
        XCTAssertEqual(s.counters.redispatched, 0, "c's copy carries on")
        XCTAssertNil(s.nextTask(for: "c", now: 2.5))
        XCTAssertEqual(s.complete(t.id, from: "c", policyVersion: 0), .accepted)
        XCTAssertTrue(s.isIterationComplete)
    }
}

final class WeightChunkTests: XCTestCase {
    func testCRC32CKnownValue() {
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283) // the standard check value
    }

    /// The SSE4.2 checksum against a bitwise one written from the definition (reflected 0x82F63B78),
    /// on every length up to 40 (the 8-byte loop and its tail) and at unaligned starts, and continued.
    func testCRC32CMatchesTheBitwiseDefinition() {
        func reference(_ bytes: ArraySlice<UInt8>) -> UInt32 {
            var c: UInt32 = 0xFFFF_FFFF
            for b in bytes {
                c ^= UInt32(b)
                for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            }
            return ~c
        }
        var rng = SystemRandomNumberGenerator()
        let data = (0..<64).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for start in 0..<8 {
            for n in 0...40 {
                let slice = data[start ..< start + n]
                XCTAssertEqual(Array(slice).withUnsafeBytes { CRC32C.checksum($0) }, reference(slice), "start \(start) length \(n)")
            }
        }
        let whole = data.withUnsafeBytes { CRC32C.checksum($0) }
        let first = data[..<13].withUnsafeBytes { CRC32C.checksum($0) }
        XCTAssertEqual(data[13...].withUnsafeBytes { CRC32C.checksum($0, seed: first) }, whole)
    }

    func testChunksReassembleAndCorruptionIsCaught() {
        let source = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let manifest = source.withUnsafeBytes { WeightManifest(version: 3, buffer: $0, chunkSize: 4096) }
        XCTAssertEqual(manifest.chunks.map(\.size), [4096, 4096, 1808])
        let assembler = WeightAssembler(manifest: manifest)
        source.withUnsafeBytes { all in
            var corrupted = Array(all[4096 ..< 8192])
            corrupted[10] ^= 1
            XCTAssertEqual(corrupted.withUnsafeBytes { assembler.accept(index: 1, bytes: $0) }, .badChecksum)
            XCTAssertEqual(assembler.accept(index: 0, bytes: UnsafeRawBufferPointer(rebasing: all[0 ..< 4096])), .stored)
            XCTAssertEqual(assembler.accept(index: 0, bytes: UnsafeRawBufferPointer(rebasing: all[0 ..< 4096])), .alreadyHeld)
            XCTAssertEqual(assembler.accept(index: 2, bytes: UnsafeRawBufferPointer(rebasing: all[8192 ..< 9000])), .wrongSize)
            XCTAssertEqual(assembler.accept(index: 7, bytes: UnsafeRawBufferPointer(rebasing: all[0 ..< 10])), .unknownChunk)
            XCTAssertFalse(assembler.isComplete)
            XCTAssertEqual(assembler.missing, [1, 2])
            XCTAssertEqual(assembler.accept(index: 1, bytes: UnsafeRawBufferPointer(rebasing: all[4096 ..< 8192])), .stored)
            XCTAssertEqual(assembler.accept(index: 2, bytes: UnsafeRawBufferPointer(rebasing: all[8192...])), .stored)
        }
        XCTAssertTrue(assembler.isComplete)
        XCTAssertEqual(Array(assembler.buffer.prefix(10_000)), source)
        var tampered = manifest.chunks
        tampered[1] = WeightManifest.Chunk(index: 1, offset: 4096, size: 4096, crc32c: tampered[1].crc32c ^ 1)
        XCTAssertNotEqual(WeightManifest(version: 3, totalBytes: 10_000, chunks: tampered).checksum, manifest.checksum)
    }
}
