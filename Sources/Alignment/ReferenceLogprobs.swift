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
            // The token at position p is predicted by the row of position p - 1: only those rows.
            let wanted = batch.map { s in (s.prompt.count - 1) ..< (s.prompt.count - 1 + s.response.count) }
            var logits = try model.forward(items, outputs: .tokens(wanted))
            if temperature != 1 { logits.withUnsafeMutableBufferPointer { VectorMath.scale($0.baseAddress!, 1 / temperature, $0.count) } }
            var first = 0 // the logits row of each sample's first response token
            logits.withUnsafeBufferPointer { l in
                for s in batch {
                    out.append(s.response.enumerated().map { t, token in
                        let row = l.baseAddress! + (first + t) * vocab
                        return row[Int(token)] - VectorMath.logSumExp(row, vocab)
                    })
                    first += s.response.count
                }
            }
            between()
        }
        return out
    }
}
