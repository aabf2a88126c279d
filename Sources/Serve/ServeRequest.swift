import Engine
import Formats
import Foundation
import Tokenizer

/// A request the server refuses: HTTP 400 with OpenAI's error body, `message` naming the field.
public struct ServeError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// `/v1/completions` or `/v1/chat/completions`, read and checked: the prompt as token ids, the
/// sampling settings, what to report.
public struct ServeRequest: Sendable {
    public enum API: Sendable { case completions, chat }

    public var api: API
    public var prompt: [Int32]
    public var params: SamplingParams
    public var stream = false
    /// How many alternatives to list per token (0: only the chosen token's log-prob); nil: no log-probs.
    public var topLogprobs: Int?
    /// Texts that end the answer where they appear (not included).
    public var stop: [String] = []

    /// The most alternatives a request may ask for per token (OpenAI's limit for chat is 20).
    public static let maxTopLogprobs = 20

    /// Reads a JSON body. `stopTokens`: the model's own end tokens; `context`: its context length.
    public static func parse(_ body: Data, api: API, tokenizer: BPETokenizer, stopTokens: Set<Int32>, context: Int) throws(ServeError) -> ServeRequest {
        guard let object = try? JSONSerialization.jsonObject(with: body), let json = object as? [String: Any] else {
            throw ServeError("the body is not a JSON object")
        }
        let text: String
        switch api {
        case .completions:
            guard let prompt = json["prompt"] as? String else { throw ServeError("prompt: a string is required (token lists and batches of prompts are not supported)") }
            text = prompt
        case .chat:
            guard let list = json["messages"] as? [Any], !list.isEmpty else { throw ServeError("messages: a non-empty list is required") }
            var messages: [ChatMessage] = []
            for (i, item) in list.enumerated() {
                guard let m = item as? [String: Any], let role = m["role"] as? String, let content = m["content"] as? String else {
                    throw ServeError("messages[\(i)]: needs a role and a string content")
                }
                guard ["system", "user", "assistant"].contains(role) else { throw ServeError("messages[\(i)].role: \(role) is not system, user or assistant") }
                messages.append(ChatMessage(role: role, content: content))
            }
            do { text = try ChatTemplate.render(messages) } catch { throw ServeError("messages: \(error)") }
        }
        let prompt: [Int32]
        do { prompt = try tokenizer.encode(text) } catch { throw ServeError("prompt: \(error)") }
        guard !prompt.isEmpty else { throw ServeError("prompt: empty") }
        guard prompt.count < context else { throw ServeError("prompt: \(prompt.count) tokens do not fit the model's context of \(context)") }

        var r = ServeRequest(api: api, prompt: prompt, params: SamplingParams(stopTokens: stopTokens, seed: UInt64.random(in: 0 ... .max)))
        let room = context - prompt.count
        // OpenAI's defaults: 16 tokens for completions; a chat answer may run to the end of the context.
        r.params.maxNewTokens = try int(json, "max_tokens", default: api == .completions ? 16 : room, range: 1 ... Int(Int32.max))
        r.params.maxNewTokens = min(r.params.maxNewTokens, room)
        r.params.temperature = Float(try number(json, "temperature", default: 1, range: 0 ... 100))
        r.params.topP = Float(try number(json, "top_p", default: 1, range: 0 ... 1))
        guard r.params.topP > 0 else { throw ServeError("top_p: must be above 0") }
        r.params.topK = try int(json, "top_k", default: 0, range: 0 ... Int(Int32.max))
        if json["seed"] != nil { r.params.seed = UInt64(bitPattern: Int64(try int(json, "seed", default: 0, range: Int(Int64.min) ... Int(Int64.max)))) }
        guard try int(json, "n", default: 1, range: 1 ... Int(Int32.max)) == 1 else { throw ServeError("n: only 1 choice per request is supported") }
        if let s = json["stream"] { guard let b = s as? Bool else { throw ServeError("stream: must be true or false") }; r.stream = b }
        if api == .completions, let e = json["echo"] as? Bool, e { throw ServeError("echo: true is not supported") }
        switch json["stop"] {
        case nil, is NSNull: break
        case let s as String: r.stop = [s]
        case let list as [Any]:
            r.stop = try list.map { item throws(ServeError) -> String in
                guard let s = item as? String, !s.isEmpty else { throw ServeError("stop: a string or a list of non-empty strings") }
                return s
            }
        default: throw ServeError("stop: a string or a list of non-empty strings")
        }
        switch api {
        case .completions:
            if json["logprobs"] != nil && !(json["logprobs"] is NSNull) {
                r.topLogprobs = try int(json, "logprobs", default: 0, range: 0 ... maxTopLogprobs)
            }
        case .chat:
            if let want = json["logprobs"], !(want is NSNull) {
                guard let b = want as? NSNumber, JSONValue.isBool(b) else { throw ServeError("logprobs: must be true or false") }
                if b.boolValue { r.topLogprobs = try int(json, "top_logprobs", default: 0, range: 0 ... maxTopLogprobs) }
            }
        }
        return r
    }

    static func number(_ json: [String: Any], _ key: String, default value: Double, range: ClosedRange<Double>) throws(ServeError) -> Double {
        guard let raw = json[key], !(raw is NSNull) else { return value }
        guard let n = raw as? NSNumber, !JSONValue.isBool(n), n.doubleValue.isFinite, range.contains(n.doubleValue) else {
            throw ServeError("\(key): a number from \(range.lowerBound) to \(range.upperBound) is required")
        }
        return n.doubleValue
    }

    static func int(_ json: [String: Any], _ key: String, default value: Int, range: ClosedRange<Int>) throws(ServeError) -> Int {
        guard let raw = json[key], !(raw is NSNull) else { return value }
        guard let n = raw as? NSNumber, !JSONValue.isBool(n), n.doubleValue == n.doubleValue.rounded(),
              abs(n.doubleValue) < 9.2e18, range.contains(n.intValue) else {
            throw ServeError("\(key): a whole number from \(range.lowerBound) to \(range.upperBound) is required")
        }
        return n.intValue
    }
}
