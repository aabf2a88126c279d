import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import XCTest

/// `charter serve` as a client sees it: OpenAI's API over HTTP, answers equal to the engine's own,
/// concurrent requests batched without changing them, bad requests refused, and the labeler using
/// it as its judge endpoint.
extension CLITests {
    /// Starts `charter serve` on a free port; returns the process and its base URL.
    func startServer(_ args: [String], log: String) throws -> (Child, String) {
        let p = try start(["serve", "--bind", "127.0.0.1:0"] + args, log: log)
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && p.isRunning {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let r = text.range(of: " on http://"), let end = text[r.upperBound...].range(of: "/v1") {
                return (p, "http://" + text[r.upperBound ..< end.lowerBound])
            }
            usleep(20_000)
        }
        XCTFail("charter serve did not say where it listens: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        throw CocoaError(.fileReadUnknown)
    }

    static func request(_ url: String, method: String = "POST", body: Any? = nil, raw: String? = nil) -> (status: Int, body: String) {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var answer = (0, "")
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        request.timeoutInterval = 120
        if let body { request.httpBody = try! JSONSerialization.data(withJSONObject: body) }
        if let raw { request.httpBody = Data(raw.utf8) }
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        URLSession.shared.dataTask(with: request) { data, response, _ in
            answer = ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data ?? Data(), as: UTF8.self))
            done.signal()
        }.resume()
        done.wait()
        return answer
    }

    /// Sends `raw` on one connection to `url`'s host and port and reads until the server closes it.
    static func exchange(_ url: String, _ raw: String) -> String {
        let parts = url.dropFirst("http://".count).split(separator: ":")
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr(String(parts[0]))
        addr.sin_port = in_port_t(UInt16(parts[1])!).bigEndian
        var wait = timeval(tv_sec: 120, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected, Array(raw.utf8).withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == raw.utf8.count else { return "" }
        var received: [UInt8] = [], buffer = [UInt8](repeating: 0, count: 65536)
        while case let n = recv(fd, &buffer, buffer.count, 0), n > 0 { received += buffer[0 ..< n] }
        return String(decoding: received, as: UTF8.self)
    }

    static func object(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    static func choice(_ text: String) -> [String: Any] { (object(text)["choices"] as? [[String: Any]])?.first ?? [:] }

    func testServeAnswersAsTheEngineDoesAndRefusesBadRequests() throws {
        let dir = try labelFolder("serve")
        let (_, url) = try startServer(["--name", "smollm2"], log: dir.path + "/serve.log")
        let models = Self.object(Self.request(url + "/v1/models", method: "GET").body)
        XCTAssertEqual((models["data"] as? [[String: Any]])?.first?["id"] as? String, "smollm2")

        // Greedy text equals `charter generate` on the same model.
        let generated = try charter("generate", "--prompt", "The capital of France is", "--max-tokens", "12", "--temperature", "0", "--json")
        XCTAssertEqual(generated.status, 0, generated.err)
        let expected = Self.object(generated.out)["text"] as? String
        let plain = Self.request(url + "/v1/completions", body: ["prompt": "The capital of France is", "max_tokens": 12, "temperature": 0, "logprobs": 3])
        XCTAssertEqual(plain.status, 200, plain.body)
        let c = Self.choice(plain.body)
        XCTAssertEqual(c["text"] as? String, expected)
        XCTAssertEqual(c["finish_reason"] as? String, "length")
        let lp = c["logprobs"] as? [String: Any] ?? [:]
        let tokens = lp["tokens"] as? [String] ?? [], chosen = lp["token_logprobs"] as? [Double] ?? []
        let tops = lp["top_logprobs"] as? [[String: Double]] ?? []
        XCTAssertEqual(tokens.joined(), expected)
        XCTAssertEqual(tops.count, 12)
        for (i, top) in tops.enumerated() {
            // Greedy: the chosen token is the most likely, and its log-prob is the top one's.
            XCTAssertEqual(top.count, 3)
            XCTAssertEqual(top.values.max() ?? 0, chosen[i], accuracy: 1e-6)
            XCTAssertEqual(top[tokens[i]] ?? 1, chosen[i], accuracy: 1e-6)
        }
        XCTAssertEqual((Self.object(plain.body)["usage"] as? [String: Any])?["completion_tokens"] as? Int, 12)

        // Four at once are batched, and each answer is what it is alone (seeded sampling included).
        nonisolated(unsafe) let bodies: [[String: Any]] = (0..<4).map { ["prompt": "Once upon a time", "max_tokens": 10, "temperature": 0.8, "seed": $0] }
        let alone = bodies.map { Self.choice(Self.request(url + "/v1/completions", body: $0).body)["text"] as? String }
        nonisolated(unsafe) var together = [String?](repeating: nil, count: 4)
        DispatchQueue.concurrentPerform(iterations: 4) { i in together[i] = Self.choice(Self.request(url + "/v1/completions", body: bodies[i]).body)["text"] as? String }
        XCTAssertEqual(together, alone)
        XCTAssertEqual(Set(alone.compactMap { $0 }).count, 4, "seeds 0-3 give four answers: \(alone)")

        // Streaming gives the same text in pieces, then [DONE]; a stop string ends the text before it.
        let streamed = Self.request(url + "/v1/completions", body: ["prompt": "The capital of France is", "max_tokens": 12, "temperature": 0, "stream": true])
        XCTAssertEqual(streamed.status, 200)
        let events = streamed.body.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        XCTAssertEqual(events.last, "data: [DONE]")
        let pieces = events.dropLast().map { Self.choice(String($0.dropFirst(6)))["text"] as? String ?? "?" }
        XCTAssertEqual(pieces.joined(), expected)
        let word = String((expected ?? "").split(separator: " ").dropFirst().first ?? "")
        XCTAssertFalse(word.isEmpty, expected ?? "")
        let stopped = Self.choice(Self.request(url + "/v1/completions", body: ["prompt": "The capital of France is", "max_tokens": 12, "temperature": 0, "stop": [word]]).body)
        XCTAssertEqual(stopped["text"] as? String, (expected ?? "").components(separatedBy: word).first)
        XCTAssertEqual(stopped["finish_reason"] as? String, "stop")

        // Two requests sent back to back on one connection (HTTP/1.1 pipelining) are answered in order.
        let first = #"{"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0}"#, second = #"{"prompt": "x", "max_tokens": 1}"#
        let pipelined = Self.exchange(url, [(first, "keep-alive"), (second, "close")].map { body, connection in
            "POST /v1/completions HTTP/1.1\r\nHost: charter\r\nContent-Type: application/json\r\nConnection: \(connection)\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        }.joined())
        let replies = pipelined.components(separatedBy: "HTTP/1.1 200 OK").dropFirst().map { Self.choice(String($0[($0.range(of: "\r\n\r\n")?.upperBound ?? $0.endIndex)...])) }
        XCTAssertEqual(replies.count, 2, pipelined)
        XCTAssertEqual(replies.first?["text"] as? String, expected)
        XCTAssertEqual(replies.last?["finish_reason"] as? String, "length")

        // Chat: the model's template, logprobs in chat's shape, and a streamed answer equal to the whole one.
        let chatBody: [String: Any] = ["messages": [["role": "user", "content": "Say hello."]], "max_tokens": 8, "temperature": 0, "logprobs": true, "top_logprobs": 2]
        let chat = Self.choice(Self.request(url + "/v1/chat/completions", body: chatBody).body)
        let content = (chat["message"] as? [String: Any])?["content"] as? String
        XCTAssertFalse((content ?? "").isEmpty)
        let positions = (chat["logprobs"] as? [String: Any])?["content"] as? [[String: Any]] ?? []
        XCTAssertFalse(positions.isEmpty)
        XCTAssertTrue(positions.allSatisfy { ($0["top_logprobs"] as? [Any])?.count == 2 })
        var streamBody = chatBody
        streamBody["stream"] = true
        let chatEvents = Self.request(url + "/v1/chat/completions", body: streamBody).body.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        XCTAssertEqual(chatEvents.last, "data: [DONE]")
        let deltas = chatEvents.dropLast().map { (Self.choice(String($0.dropFirst(6)))["delta"] as? [String: Any])?["content"] as? String ?? "" }
        XCTAssertEqual(deltas.joined(), content)

        // Bad requests: one clear message each, and the server keeps serving.
        for (path, raw, status, message) in [
            ("/v1/completions", "{not json", 400, "the body is not a JSON object"),
            ("/v1/completions", #"{"prompt": "x", "n": 2}"#, 400, "n: only 1 choice per request is supported"),
            ("/v1/completions", #"{"prompt": "x", "temperature": "hot"}"#, 400, "temperature: a number from 0.0 to 100.0 is required"),
            ("/v1/completions", #"{"prompt": "x", "logprobs": 50}"#, 400, "logprobs: a whole number from 0 to 20 is required"),
            ("/v1/completions", #"{"prompt": ["x", "y"]}"#, 400, "prompt: a string is required (token lists and batches of prompts are not supported)"),
            ("/v1/chat/completions", #"{"messages": [{"role": "robot", "content": "x"}]}"#, 400, "messages[0].role: robot is not system, user or assistant"),
            ("/v1/completions", #"{"prompt": "\#(String(repeating: "word ", count: 9000))"}"#, 400, "do not fit the model's context of 8192"),
            ("/v1/embeddings", "{}", 404, "no such path: /v1/embeddings"),
        ] {
            let r = Self.request(url + path, raw: raw)
            XCTAssertEqual(r.status, status, "\(raw.prefix(60)): \(r.body.prefix(200))")
            let said = (Self.object(r.body)["error"] as? [String: Any])?["message"] as? String ?? ""
            XCTAssertTrue(said.contains(message), "\(raw.prefix(60)): \(said)")
        }
        XCTAssertEqual(Self.request(url + "/v1/completions", method: "GET").status, 405)
        XCTAssertEqual(Self.choice(Self.request(url + "/v1/completions", body: ["prompt": "The capital of France is", "max_tokens": 12, "temperature": 0]).body)["text"] as? String, expected)
    }

    /// The labeler with `charter serve` as its endpoint judge gives the local judge's labels.
    func testLabelThroughCharterServeAgreesWithTheLocalJudge() throws {
        let dir = try labelFolder("serve-label")
        let pairs = dir.path + "/pairs.jsonl"
        try (try file("examples/polite-pairs.jsonl")).split(separator: "\n").prefix(20).joined(separator: "\n").appending("\n").write(toFile: pairs, atomically: true, encoding: .utf8)
        let (_, url) = try startServer(["--name", "smollm2"], log: dir.path + "/serve.log")
        try labelsThroughTheServerAgreeWithTheLocalJudge(url: url, judge: "models/SmolLM2-135M-Instruct.Q4_1.gguf", concurrency: 4, pairs: pairs, dir: dir)
    }

    /// Chain of thought through the endpoint: the rationales `charter serve` writes are the local
    /// judge's (same engine, greedy), so are the labels read after them; a rerun asks nothing.
    func testChainOfThoughtThroughCharterServeEqualsTheLocalOne() throws {
        let dir = try labelFolder("serve-cot")
        let pairs = dir.path + "/pairs.jsonl"
        try (try file("examples/polite-pairs.jsonl")).split(separator: "\n").prefix(6).joined(separator: "\n").appending("\n").write(toFile: pairs, atomically: true, encoding: .utf8)
        let (_, url) = try startServer(["--name", "smollm2"], log: dir.path + "/serve.log")
        let common = ["label", "--pairs", pairs, "--constitution", "constitutions/polite.yaml", "--cot", "--cot-tokens", "16"]
        let local = try charter(common + ["--out", dir.path + "/local.jsonl", "--in-process"])
        XCTAssertEqual(local.status, 0, local.err)
        let remoteArgs = common + ["--out", dir.path + "/remote.jsonl", "--judge-url", url, "--judge-model", "smollm2", "--judge-concurrency", "4"]
        let remote = try charter(remoteArgs)
        XCTAssertEqual(remote.status, 0, remote.err)
        func rationales(_ name: String) throws -> [String: String] {
            Dictionary(uniqueKeysWithValues: try jsonLines("\(dir.path)/\(name).stage/rationales.jsonl").map { ($0["id"] as! String, $0["text"] as! String) })
        }
        XCTAssertEqual(try rationales("remote"), try rationales("local"))
        XCTAssertEqual(try rationales("remote").count, 12)
        let r = try jsonLines(dir.path + "/remote.jsonl"), l = try jsonLines(dir.path + "/local.jsonl")
        XCTAssertEqual(r.count, 6)
        for (a, b) in zip(r, l) { XCTAssertEqual(a["p_a"] as! Double, b["p_a"] as! Double, accuracy: 1e-4) }
        // 12 rationales and 12 questions, each asked once; the rerun finds them all in the cache.
        XCTAssertEqual(try stageMetrics(dir.path + "/remote.stage/judge.metrics.json")["requests"] as? Int, 24)
        let again = try charter(remoteArgs + ["--overwrite"])
        XCTAssertEqual(again.status, 0, again.err)
        XCTAssertEqual(try stageMetrics(dir.path + "/remote.stage/judge.metrics.json")["requests"] as? Int, 0)
        XCTAssertEqual(try stageMetrics(dir.path + "/remote.stage/judge.metrics.json")["cache_hits"] as? Int, 24)
    }
}
