import Alignment
import Foundation

/// The judge's answers by request: a JSONL file of `{"id": KEY, "option_logprobs": [...]}`, KEY a
/// hash of the endpoint and the request body. Appended as answers arrive (fsynced in batches, as a
/// stage output is) and read back whole when a run starts, so no request is sent twice.
final class JudgeCache: @unchecked Sendable {
    let output: StageOutput
    var answers: [String: [Float]] = [:]
    let lock = NSLock()

    init(path: String) throws {
        output = try StageOutput(path: path, resume: true)
        for (n, o) in try JSONLines.read(path) {
            guard let id = o["id"] as? String, let lp = (o["option_logprobs"] as? [NSNumber])?.map(\.floatValue) else {
                throw JSONLines.error(path, n, "a judge cache line needs \"id\" and \"option_logprobs\"")
            }
            answers[id] = lp
        }
    }

    /// FNV-1a of the endpoint and the body, in hex.
    static func key(_ endpoint: String, _ body: Data) -> String {
        String(StageInput.fnv1a(Data(endpoint.utf8) + [0] + body), radix: 16)
    }

    subscript(key: String) -> [Float]? { lock.withLock { answers[key] } }

    func store(_ key: String, _ logprobs: [Float]) throws {
        try lock.withLock {
            answers[key] = logprobs
            try output.append([["id": key, "option_logprobs": logprobs]])
        }
    }

    func sync() throws { try lock.withLock { try output.sync() } }
}
