import Alignment
import Foundation
import Logging
import Wire

/// A stage on the cluster: the items become tasks that workers pull; each accepted result goes to
/// `accept` at once (the caller appends it to the stage output), so nothing accepted waits in memory.
extension Coordinator {
    public struct Stage {
        public var name: String
        public var kind: StageKind
        public var items: [StageItem]
        /// Sampling for generate and revise; each worker adds its model's stop tokens.
        public var sampling: RolloutSettings
        /// nil: about two tasks per live worker, at most 16 items each (a good decode batch, and
        /// little work lost with a worker).
        public var itemsPerTask: Int?
        public init(name: String, kind: StageKind, items: [StageItem], sampling: RolloutSettings) {
            self.name = name; self.kind = kind; self.items = items; self.sampling = sampling
        }
    }

    /// Runs the stage until every item's result is accepted; `progress` gets (done, total) after each result.
    public func run(_ stage: Stage, accept: ([StageItemResult]) throws -> Void, progress: (Int, Int) -> Void = { _, _ in }) throws {
        guard !stage.items.isEmpty else { return }
        let live = max(scheduler.aliveWorkers.count, settings.expectedWorkers, 1)
        let perTask = stage.itemsPerTask ?? min(16, max(1, (stage.items.count + 2 * live - 1) / (2 * live)))
        scheduler.startStage(stage.name, prefix: runId, itemIds: stage.items.map(\.id), itemsPerTask: perTask)
        let items = Dictionary(stage.items.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        stageTask = { spec in
            var t = Charter_V1_Task()
            t.taskID = spec.id; t.kind = stage.kind.wire; t.stage = stage.name
            t.items = spec.itemIds.compactMap { items[$0]?.wire }
            t.sampling = Charter_V1_SamplingParams(stage: stage.sampling)
            t.models = stage.kind.models.map { name in
                var m = Charter_V1_ModelRef()
                m.name = name; m.version = UInt64(self.published[name]?.version ?? 0)
                return m
            }
            return t
        }
        metrics?.setStage(stage.name)
        defer { stageTask = nil; metrics?.setStage(nil) }
        var finished = 0
        var failure: Error?
        while !scheduler.isIterationComplete && failure == nil {
            if let problem = noHonestWorker { throw DataError(problem) }
            try serve(timeoutMilliseconds: ProtocolTiming.coordinatorPollMilliseconds) { worker, result in
                if let spec = self.scheduler.task(result.taskID), result.items.map(\.itemID) != spec.itemIds {
                    self.counts.mismatchedResults += 1
                    self.warn(worker, "mismatched result", "result for task \(result.taskID) from \(worker) does not hold the task's items; dropped, task queued again")
                    self.scheduler.requeue(result.taskID)
                    return
                }
                let results = result.items.map(StageItemResult.init(wire:))
                if let bad = results.lazy.compactMap({ r in items[r.id].flatMap { r.problem(for: $0, kind: stage.kind, maxNewTokens: stage.sampling.maxNewTokens) }.map { (r.id, $0) } }).first {
                    self.refuse(result, from: worker, because: "item \(bad.0): \(bad.1)")
                    return
                }
                guard self.scheduler.complete(result.taskID, from: worker, policyVersion: Int(clamping: result.policyVersion)) == .accepted else { return }
                do { try accept(results) } catch { failure = error; return }
                self.tokensByWorker[worker, default: 0] += result.items.reduce(0) { $0 + $1.textTokens.reduce(0) { $0 + Int($1) } }
                finished += result.items.count
                progress(finished, stage.items.count)
            }
        }
        if let failure { throw failure }
    }
}
