import Engine
import Foundation

/// One request on its way through the engine. The closures run on the engine's thread.
public final class ServeJob: @unchecked Sendable {
    let request: ServeRequest
    /// Each token as chosen, with the request's top alternatives (id, raw log-prob), best first.
    let onToken: (SampledToken, [(id: Int32, logprob: Float)]) -> Void
    /// Asked after each token: true ends the answer there (a stop string, a client gone).
    let shouldEnd: () -> Bool
    let onFinish: (Result<GenerationResult, any Error>) -> Void

    public init(request: ServeRequest, onToken: @escaping (SampledToken, [(id: Int32, logprob: Float)]) -> Void,
                shouldEnd: @escaping () -> Bool, onFinish: @escaping (Result<GenerationResult, any Error>) -> Void) {
        self.request = request; self.onToken = onToken; self.shouldEnd = shouldEnd; self.onFinish = onFinish
    }
}

/// The engine's thread: takes the requests waiting (at most `maxBatch`) and generates them as one
/// batch, each with its own settings and seed; requests that arrive meanwhile wait for the next
/// batch. The engine's rows are batch invariant, so an answer does not depend on its company.
public final class EngineQueue: @unchecked Sendable {
    let generator: Generator
    let maxBatch: Int
    let condition = NSCondition()
    var waiting: [ServeJob] = []

    public init(generator: Generator, maxBatch: Int) {
        self.generator = generator; self.maxBatch = maxBatch
        let thread = Thread { [self] in loop() }
        thread.stackSize = 16 << 20
        thread.name = "engine"
        thread.start()
    }

    public func submit(_ job: ServeJob) {
        condition.lock()
        waiting.append(job)
        condition.signal()
        condition.unlock()
    }

    func loop() {
        while true {
            condition.lock()
            while waiting.isEmpty { condition.wait() }
            let batch = Array(waiting.prefix(maxBatch))
            waiting.removeFirst(batch.count)
            condition.unlock()
            run(batch)
        }
    }

    func run(_ batch: [ServeJob]) {
        let vocab = generator.model.config.vocab
        var tops = [[(id: Int32, logprob: Float)]](repeating: [], count: batch.count)
        do {
            let results = try generator.generate(
                batch.map { GenerationRequest(prompt: $0.request.prompt, params: $0.request.params) },
                onLogits: { i, row in
                    if let n = batch[i].request.topLogprobs, n > 0 { tops[i] = Self.top(n, of: row, vocab: vocab) }
                },
                onToken: { i, t in batch[i].onToken(t, tops[i]) },
                ended: { i in batch[i].shouldEnd() })
            for (job, r) in zip(batch, results) { job.onFinish(.success(r)) }
        } catch {
            for job in batch { job.onFinish(.failure(error)) }
        }
    }

    /// The `n` most likely tokens of a row of raw logits, with their log-probabilities, best first
    /// (ties: the lower id first).
    static func top(_ n: Int, of row: UnsafePointer<Float>, vocab: Int) -> [(id: Int32, logprob: Float)] {
        let logZ = VectorMath.logSumExp(row, vocab)
        var best: [(id: Int32, logit: Float)] = []
        for v in 0..<vocab {
            let x = row[v]
            guard best.count < n || x > best[best.count - 1].logit else { continue }
            let at = best.firstIndex { x > $0.logit } ?? best.count
            best.insert((Int32(v), x), at: at)
            if best.count > n { best.removeLast() }
        }
        return best.map { ($0.id, $0.logit - logZ) }
    }
}
