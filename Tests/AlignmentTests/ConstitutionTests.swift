import Alignment
import Engine
import Foundation
import Tokenizer
import XCTest

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

final class ConstitutionTests: XCTestCase {
    func write(_ text: String, _ ext: String = "yaml") throws -> String {
        let path = NSTemporaryDirectory() + "constitution-\(UUID().uuidString).\(ext)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func testTheShippedConstitutionsRead() throws {
        let d = try Constitution.load(repoRoot.appendingPathComponent("constitutions/default.yaml").path)
        XCTAssertEqual(d.name, "default")
        XCTAssertEqual(d.critiques.count, 16)
        XCTAssertEqual(d.comparisons.count, 16)
        XCTAssertEqual(d.critiqueExamples.count, 2)
        XCTAssertFalse(d.critiques(tagged: "harmless").isEmpty)
        XCTAssertFalse(d.critiques(tagged: "helpful").isEmpty)
        let p = try Constitution.load(repoRoot.appendingPathComponent("constitutions/polite.yaml").path)
        XCTAssertEqual(p.critiques.count, 4)
        // A worked example takes its principle's requests.
        XCTAssertEqual(p.critiqueExamples.first?.critiqueRequest, p.critiques[1].critique)
        XCTAssertEqual(p.comparisonExamples.first?.choice, 1)
    }

    func testEveryBadYAMLFileGetsOneLineNamingTheEntry() throws {
        let ok = "name: x\nversion: 1\ncritiques:\n  - {critique: \"C\", revision: \"R\"}\n"
        let cases: [(String, String)] = [
            ("name: x\nversion: 1\ncritiques: [\n", "not valid YAML"),
            ("", "empty constitution"),
            ("version: 1\ncritiques:\n  - {critique: C, revision: R}\n", "line 1: \"name\" is required"),
            ("name: x\nversion: one\ncritiques:\n  - {critique: C, revision: R}\n", "\"version\" must be an integer, found \"one\""),
            ("name: x\nversion: 1\n", "\"critiques\" is required"),
            ("name: x\nversion: 1\ncritiques:\n  - {critique: C}\n", "line 4: \"critiques[0].revision\" is required: a non-empty string"),
            ("name: x\nversion: 1\ncritiques:\n  - {critique: C, revision: \"  \"}\n", "\"critiques[0].revision\" is required"),
            ("name: x\nversion: 1\ncritiques:\n  - just a string\n", "\"critiques[0]\" must be a mapping"),
            ("name: x\nversion: 1\ncritiques:\n  - {critique: C, revision: R, weight: 2}\n", "unknown key \"critiques[0].weight\""),
            (ok + "principles: []\n", "unknown key \"principles\""),
            (ok + "comparisons:\n  - {tags: [harmless]}\n", "\"comparisons[0].question\" is required"),
            (ok + "few_shot:\n  critiques:\n    - {prompt: P, answer: A, critique: C, revision: R}\n", "\"few_shot.critiques[0].principle\" is required"),
            (ok + "few_shot:\n  critiques:\n    - {prompt: P, answer: A, principle: 2, critique: C, revision: R}\n", "\"few_shot.critiques[0].principle\" is 2, but there is 1 critiques"),
            (ok + "comparisons: [{question: Q}]\nfew_shot:\n  comparisons:\n    - {prompt: P, options: [a], principle: 1, choice: 1}\n", "\"few_shot.comparisons[0].options\" must be a list of two"),
            (ok + "comparisons: [{question: Q}]\nfew_shot:\n  comparisons:\n    - {prompt: P, options: [a, b], principle: 1, choice: 3}\n", "\"few_shot.comparisons[0].choice\" is required: 1 or 2"),
        ]
        for (text, message) in cases {
            let path = try write(text)
            XCTAssertThrowsError(try Constitution.load(path), text) { e in
                let line = "\(e)"
                XCTAssertTrue(line.hasPrefix((path as NSString).lastPathComponent) && line.contains(message), "\(text) -> \(line)")
                XCTAssertFalse(line.contains("\n"), line)
            }
        }
        XCTAssertThrowsError(try Constitution.load("/nonexistent/c.yaml")) { XCTAssertEqual("\($0)", "/nonexistent/c.yaml: cannot read") }
    }

    func testThePublishedJSONLayoutsRead() throws {
        // The paper's layout: named entries, in natural order, one principle per critique request.
        let paper = try Constitution.load(try write("""
            {"harmful10": {"prompt": ["C10"], "edit_request": "R10"},
             "harmful2": {"prompt": ["C2a", "C2b"], "edit_request": "R2"}}
            """, "json"))
        XCTAssertEqual(paper.critiques.map(\.critique), ["C2a", "C2b", "C10"])
        XCTAssertEqual(paper.critiques.map(\.revision), ["R2", "R2", "R10"])
        XCTAssertEqual(paper.version, 1)
        // llm-swarm's: a list of {critic, revision} and six-turn worked examples.
        let turns = ["P", "A", "CR", "C", "RR", "R"].enumerated().map { #"{"role": "\#($0 % 2 == 0 ? "user" : "assistant")", "content": "\#($1)"}"# }
        let swarm = try Constitution.load(try write(#"{"constitutions": [{"critic": "C1", "revision": "R1"}], "system_chat": [[\#(turns.joined(separator: ","))]]}"#, "json"))
        XCTAssertEqual(swarm.critiques, [.init(critique: "C1", revision: "R1")])
        XCTAssertEqual(swarm.critiqueExamples, [.init(prompt: "P", answer: "A", critiqueRequest: "CR", critique: "C", revisionRequest: "RR", revision: "R")])

        let cases: [(String, String)] = [
            ("{", "not valid JSON"),
            ("[1]", "expected a JSON object of principles"),
            (#"{"h0": "text"}"#, "entry \"h0\": must be an object"),
            (#"{"h0": {"prompt": ["C"]}}"#, "entry \"h0\": needs a non-empty string \"edit_request\""),
            (#"{"h0": {"prompt": [], "edit_request": "R"}}"#, "entry \"h0\": needs \"prompt\""),
            (#"{"constitutions": [{"critic": "C"}]}"#, "entry \"constitutions[0]\": needs non-empty strings \"critic\" and \"revision\""),
            (#"{"constitutions": [], "other": 1}"#, "entry \"other\": unknown"),
            (#"{"constitutions": [{"critic": "C", "revision": "R"}], "system_chat": [[{"role": "user", "content": "P"}]]}"#, "entry \"system_chat[0]\": must be six turns"),
            (#"{"constitutions": []}"#, "no principles"),
        ]
        for (text, message) in cases {
            let path = try write(text, "json")
            XCTAssertThrowsError(try Constitution.load(path), text) { e in
                XCTAssertTrue("\(e)".hasPrefix((path as NSString).lastPathComponent) && "\(e)".contains(message), "\(text) -> \(e)")
            }
        }
    }

    /// docs/constitution.md shows what the model sees before round 1's revision; the plan and the
    /// stage's conversation render exactly that with SmolLM2's chat template.
    func testTheRevisionPromptIsWhatTheDocsShow() throws {
        let doc = try String(contentsOf: repoRoot.appendingPathComponent("docs/constitution.md"), encoding: .utf8)
        func block(after marker: String, fence: String) throws -> String {
            let start = try XCTUnwrap(doc.range(of: "\(marker)\n```\(fence)\n")).upperBound
            return String(doc[start ..< (try XCTUnwrap(doc.range(of: "\n```", range: start ..< doc.endIndex))).lowerBound])
        }
        let constitution = try Constitution.load(try write(try block(after: "<!-- example constitution -->", fence: "yaml")))
        var settings = RevisionSettings()
        settings.revisions = 2
        let prompt = PromptSet.Entry(id: "p", messages: [ChatMessage(role: "user", content: "Roast my cooking.")], fields: [:])
        let plan = try RevisionPlan(constitution: constitution, settings: settings, prompts: [prompt], helpful: [], runSeed: 3)
        let item = plan.entries[0].item
        XCTAssertEqual(item.steps.count, 4, "critique and revision requests of two rounds")
        let seen = try ChatTemplate.render(StageWork.conversation(item, answers: ["ANSWER", "CRITIQUE"], step: 2))
        XCTAssertEqual(seen, try block(after: "<!-- what the model sees -->", fence: "text") + "\n")
    }

    func testPrinciplesAreDrawnPerRoundFromTheSeed() throws {
        let c = Constitution(name: "c", version: 1, critiques: (0..<16).map { .init(critique: "C\($0)", revision: "R\($0)") })
        var s = RevisionSettings()
        s.revisions = 4
        s.helpfulRatio = 0.5
        let prompts = (0..<40).map { PromptSet.Entry(id: "r\($0)", messages: [ChatMessage(role: "user", content: "x")], fields: [:]) }
        let helpful = (0..<30).map { PromptSet.Entry(id: "h\($0)", messages: [ChatMessage(role: "user", content: "y")], fields: [:]) }
        let plan = try RevisionPlan(constitution: c, settings: s, prompts: prompts, helpful: helpful, runSeed: 9)
        XCTAssertEqual(plan.entries.count, 60, "40 red-team prompts and round(0.5 x 40) helpful ones")
        XCTAssertEqual(plan.entries.last?.item.id, "helpful:h19")
        XCTAssertEqual(plan.entries.last?.item.steps, [])
        let first = plan.entries[0]
        XCTAssertEqual(first.item.steps, first.principles.flatMap { ["C\($0)", "R\($0)"] })
        XCTAssertEqual(first.principles, (1...4).map { RevisionPlan.principle(seed: first.item.seed, round: $0, of: 16) })
        // Drawn afresh: over 160 draws all 16 principles come up, and rounds of a prompt differ.
        let all = plan.entries.flatMap(\.principles)
        XCTAssertEqual(Set(all).count, 16)
        XCTAssertTrue(plan.entries.prefix(40).contains { Set($0.principles).count > 1 })
        // The same seed gives the same plan; direct leaves out the critique requests.
        XCTAssertEqual(try RevisionPlan(constitution: c, settings: s, prompts: prompts, helpful: helpful, runSeed: 9).entries.map(\.item), plan.entries.map(\.item))
        s.direct = true
        let direct = try RevisionPlan(constitution: c, settings: s, prompts: prompts, helpful: [], runSeed: 9).entries[0]
        XCTAssertEqual(direct.item.steps, first.principles.map { "R\($0)" })
        XCTAssertThrowsError(try RevisionPlan(constitution: c, settings: s, prompts: prompts + prompts.prefix(1), helpful: [], runSeed: 9))
    }

    func testUnusableRevisionsAreNamed() {
        XCTAssertEqual(RevisionCheck.problem("A fine answer.", of: "The sun? Seriously?", critique: "It was rude.", request: "Rewrite it.", truncated: true), "cut off")
        XCTAssertEqual(RevisionCheck.problem("  \n", of: "The sun? Seriously?", critique: "It was rude.", request: "Rewrite it.", truncated: false), "empty")
        XCTAssertEqual(RevisionCheck.problem("My last answer was rude to the user!", of: "The sun? Seriously?", critique: "My last answer was rude to the user.", request: "Rewrite it.", truncated: false),
                       "repeats the critique")
        XCTAssertEqual(RevisionCheck.problem("Rewrite your last answer kindly.", of: "The sun? Seriously?", critique: nil, request: "Rewrite your last answer kindly. Reply with it only.", truncated: false),
                       "repeats the request")
        XCTAssertEqual(RevisionCheck.problem("The sun is a star, obviously!", of: "Ha, the sun is a star, obviously.", critique: "It mocked.", request: "Rewrite it.", truncated: false),
                       "unchanged")
        XCTAssertNil(RevisionCheck.problem("The sun is a star, not a planet.", of: "The sun? Seriously?", critique: "My last answer mocked the user.", request: "Rewrite your last answer.", truncated: false))
    }

    func testTheOutcomeKeepsUsableRevisionsInThePromptsOrder() throws {
        let c = Constitution(name: "c", version: 1, critiques: [.init(critique: "Critique it.", revision: "Rewrite it.")])
        var s = RevisionSettings()
        s.revisions = 2
        s.helpfulRatio = 1
        let dialogue = [ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: "Hello"), ChatMessage(role: "user", content: "Insult me")]
        let plan = try RevisionPlan(constitution: c, settings: s,
                                    prompts: [.init(id: "a", messages: dialogue, fields: ["category": "rudeness"]),
                                              .init(id: "b", messages: [ChatMessage(role: "user", content: "Mock me")], fields: [:])],
                                    helpful: [.init(id: "h", messages: [ChatMessage(role: "user", content: "Name a planet")], fields: [:])], runSeed: 1)
        func result(_ answers: [String], _ truncated: [Bool]) -> [String: Any] { ["answers": answers, "truncated": truncated] }
        let results: [String: [String: Any]] = [
            // a: round 1 fine, round 2 repeats its critique.
            "a": result(["You are dull.", "It was rude.", "You are lovely.", "It is still unkind to say that.", "It is still unkind to say that."], [false, false, false, false, false]),
            // b: round 1 cut off, round 2 fine.
            "b": result(["Ha.", "Rude.", "Ha ha ha ha", "Mocking.", "I would rather not mock you."], [false, false, true, false, false]),
            "helpful:h": result(["Mars."], [false]),
        ]
        let all = try RevisionOutcome(plan: plan, results: results)
        XCTAssertEqual(all.revisions.map { $0["id"] as? String }, ["a", "b", "helpful:h"])
        XCTAssertEqual(all.revisions[0]["final"] as? String, "You are lovely.")
        XCTAssertEqual(all.revisions[0]["category"] as? String, "rudeness")
        let rounds = try XCTUnwrap(all.revisions[0]["rounds"] as? [[String: Any]])
        XCTAssertEqual(rounds.map { $0["dropped"] as? String }, [nil, "repeats the critique"])
        XCTAssertEqual(rounds.map { $0["critique"] as? String }, ["It was rude.", "It is still unkind to say that."])
        XCTAssertEqual(all.sft.map { $0["id"] as? String }, ["a/1", "b/2", "helpful:h"])
        XCTAssertEqual(all.counts["kept"], 2)
        XCTAssertEqual(all.counts["dropped: cut off"], 1)
        XCTAssertEqual(all.counts["dropped: repeats the critique"], 1)
        XCTAssertEqual(all.counts["helpful_kept"], 1)
        XCTAssertEqual(all.counts["sft_examples"], 3)
        // The dialogue's earlier answer is context only; the revision is the last turn.
        let a = try XCTUnwrap(all.sft[0]["messages"] as? [[String: Any]])
        XCTAssertEqual(a.map { $0["weight"] as? Int }, [nil, 0, nil, nil])
        XCTAssertEqual(a.last?["content"] as? String, "You are lovely.")

        s.sft = .final
        s.revisions = 2
        let final = try RevisionOutcome(plan: try RevisionPlan(constitution: c, settings: s, prompts: [.init(id: "a", messages: dialogue, fields: [:])], helpful: [], runSeed: 1),
                                        results: ["a": result(["x y", "c d", "first fix", "e f", "second fix"], [false, false, false, false, false])])
        XCTAssertEqual(final.sft.map { $0["id"] as? String }, ["a/2"])
        // A result that does not fit its item is an error, not a guess.
        XCTAssertThrowsError(try RevisionOutcome(plan: plan, results: results.merging(["b": result(["only one"], [false])]) { _, new in new }))
        XCTAssertThrowsError(try RevisionOutcome(plan: plan, results: results.filter { $0.key != "b" }))
    }
}

final class PromptSetTests: XCTestCase {
    func write(_ lines: [String]) throws -> String {
        let path = NSTemporaryDirectory() + "prompts-\(UUID().uuidString).jsonl"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func testEveryPromptLayoutBecomesAConversationWaitingForTheAssistant() throws {
        let path = try write([
            #"{"prompt": "Roast me.", "category": "rudeness"}"#,
            #"{"id": "trl", "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]}"#,
            #"{"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]}"#,
            #"{"chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: Why?\n\nHuman: My neighbour's.\n\nAssistant: No."}"#,
            #"{"id": 7, "transcript": "\n\nHuman: Tell me a mean joke.\n\nAssistant:"}"#,
        ])
        let set = try PromptSet.load(path, system: "Be kind")
        func m(_ r: String, _ c: String) -> ChatMessage { ChatMessage(role: r, content: c) }
        XCTAssertEqual(set.map(\.id), ["1", "trl", "3", "4", "7"])
        XCTAssertEqual(set[0].messages, [m("system", "Be kind"), m("user", "Roast me.")])
        XCTAssertEqual(set[0].fields["category"] as? String, "rudeness")
        XCTAssertEqual(set[1].messages, [m("system", "S"), m("user", "Q")], "a conversation's own system turn stays")
        XCTAssertEqual(set[2].messages, [m("system", "Be kind"), m("user", "Q1"), m("assistant", "A1"), m("user", "Q2")])
        XCTAssertEqual(set[3].messages, [m("system", "Be kind"), m("user", "How do I pick a lock?"), m("assistant", "Why?"), m("user", "My neighbour's.")])
        XCTAssertEqual(set[4].messages, [m("system", "Be kind"), m("user", "Tell me a mean joke.")])
        XCTAssertEqual(try PromptSet.load(path, system: nil)[0].messages, [m("user", "Roast me.")])
    }

    func testEveryBadPromptLineIsNamed() throws {
        let cases: [(String, String)] = [
            (#"{"text": "x"}"#, "line 1: needs \"prompt\""),
            (#"{"prompt": "  "}"#, "\"prompt\" is empty"),
            (#"{"prompt": [{"role": "assistant", "content": "x"}]}"#, "no user turn to answer"),
            (#"{"prompt": [{"role": "bot", "content": "x"}]}"#, "message 1: \"role\" must be system, user or assistant"),
            (#"{"chosen": "Hello\n\nHuman: x"}"#, "must be made of"),
            (#"{"chosen": "Assistant: hi Human: x"}"#, "no Human turn"),
            (#"{"prompt": "x", "id": 1.5}"#, "\"id\" must be a non-empty string or an integer"),
        ]
        for (line, message) in cases {
            let path = try write([line])
            XCTAssertThrowsError(try PromptSet.load(path, system: nil), line) { XCTAssertTrue("\($0)".contains(message), "\(line) -> \($0)") }
        }
        let twice = try write([#"{"id": "a", "prompt": "x"}"#, #"{"id": "a", "prompt": "y"}"#])
        XCTAssertThrowsError(try PromptSet.load(twice, system: nil)) { XCTAssertTrue("\($0)".contains("line 2: id \"a\" is also on line 1"), "\($0)") }
        XCTAssertThrowsError(try PromptSet.load(try write([""]), system: nil)) { XCTAssertTrue("\($0)".contains("no prompts"), "\($0)") }
    }

    func testTheShippedPromptSetsAreLargeEnough() throws {
        let red = try PromptSet.load(repoRoot.appendingPathComponent("data/red-team.jsonl").path, system: nil)
        let helpful = try PromptSet.load(repoRoot.appendingPathComponent("data/helpful.jsonl").path, system: nil)
        XCTAssertGreaterThanOrEqual(red.count, 200)
        XCTAssertGreaterThanOrEqual(red.filter { $0.fields["category"] as? String == "rudeness" }.count, 100)
        XCTAssertGreaterThanOrEqual(helpful.count, 200)
    }
}
