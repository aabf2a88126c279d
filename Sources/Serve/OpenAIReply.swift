import Engine
import Foundation
import Tokenizer

/// The answer to one request as it grows: its text (cut at a stop string), its log-probs, and the
/// JSON OpenAI's clients read, whole or as server-sent events. Used on the engine's thread only.
final class OpenAIReply {
    struct Entry {
        var token: String, bytes: [UInt8], logprob: Float, offset: Int
        var top: [(token: String, bytes: [UInt8], logprob: Float)]
    }

    let request: ServeRequest
    let tokenizer: BPETokenizer
    let model: String, id: String, created: Int
    var utf8 = UTF8Stream()
    /// The visible text: the model's end tokens are not in it, and it ends before a stop string.
    var text = ""
    var streamedBytes = 0
    var stopped = false
    var entries: [Entry] = []
    var completionTokens = 0
    /// A stream holds back this many bytes (less than the longest stop string), which may begin one.
    let holdBack: Int

    init(request: ServeRequest, tokenizer: BPETokenizer, model: String, id: String) {
        self.request = request; self.tokenizer = tokenizer; self.model = model; self.id = id
        created = Int(Date().timeIntervalSince1970)
        holdBack = max(0, (request.stop.map(\.utf8.count).max() ?? 0) - 1)
    }

    /// Takes a token; returns the server-sent event it releases when streaming.
    func add(_ t: SampledToken, top: [(id: Int32, logprob: Float)]) -> String? {
        completionTokens += 1
        guard !stopped, !request.params.stopTokens.contains(t.id) else { return nil }
        let bytes = (try? tokenizer.decodeBytes([t.id])) ?? []
        let before = entries.count
        if request.topLogprobs != nil {
            entries.append(Entry(token: String(decoding: bytes, as: UTF8.self), bytes: bytes, logprob: t.rawLogprob, offset: text.utf8.count,
                                 top: top.map { alt in
                                     let b = (try? tokenizer.decodeBytes([alt.id])) ?? []
                                     return (String(decoding: b, as: UTF8.self), b, alt.logprob)
                                 }))
        }
        text += String(decoding: utf8.push(bytes), as: UTF8.self)
        if let cut = request.stop.compactMap({ text.range(of: $0)?.lowerBound }).min() {
            text = String(text[..<cut])
            stopped = true
        }
        guard request.stream else { return nil }
        return event(release(upTo: stopped ? text.utf8.count : text.utf8.count - holdBack), entries: Array(entries[before...]), finish: nil)
    }

    /// The last event(s) of a stream, or the whole answer.
    func finish(_ result: GenerationResult) -> String {
        if !stopped { text += String(decoding: utf8.flush(), as: UTF8.self) }
        let reason = stopped ? "stop" : result.finishReason.rawValue
        if request.stream { return event(release(upTo: text.utf8.count), entries: [], finish: reason) + "data: [DONE]\n\n" }
        return json(object(text: text, entries: entries, finish: reason, whole: true))
    }

    /// The first event of a chat stream: the assistant's role.
    func opening() -> String? {
        guard request.stream, request.api == .chat else { return nil }
        return "data: " + json(["id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                                 "choices": [["index": 0, "delta": ["role": "assistant", "content": ""], "finish_reason": NSNull()]]]) + "\n\n"
    }

    /// The text from the last release up to `end` bytes (moved back to a character's start).
    func release(upTo end: Int) -> String {
        let bytes = Array(text.utf8)
        var cut = max(streamedBytes, min(end, bytes.count))
        while cut > streamedBytes && cut < bytes.count && bytes[cut] & 0xC0 == 0x80 { cut -= 1 }
        defer { streamedBytes = cut }
        return String(decoding: bytes[streamedBytes ..< cut], as: UTF8.self)
    }

    func event(_ piece: String, entries: [Entry], finish: String?) -> String {
        "data: " + json(object(text: piece, entries: entries, finish: finish, whole: false)) + "\n\n"
    }

    func object(text: String, entries: [Entry], finish: String?, whole: Bool) -> [String: Any] {
        var choice: [String: Any] = ["index": 0, "finish_reason": finish ?? NSNull(), "logprobs": NSNull()]
        if request.topLogprobs != nil && (!entries.isEmpty || whole) { choice["logprobs"] = logprobs(entries) }
        var o: [String: Any] = ["id": id, "created": created, "model": model]
        switch (request.api, whole) {
        case (.completions, _):
            o["object"] = "text_completion"
            choice["text"] = text
        case (.chat, true):
            o["object"] = "chat.completion"
            choice["message"] = ["role": "assistant", "content": text]
        case (.chat, false):
            o["object"] = "chat.completion.chunk"
            choice["delta"] = finish == nil || !text.isEmpty ? ["content": text] : [String: Any]()
        }
        o["choices"] = [choice]
        if whole { o["usage"] = ["prompt_tokens": request.prompt.count, "completion_tokens": completionTokens, "total_tokens": request.prompt.count + completionTokens] }
        return o
    }

    /// OpenAI's two shapes: completions lists tokens and maps of alternatives; chat lists objects.
    func logprobs(_ entries: [Entry]) -> [String: Any] {
        switch request.api {
        case .completions:
            let tops: Any = (request.topLogprobs ?? 0) > 0
                ? entries.map { e in
                    var map: [String: Double] = [:]
                    for alt in e.top where map[alt.token] == nil { map[alt.token] = Double(alt.logprob) }
                    return map
                } : NSNull()
            return ["tokens": entries.map(\.token), "token_logprobs": entries.map { Double($0.logprob) },
                    "top_logprobs": tops, "text_offset": entries.map(\.offset)]
        case .chat:
            return ["content": entries.map { e -> [String: Any] in
                ["token": e.token, "logprob": Double(e.logprob), "bytes": e.bytes.map(Int.init),
                 "top_logprobs": e.top.map { ["token": $0.token, "logprob": Double($0.logprob), "bytes": $0.bytes.map(Int.init)] }]
            }]
        }
    }

}

/// A JSON body or event of the API: keys sorted, slashes as they are.
func json(_ object: [String: Any]) -> String {
    String(decoding: (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8), as: UTF8.self)
}
