import Formats
import Foundation
import Tokenizer
import XCTest

final class SmolLM2TokenizerTests: XCTestCase {
    static let modelURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    nonisolated(unsafe) static var cached: BPETokenizer?

    func tokenizer() throws -> BPETokenizer {
        if let t = Self.cached { return t }
        guard FileManager.default.fileExists(atPath: Self.modelURL.path) else {
            XCTFail("missing \(Self.modelURL.path): run scripts/fetch-model.sh first")
            throw CocoaError(.fileNoSuchFile)
        }
        let t = try GGUFModel.tokenizer(of: GGUFFile(url: Self.modelURL))
        Self.cached = t
        return t
    }

    func testRoundTripIsExactOnAwkwardText() throws {
        let tok = try tokenizer()
        let texts = [
            "", " ", "  leading and trailing  ", "\n\n\t\r\n", "a\u{0301} combining", "Ünïcödé naïve café — 東京 🐍",
            "emoji 👩🏽‍💻🏳️‍🌈 flags 🇫🇷", "numbers 12345 67.89 ½ Ⅻ ²", "it's they're I'LL we've", "x\u{00A0}y\u{2003}z",
            "<|im_start|> inside <|im_end|> text", "<|im_sta partial", "日本語のテキストと한국어", "Ελληνικά русский עברית عربى",
            "\u{10FFFF} \u{E000} \u{FFFD}", String(repeating: "ab ", count: 300),
        ]
        for t in texts {
            XCTAssertEqual(try tok.decode(tok.encode(t)), t)
            XCTAssertEqual(try tok.decode(tok.encode(t, parseSpecial: false)), t)
        }
    }

    func testRoundTripIsExactOnRandomUnicode() throws {
        let tok = try tokenizer()
        let missing = Set(tok.unencodableBytes)
        var state: UInt64 = 12345
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }
        let ranges: [ClosedRange<UInt32>] = [0x20...0x7E, 0x0A...0x0D, 0xA0...0x24F, 0x370...0x52F, 0x3040...0x30FF, 0x4E00...0x9FFF, 0x1F300...0x1FAFF, 0xE000...0xF8FF]
        var checked = 0
        for _ in 0..<300 {
            var s = ""
            for _ in 0..<(1 + Int(next() % 40)) {
                let r = ranges[Int(next() % UInt64(ranges.count))]
                if let u = Unicode.Scalar(r.lowerBound + UInt32(next() % UInt64(r.count))) { s.unicodeScalars.append(u) }
            }
            guard !s.utf8.contains(where: missing.contains) else { continue }
            XCTAssertEqual(try tok.decode(tok.encode(s)), s)
            checked += 1
        }
        XCTAssertGreaterThan(checked, 250)
    }

    func testBytesWithoutASymbolAreRefusedByName() throws {
        let tok = try tokenizer()
        XCTAssertEqual(tok.unencodableBytes.count, 21)
        XCTAssertThrowsError(try tok.encode("bell\u{04}end")) {
            XCTAssertEqual("\($0)", "the text contains byte 0x04, which no token of this vocabulary can represent")
        }
    }

    func testSpecialTokensAreRecognisedOnlyWhenAsked() throws {
        let tok = try tokenizer()
        XCTAssertEqual(try tok.encode("<|im_start|>user<|im_end|>"), [1, 4093, 2])
        XCTAssertFalse(try tok.encode("<|im_start|>", parseSpecial: false).contains(1))
        XCTAssertFalse(try tok.encode("<|im_start|", parseSpecial: true).contains(1))
        XCTAssertEqual(try tok.decode([1, 4093, 2]), "<|im_start|>user<|im_end|>")
        XCTAssertThrowsError(try tok.decode([49152])) { XCTAssertEqual("\($0)", "token id 49152 is not in the vocabulary") }
    }

    func testChatTemplateMatchesTheReferencePrompt() throws {
        let text = try ChatTemplate.render([ChatMessage(role: "user", content: "What is the capital of France?")])
        XCTAssertEqual(text, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
        let custom = try ChatTemplate.render([ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi"),
                                              ChatMessage(role: "assistant", content: "Hello."), ChatMessage(role: "user", content: "Bye")],
                                             addGenerationPrompt: false)
        XCTAssertEqual(custom, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n")
        XCTAssertThrowsError(try ChatTemplate.render([ChatMessage(role: "robot", content: "x")])) {
            XCTAssertEqual("\($0)", "invalid chat message: role \"robot\" is not one of system, user, assistant")
        }
    }
}

final class BPETests: XCTestCase {
    /// Pieces worked out by hand from the GPT-2 pattern with digits split first.
    func testPreTokenizerSplitsLikeTheSmolLMPattern() {
        func pieces(_ s: String) -> [String] { PreTokenizer.split(s[...]).map(String.init) }
        XCTAssertEqual(pieces("Hello world"), ["Hello", " world"])
        XCTAssertEqual(pieces("it's  ok!!"), ["it", "'s", " ", " ok", "!!"])
        XCTAssertEqual(pieces("year 2024."), ["year", " ", "2", "0", "2", "4", "."])
        XCTAssertEqual(pieces("a\n\nb"), ["a", "\n", "\n", "b"]) // the run gives up its last space, which stands alone
        XCTAssertEqual(pieces("tabs\t\t x"), ["tabs", "\t\t", " x"])
        XCTAssertEqual(pieces("end   "), ["end", "   "])
        XCTAssertEqual(pieces("'re 'S"), ["'re", " '", "S"])
        XCTAssertEqual(pieces("東京 café"), ["東京", " café"])
    }

    func testMergesApplyLowestRankFirst() throws {
        // "b c" outranks "a b": "abc" -> a + bc -> abc. With the ranks swapped: ab + c, and no "ab c" merge.
        let tokens = ["a", "b", "c", "bc", "ab", "abc"]
        let first = try BPETokenizer(tokens: tokens, merges: ["b c", "a b", "a bc"])
        XCTAssertEqual(try first.encode("abc"), [5])
        let second = try BPETokenizer(tokens: tokens, merges: ["a b", "b c", "a bc"])
        XCTAssertEqual(try second.encode("abc"), [4, 2])
    }

    func testBadVocabulariesAreRefusedByName() {
        XCTAssertThrowsError(try BPETokenizer(tokens: ["a", "b"], merges: ["a c"])) {
            XCTAssertEqual("\($0)", "invalid tokenizer vocabulary: merge 0 \"a c\" names a symbol missing from the vocabulary")
        }
        XCTAssertThrowsError(try BPETokenizer(tokens: ["a"], merges: [], types: [1, 1])) {
            XCTAssertEqual("\($0)", "invalid tokenizer vocabulary: 2 token types for 1 tokens")
        }
        XCTAssertThrowsError(try BPETokenizer(tokens: ["a", "b", "ab"], merges: ["ab"]))
    }
}
