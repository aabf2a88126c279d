import Alignment
import Engine
import Formats
import Logging
import Wire

extension Worker {
    /// A stage task's results, one per item. A task this worker cannot do at all (score without
    /// reward models, a kind it does not know) is answered with that error on every item, so the
    /// stage records why instead of waiting for a result that would never come.
    func stageResult(_ task: Charter_V1_Task) throws -> Charter_V1_TaskResult {
        guard let policy, let base else { throw WorkerError("a task arrived before the run configuration") }
        var result = Charter_V1_TaskResult()
        result.taskID = task.taskID
        result.policyVersion = task.policyVersion
        let items = task.items.map(StageItem.init(wire:))
        do {
            guard let kind = StageKind(wire: task.kind) else { throw StageItemError("this worker does not know task kind \(task.kind.rawValue)") }
            var sampling = rollout // the model's stop tokens, unless the task names its own
            sampling.temperature = task.sampling.temperature
            sampling.topK = Int(task.sampling.topK)
            sampling.topP = task.sampling.topP
            sampling.maxNewTokens = Int(task.sampling.maxNewTokens)
            if !task.sampling.stopTokens.isEmpty { sampling.stopTokens = task.sampling.stopTokens }
            var work = StageWork(policy: try Transformer(weights: policy), tokenizer: base.tokenizer, sampling: sampling,
                                 feedback: kind == .options ? try judge() : nil, scorer: scorer)
            work.tick = { [self] in stayInTouch() }
            result.items = try work.run(kind, items).map(\.wire)
        } catch {
            logger.warning("task \(task.taskID) failed: \(error)")
            result.items = items.map { i in
                var r = StageItemResult(id: i.id)
                r.error = "\(error)"
                return r.wire
            }
        }
        return result
    }

    /// The judge: model.feedback, or the base policy when the configuration names none.
    func judge() throws -> Transformer {
        if let feedback { return feedback }
        guard let config, let base else { throw WorkerError("a task arrived before the run configuration") }
        let model = try config.feedback.map { try Transformer(weights: try ModelLoader.load($0).weights) } ?? Transformer(weights: base.weights)
        feedback = model
        return model
    }

    /// The judge with weights of its own, which a new feedback version can replace without touching
    /// the policy it may share them with.
    func ownJudge() throws -> Transformer {
        let judge = try judge()
        guard let base, judge.weights === base.weights else { return judge }
        feedback = try Transformer(weights: base.weights.copy())
        return feedback!
    }
}
