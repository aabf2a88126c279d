import Alignment
import Foundation
import Tokenizer
import XCTest

/// Preference lines in Charter's layout and TRL's two conversational ones give the same parts.
final class PairFormatTests: XCTestCase {
    func parts(_ json: String) throws -> (prompt: [ChatMessage], chosen: String, rejected: String) {
        let o = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
        return try PairFormat.pair(o) { DataError("line 1: \($0)") }
    }

    func testTheThreeLayoutsGiveTheSameParts() throws {
        let user = ChatMessage(role: "user", content: "Hi?")
        for json in [#"{"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}"#,
                     #"{"prompt": [{"role": "user", "content": "Hi?"}], "chosen": [{"role": "assistant", "content": "Hello."}], "rejected": "Go away."}"#,
                     #"{"chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}], "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Go away."}]}"#] {
            let p = try parts(json)
            XCTAssertEqual(p.prompt, [user], json); XCTAssertEqual(p.chosen, "Hello."); XCTAssertEqual(p.rejected, "Go away.")
        }
        let system = try parts(#"{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}], "chosen": "a", "rejected": "b"}"#)
        XCTAssertEqual(system.prompt.map(\.role), ["system", "user"])
    }

    func testBadLinesSayWhatIsWrong() {
        for (json, message) in [
            (#"{"prompt": "Hi?", "chosen": "a"}"#, "needs \"chosen\" and \"rejected\""),
            (#"{"chosen": "a", "rejected": "b"}"#, "needs \"prompt\""),
            (#"{"prompt": 3, "chosen": "a", "rejected": "b"}"#, "\"prompt\" must be a string or a list"),
            (#"{"prompt": [], "chosen": "a", "rejected": "b"}"#, "\"prompt\" is an empty list"),
            (#"{"prompt": [{"role": "bot", "content": "x"}], "chosen": "a", "rejected": "b"}"#, "\"prompt\" message 1 must be"),
            (#"{"prompt": [{"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"}"#, "must not end with an assistant message"),
            (#"{"prompt": "Hi?", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}"#, "\"chosen\" must hold exactly one assistant message"),
            (#"{"chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "B"}, {"role": "assistant", "content": "b"}]}"#,
             "must share every message but their last"),
            (#"{"chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}"#, "needs the conversation before its answer"),
        ] {
            XCTAssertThrowsError(try parts(json), json) { XCTAssertTrue("\($0)".contains(message), "\($0) for \(json)") }
        }
    }
}
