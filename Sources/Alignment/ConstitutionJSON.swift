import Foundation

/// The JSON layouts in which constitutions are published, read unchanged:
/// - the Constitutional AI paper's prompts (and NeMo-Aligner's examples/nlp/cai): an object of
///   named entries `{"prompt": [critique request, ...], "edit_request": revision request}`; each
///   critique request in `prompt` makes a principle with that entry's revision request;
/// - llm-swarm's constitution.json: `{"constitutions": [{"critic": ..., "revision": ...}],
///   "system_chat": [[message, ...], ...]}`, where each system_chat conversation of six turns (user
///   prompt, answer, critique request, critique, revision request, revision) is a worked example.
/// Such files have no comparisons and no version: version is 1, the name is the file's.
enum ConstitutionJSON {
    static func parse(_ data: Data, file: String, name: String) throws -> Constitution {
        guard let json = try? JSONSerialization.jsonObject(with: data) else { throw DataError("\(file): not valid JSON") }
        guard let top = json as? [String: Any], !top.isEmpty else { throw DataError("\(file): expected a JSON object of principles") }
        func fail(_ entry: String, _ problem: String) -> DataError { DataError("\(file): entry \"\(entry)\": \(problem)") }
        var c = Constitution(name: name, version: 1, critiques: [])
        if let list = top["constitutions"] {
            guard let entries = list as? [Any] else { throw fail("constitutions", "must be a list of {critic, revision}") }
            for (i, e) in entries.enumerated() {
                guard let o = e as? [String: Any], let critic = nonEmpty(o["critic"]), let revision = nonEmpty(o["revision"]) else {
                    throw fail("constitutions[\(i)]", "needs non-empty strings \"critic\" and \"revision\"")
                }
                c.critiques.append(.init(critique: critic, revision: revision))
            }
            for (i, chat) in (top["system_chat"] as? [Any] ?? []).enumerated() {
                c.critiqueExamples.append(try example(chat, fail: { fail("system_chat[\(i)]", $0) }))
            }
            if let extra = top.keys.first(where: { !["constitutions", "system_chat"].contains($0) }) {
                throw fail(extra, "unknown beside \"constitutions\" (known: constitutions, system_chat)")
            }
        } else {
            for key in top.keys.sorted(by: naturalOrder) {
                guard let o = top[key] as? [String: Any] else { throw fail(key, "must be an object {\"prompt\": [...], \"edit_request\": ...}") }
                guard let revision = nonEmpty(o["edit_request"]) else { throw fail(key, "needs a non-empty string \"edit_request\"") }
                let prompts = (o["prompt"] as? [Any])?.compactMap(nonEmpty) ?? (nonEmpty(o["prompt"]).map { [$0] } ?? [])
                if prompts.isEmpty { throw fail(key, "needs \"prompt\": a list of non-empty critique requests") }
                c.critiques += prompts.map { .init(critique: $0, revision: revision) }
            }
        }
        if c.critiques.isEmpty { throw DataError("\(file): no principles") }
        return c
    }

    static func nonEmpty(_ v: Any?) -> String? {
        guard let s = v as? String, !s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { return nil }
        return s
    }

    /// Entries keyed like harmful0, harmful1, ..., harmful10 keep their numeric order.
    static func naturalOrder(_ a: String, _ b: String) -> Bool { a.compare(b, options: .numeric) == .orderedAscending }

    static func example(_ chat: Any, fail: (String) -> DataError) throws -> Constitution.CritiqueExample {
        guard let turns = chat as? [[String: Any]], turns.count == 6 else {
            throw fail("must be six turns: prompt, answer, critique request, critique, revision request, revision")
        }
        var texts: [String] = []
        for (i, t) in turns.enumerated() {
            let role = i % 2 == 0 ? "user" : "assistant"
            guard t["role"] as? String == role, let content = nonEmpty(t["content"]) else {
                throw fail("turn \(i + 1) must be {\"role\": \"\(role)\", \"content\": a non-empty string}")
            }
            texts.append(content)
        }
        return .init(prompt: texts[0], answer: texts[1], critiqueRequest: texts[2], critique: texts[3], revisionRequest: texts[4], revision: texts[5])
    }
}
