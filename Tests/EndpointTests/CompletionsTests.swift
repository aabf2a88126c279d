import Endpoint
import Foundation
import XCTest

final class CompletionsTests: XCTestCase {
    func answer(_ json: String, _ options: [String] = ["A", "B"]) throws -> Completions.Answer {
        try Completions.answer(Data(json.utf8), options: options)
    }

    func testTheOptionsLogprobsAreReadFromTheFirstTopLogprobs() throws {
        let a = try answer(#"{"choices": [{"text": "B", "logprobs": {"tokens": ["B"], "top_logprobs": [{"B": -0.25, "A": -1.5, " A": -3.0}, {"x": -9}]}}]}"#)
        XCTAssertEqual(a, Completions.Answer(logprobs: [-1.5, -0.25], missing: 0), "the exact token first, not \" A\"")
        let spaced = try answer(#"{"choices": [{"logprobs": {"top_logprobs": [{" B": -0.5, " A": -1.0}]}}]}"#)
        XCTAssertEqual(spaced, Completions.Answer(logprobs: [-1.0, -0.5], missing: 0), "a token with spaces matches when no exact one is listed")
    }

    func testAnOptionMissingFromTheTopGetsTheFloorAndIsCounted() throws {
        let a = try answer(#"{"choices": [{"logprobs": {"top_logprobs": [{"A": -0.1, "The": -2.5, "C": -4.0}]}}]}"#)
        XCTAssertEqual(a, Completions.Answer(logprobs: [-0.1, -4.0], missing: 1))
    }

    func testMalformedAnswersAreNamed() {
        let cases = [
            ("<html>busy</html>", "the answer is not a JSON object: <html>busy</html>"),
            (#"{"choices": []}"#, "the answer has no choices[0].logprobs.top_logprobs[0]"),
            (#"{"choices": [{"logprobs": null}]}"#, "the answer has no choices[0].logprobs.top_logprobs[0]"),
            (#"{"choices": [{"logprobs": {"top_logprobs": [{}]}}]}"#, "the answer has no choices[0].logprobs.top_logprobs[0]"),
            (#"{"choices": [{"logprobs": {"top_logprobs": [{"A": "high"}]}}]}"#, "top_logprobs[0][\"A\"] is not a number"),
        ]
        for (json, message) in cases {
            XCTAssertThrowsError(try answer(json), json) { XCTAssertTrue("\($0)".hasPrefix(message), "\($0)") }
        }
        let long = String(repeating: "x", count: 5000)
        XCTAssertThrowsError(try answer(long)) { XCTAssertLessThan("\($0)".count, 300, "an error never carries a whole body") }
    }

    func testAChatAnswerIsReadWhereItNamesAnOption() throws {
        func chat(_ json: String) throws -> Completions.Answer { try Completions.chatAnswer(Data(json.utf8), options: ["A", "B"]) }
        let named = try chat(#"{"choices": [{"logprobs": {"content": [{"token": "(", "top_logprobs": [{"token": "(", "logprob": -0.1}, {"token": "A", "logprob": -4.0}]}, {"token": "B", "top_logprobs": [{"token": "B", "logprob": -0.5}, {"token": "A", "logprob": -1.0}]}]}}]}"#)
        XCTAssertEqual(named, Completions.Answer(logprobs: [-1.0, -0.5], missing: 0), "at the B of \"(B\", not at the \"(\"")
        let none = try chat(#"{"choices": [{"logprobs": {"content": [{"token": "Sure", "top_logprobs": [{"token": "Sure", "logprob": -0.2}, {"token": "I", "logprob": -3.0}]}]}}]}"#)
        XCTAssertEqual(none, Completions.Answer(logprobs: [-3.0, -3.0], missing: 2), "no option named: both get the floor, counted")
        XCTAssertThrowsError(try chat(#"{"choices": [{"logprobs": {"content": [{"token": "A"}]}}]}"#)) {
            XCTAssertTrue("\($0)".hasPrefix("logprobs.content[0] has no token and top_logprobs"), "\($0)")
        }
        XCTAssertThrowsError(try chat(#"{"choices": [{"message": {"content": "A"}}]}"#)) {
            XCTAssertTrue("\($0)".hasPrefix("the answer has no choices[0].logprobs.content"), "\($0)")
        }
        let body = Completions.chatBody(model: "m", turns: [("user", "Which?")], topLogprobs: 5)
        XCTAssertEqual(body["messages"] as? [[String: String]], [["role": "user", "content": "Which?"]])
        XCTAssertEqual(body["logprobs"] as? Bool, true)
        XCTAssertEqual(body["top_logprobs"] as? Int, 5)
    }

    func testTheRequestAsksForOneGreedyTokenWithTopLogprobs() {
        let body = Completions.body(model: "judge", prompt: "Q: (", topLogprobs: 5)
        XCTAssertEqual(body["max_tokens"] as? Int, 1)
        XCTAssertEqual(body["temperature"] as? Int, 0)
        XCTAssertEqual(body["logprobs"] as? Int, 5)
        XCTAssertEqual(body["prompt"] as? String, "Q: (")
        XCTAssertEqual(body["model"] as? String, "judge")
    }

    func testABadAddressIsRefusedBeforeAnyRequest() {
        for url in ["127.0.0.1:8000", "ftp://host/v1", "http://"] {
            XCTAssertThrowsError(try EndpointJudge(.init(url: url, model: "m"), cachePath: NSTemporaryDirectory() + "cache-\(UUID()).jsonl"), url) {
                XCTAssertTrue("\($0)".contains("give the server's address, such as http://127.0.0.1:8000"), "\($0)")
            }
        }
    }
}
