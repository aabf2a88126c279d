import Alignment
import Foundation

/// The judge's answers by request: a JSONL file of `{"id": KEY, "option_logprobs": [...]}` (a
/// question) or `{"id": KEY, "text": "...", "truncated": BOOL}` (a rationale), KEY a hash of the
/// endpoint and the request body. Appended as answers arrive (fsynced in batches, as a stage output
/// is) and read back whole when a run starts, so no request is sent twice.
final class JudgeCache: @unchecked Sendable {
    let output: StageOutput
    var answers: [String: [Float]] = [:]
    var texts: [String: (text: String, truncated: Bool)] = [:]
    let lock = NSLock()

    init(path: String) throws {
        output = try StageOutput(path: path, resume: true)
        for (n, o) in try JSONLines.read(path) {
            if let id = o["id"] as? String, let lp = (o["option_logprobs"] as? [NSNumber])?.map(\.floatValue) {
                answers[id] = lp
            } else if let id = o["id"] as? String, let text = o["text"] as? String, let truncated = o["truncated"] as? Bool {
                texts[id] = (text, truncated)
            } else {
                throw JSONLines.error(path, n, "a judge cache line needs \"id\" and \"option_logprobs\", or \"id\", \"text\" and \"truncated\"")
            }
        }
    }

    /// FNV-1a of the endpoint and the body, in hex.
    static func key(_ endpoint: String, _ body: Data) -> String {
        String(StageInput.fnv1a(Data(endpoint.utf8) + [0] + body), radix: 16)
    }

    subscript(key: String) -> [Float]? { lock.withLock { answers[key] } }

    func text(_ key: String) -> (text: String, truncated: Bool)? { lock.withLock { texts[key] } }

    func store(_ key: String, text: (text: String, truncated: Bool)) throws {
        try lock.withLock {
            texts[key] = text
            try output.append([["id": key, "text": text.text, "truncated": text.truncated]])
        }
    }

    func store(_ key: String, _ logprobs: [Float]) throws {
        try lock.withLock {
            answers[key] = logprobs
            try output.append([["id": key, "option_logprobs": logprobs]])
        }
    }

    func sync() throws { try lock.withLock { try output.sync() } }
}
