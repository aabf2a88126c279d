import Alignment
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A judge behind an OpenAI-compatible server: answers `options` items (one-token options, as
/// the labeler asks) with `/v1/completions`, several requests at once, retrying what a server or
/// network may fail transiently, and remembering every answer in a cache file so a repeated or
/// resumed run never asks (or pays for) the same request twice.
public final class EndpointJudge: @unchecked Sendable {
    public struct Settings: Sendable {
        /// The server's base address, with or without `/v1`.
        public enum API: String, Sendable, CaseIterable { case completions, chat }
        public var url: String
        public var model: String
        /// `/v1/completions` (the prompt as text) or `/v1/chat/completions` (the item's messages).
        public var api = API.completions
        public var concurrency = 4
        public var timeoutSeconds = 60.0
        /// Tries after the first, for 429, 5xx, time-outs, dropped connections and malformed answers.
        public var retries = 5
        /// The first wait before a retry; it doubles each time, up to `maxBackoffSeconds`.
        public var backoffSeconds = 0.5
        public var maxBackoffSeconds = 8.0
        public var topLogprobs = 10
        /// Sent as `Authorization: Bearer KEY` when set.
        public var apiKey: String?

        public init(url: String, model: String) { self.url = url; self.model = model }

        /// The API's address under `url`; one clear line when `url` is not an HTTP address.
        public func completionsURL() throws -> URL {
            let base = url.hasSuffix("/") ? String(url.dropLast()) : url
            guard let given = URL(string: base), let scheme = given.scheme, ["http", "https"].contains(scheme), let host = given.host, !host.isEmpty,
                  let u = URL(string: base + (base.hasSuffix("/v1") ? "" : "/v1") + (api == .chat ? "/chat/completions" : "/completions")) else {
                throw Failure(description: "--judge-url \(url): give the server's address, such as http://127.0.0.1:8000")
            }
            return u
        }
    }

    /// What the endpoint cost and how it failed, for the metrics.
    public struct Counters: Sendable {
        public var requests = 0
        public var cacheHits = 0
        /// Failed tries by reason: "429", "5xx", "timeout", "connection", "malformed".
        public var failures: [String: Int] = [:]
        /// Options absent from the top log-probs (given the floor).
        public var missingOptions = 0

        public var dictionary: [String: Any] {
            ["requests": requests, "cache_hits": cacheHits, "missing_options": missingOptions,
             "failures": failures, "failed": failures.values.reduce(0, +)]
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public let settings: Settings
    let endpoint: URL
    let session: URLSession
    let cache: JudgeCache
    let lock = NSLock()
    public private(set) var counters = Counters()

    public init(_ settings: Settings, cachePath: String) throws {
        self.settings = settings
        endpoint = try settings.completionsURL()
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = settings.timeoutSeconds
        configuration.httpMaximumConnectionsPerHost = settings.concurrency
        session = URLSession(configuration: configuration)
        cache = try JudgeCache(path: cachePath)
    }

    /// Answers every item (its log-probs for each option), `concurrency` requests at a time. Throws
    /// when an item still fails after every retry, or the server refuses a request outright (4xx
    /// but 429): items answered before then are in the cache.
    public func options(_ items: [StageItem]) throws -> [StageItemResult] { try concurrently(items) { [self] in try answer($0) } }

    /// Chain of thought through the endpoint: each item's rationale, greedy, at most `maxTokens`
    /// tokens, as a generate stage's results (text and whether it was cut off).
    public func rationales(_ items: [StageItem], maxTokens: Int) throws -> [StageItemResult] {
        try concurrently(items) { [self] item in
            let body = Data(JSONLine.encode(Completions.textBody(model: settings.model, prompt: item.prompt, maxTokens: maxTokens)))
            let key = JudgeCache.key(endpoint.absoluteString, body)
            let answer = try cache.text(key).map { a in lock.withLock { counters.cacheHits += 1 }; return a }
                ?? ask(body, id: item.id) { data in
                    let a = try Completions.text(data)
                    try cache.store(key, text: a)
                    return a
                }
            var result = StageItemResult(id: item.id)
            result.texts = [answer.text]; result.truncated = [answer.truncated]
            return result
        }
    }

    func concurrently(_ items: [StageItem], _ one: @escaping @Sendable (StageItem) throws -> StageItemResult) throws -> [StageItemResult] {
        let work = Work(items.map { StageItemResult(id: $0.id) })
        let group = DispatchGroup()
        for _ in 0..<min(settings.concurrency, items.count) {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                while let i = work.take(below: items.count) {
                    do { work.put(i, try one(items[i])) } catch { work.fail(error) }
                }
            }
        }
        group.wait()
        return try work.finished()
    }

    /// One item: from the cache, or asked with retries.
    func answer(_ item: StageItem) throws -> StageItemResult {
        var result = StageItemResult(id: item.id)
        result.optionTokens = item.options.map { _ in 1 }
        let body = Data(JSONLine.encode(settings.api == .chat
            ? Completions.chatBody(model: settings.model, turns: item.messages.map { ($0.role, $0.content) }, topLogprobs: settings.topLogprobs)
            : Completions.body(model: settings.model, prompt: item.prompt, topLogprobs: settings.topLogprobs)))
        let key = JudgeCache.key(endpoint.absoluteString, body)
        if let cached = cache[key] {
            lock.withLock { counters.cacheHits += 1 }
            result.optionLogprobs = cached
            return result
        }
        result.optionLogprobs = try ask(body, id: item.id) { data in
            let answer = settings.api == .chat ? try Completions.chatAnswer(data, options: item.options) : try Completions.answer(data, options: item.options)
            try cache.store(key, answer.logprobs)
            lock.withLock { counters.missingOptions += answer.missing }
            return answer.logprobs
        }
        return result
    }

    /// POSTs `body` until `read` takes an answer: retries with backoff on time-outs, dropped
    /// connections, 429, 5xx and malformed answers; any other status stops the run.
    func ask<T>(_ body: Data, id: String, read: (Data) throws -> T) throws -> T {
        var wait = settings.backoffSeconds, reason = ""
        for attempt in 0...settings.retries {
            if attempt > 0 {
                Thread.sleep(forTimeInterval: wait)
                wait = min(wait * 2, settings.maxBackoffSeconds)
            }
            let (data, status, error) = post(body)
            lock.withLock { counters.requests += 1 }
            if let error {
                reason = (error as? URLError)?.code == .timedOut ? "timeout" : "connection"
            } else if status == 429 {
                reason = "429"
            } else if status >= 500 {
                reason = "5xx"
            } else if status != 200 {
                throw Failure(description: "the judge at \(endpoint.absoluteString) answered \(status): \(Completions.excerpt(data))")
            } else {
                do {
                    return try read(data)
                } catch let e as Completions.Malformed {
                    if attempt == settings.retries { throw Failure(description: "the judge at \(endpoint.absoluteString): \(e)") }
                    reason = "malformed"
                }
            }
            lock.withLock { counters.failures[reason, default: 0] += 1 }
        }
        throw Failure(description: "the judge at \(endpoint.absoluteString) failed \(settings.retries + 1) times for \(id) (last: \(reason)); run again with --resume to go on")
    }

    /// One POST, waited for: the body, the HTTP status (0 without an answer) and the error.
    /// URLSession's own time-out counts idle time; the wait here also ends, as a time-out, at
    /// twice the limit whatever the connection does, so a stuck request cannot stall the stage.
    func post(_ body: Data) -> (Data, Int, Error?) {
        var request = URLRequest(url: endpoint, timeoutInterval: settings.timeoutSeconds)
        request.httpMethod = "POST"
        request.httpBody = body
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        if let key = settings.apiKey { request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
        let done = DispatchSemaphore(value: 0)
        let answer = Answer()
        let task = session.dataTask(with: request) { data, response, error in
            answer.lock.withLock { answer.value = (data ?? Data(), (response as? HTTPURLResponse)?.statusCode ?? 0, error) }
            done.signal()
        }
        task.resume()
        if done.wait(timeout: .now() + 2 * settings.timeoutSeconds) == .timedOut {
            task.cancel()
            return (Data(), 0, URLError(.timedOut))
        }
        return answer.lock.withLock { answer.value }
    }

    /// Where a request's completion handler leaves its answer (it may come after the wait gave up).
    final class Answer: @unchecked Sendable {
        let lock = NSLock()
        var value: (Data, Int, Error?) = (Data(), 0, nil)
    }

    public func sync() throws { try cache.sync() }
}

/// One batch shared by the request threads: hands out item indices 0, 1, 2, ... and collects
/// the results; the first error stops the handing out.
final class Work: @unchecked Sendable {
    let lock = NSLock()
    var results: [StageItemResult]
    var next = 0
    var error: Error?

    init(_ results: [StageItemResult]) { self.results = results }

    func take(below n: Int) -> Int? {
        lock.withLock {
            guard error == nil, next < n else { return nil }
            next += 1
            return next - 1
        }
    }

    func put(_ i: Int, _ r: StageItemResult) { lock.withLock { results[i] = r } }
    func fail(_ e: Error) { lock.withLock { error = error ?? e } }

    func finished() throws -> [StageItemResult] {
        try lock.withLock {
            if let error { throw error }
            return results
        }
    }
}
