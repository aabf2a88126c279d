import Engine

/// Log-probs of each sample's response tokens under a frozen model, from the inference engine. Its
/// result for a sequence does not depend on the other sequences in the batch (the kernels are batch
/// invariant), so batching several samples per pass is as good as one at a time: a worker's results
/// still do not depend on how a run's prompts were cut into tasks.
public enum ReferenceLogprobs {
    /// `group` samples go per pass, which bounds the (tokens, vocab) logits held at once;
    /// `between` runs after each pass (a worker heartbeats there). The log-probs are of the
    /// distribution at `temperature` (softmax of logits / temperature), as the samples were drawn.
    public static func compute(_ model: Transformer, samples: [Sample], temperature: Float = 1, group: Int = 4,
                               between: () -> Void = {}) throws -> [[Float]] {
        precondition(group >= 1, "a pass holds at least one sample")
        precondition(temperature > 0, "log-probs need a temperature above 0")
        let vocab = model.config.vocab
        var out: [[Float]] = []
        for start in stride(from: 0, to: samples.count, by: group) {
            let batch = samples[start ..< min(start + group, samples.count)]
            let items = batch.map { s in (cache: model.makeCache(capacity: s.prompt.count + s.response.count), tokens: s.prompt + s.response) }
            var logits = try model.forward(items, outputs: .everyToken)
            if temperature != 1 { logits.withUnsafeMutableBufferPointer { VectorMath.scale($0.baseAddress!, 1 / temperature, $0.count) } }
            var first = 0 // the batch row of each sample's first token
            logits.withUnsafeBufferPointer { l in
                for s in batch {
                    // The token at position p is predicted by the row of position p - 1.
                    out.append(s.response.enumerated().map { t, token in
                        let row = l.baseAddress! + (first + s.prompt.count - 1 + t) * vocab
                        return row[Int(token)] - VectorMath.logSumExp(row, vocab)
                    })
                    first += s.prompt.count + s.response.count
                }
            }
            between()
        }
        return out
    }
}
