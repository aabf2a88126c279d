import Foundation
import Tokenizer
import Yams

/// A written constitution (docs/constitution.md): critique/revision principles for self-revision,
/// comparison questions for the pairwise judge, and worked examples shown to the model as earlier
/// turns. Read from Charter's YAML layout or from the JSON layouts peers publish.
public struct Constitution: Sendable, Equatable {
    /// A critique request and the revision request that follows it: two user turns.
    public struct Critique: Sendable, Equatable {
        public var critique: String
        public var revision: String
        public var tags: [String] = []

        public init(critique: String, revision: String, tags: [String] = []) { self.critique = critique; self.revision = revision; self.tags = tags }
    }

    /// A question for a judge that sees a conversation and two answers.
    public struct Comparison: Sendable, Equatable {
        public var question: String
        public var tags: [String] = []

        public init(question: String, tags: [String] = []) { self.question = question; self.tags = tags }
    }

    /// A worked critique and revision, with the requests that asked for them.
    public struct CritiqueExample: Sendable, Equatable {
        public var prompt: String
        public var answer: String
        public var critiqueRequest: String
        public var critique: String
        public var revisionRequest: String
        public var revision: String

        public init(prompt: String, answer: String, critiqueRequest: String, critique: String, revisionRequest: String, revision: String) {
            self.prompt = prompt; self.answer = answer; self.critiqueRequest = critiqueRequest
            self.critique = critique; self.revisionRequest = revisionRequest; self.revision = revision
        }
    }

    /// A worked comparison: `choice` (0-based) is the option the question prefers.
    public struct ComparisonExample: Sendable, Equatable {
        public var prompt: String
        public var options: [String]
        public var question: String
        public var choice: Int
    }

    public var name: String
    public var version: Int
    public var critiques: [Critique]
    public var comparisons: [Comparison] = []
    public var critiqueExamples: [CritiqueExample] = []
    public var comparisonExamples: [ComparisonExample] = []

    public init(name: String, version: Int, critiques: [Critique], comparisons: [Comparison] = []) {
        self.name = name; self.version = version; self.critiques = critiques; self.comparisons = comparisons
    }

    /// A `.json` file is read in the published layouts (ConstitutionJSON), anything else as YAML.
    public static func load(_ path: String) throws -> Constitution {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw DataError("\(path): cannot read") }
        let file = (path as NSString).lastPathComponent
        if path.hasSuffix(".json") {
            return try ConstitutionJSON.parse(Data(text.utf8), file: file, name: ((file as NSString).deletingPathExtension))
        }
        return try parse(text, file: file)
    }

    static let keys: [String: [String]] = [
        "": ["name", "version", "critiques", "comparisons", "few_shot"],
        "critiques": ["critique", "revision", "tags"],
        "comparisons": ["question", "tags"],
        "few_shot": ["critiques", "comparisons"],
        "few_shot.critiques": ["prompt", "answer", "principle", "critique", "revision"],
        "few_shot.comparisons": ["prompt", "options", "principle", "choice"],
    ]

    /// Charter's YAML layout; every problem names the file, the line and the entry.
    public static func parse(_ text: String, file: String) throws -> Constitution {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch { throw DataError.yaml(file, error) }
        guard let root else { throw DataError("\(file): empty constitution") }
        let top = try Section(root, path: "", file: file)
        try top.only(keys[""]!)
        guard let name = try top.string("name"), !name.isEmpty else { throw top.error("name", "is required: a non-empty string") }
        guard let version = try top.int("version", min: 1) else { throw top.error("version", "is required: a whole number, 1 or more") }
        let critiques = try top.sections("critiques").map { s in
            try s.only(keys["critiques"]!)
            return Critique(critique: try s.text("critique"), revision: try s.text("revision"), tags: try s.strings("tags") ?? [])
        }
        if critiques.isEmpty { throw top.error("critiques", "is required: a list of {critique, revision} pairs") }
        let comparisons = try top.sections("comparisons").map { s in
            try s.only(keys["comparisons"]!)
            return Comparison(question: try s.text("question"), tags: try s.strings("tags") ?? [])
        }
        var c = Constitution(name: name, version: version, critiques: critiques, comparisons: comparisons)
        if let shots = try top.section("few_shot") {
            try shots.only(keys["few_shot"]!)
            c.critiqueExamples = try shots.sections("critiques").map { s in
                try s.only(keys["few_shot.critiques"]!)
                let p = try s.principle(critiques.count, what: "critiques")
                return CritiqueExample(prompt: try s.text("prompt"), answer: try s.text("answer"), critiqueRequest: critiques[p].critique,
                                       critique: try s.text("critique"), revisionRequest: critiques[p].revision, revision: try s.text("revision"))
            }
            c.comparisonExamples = try shots.sections("comparisons").map { s in
                try s.only(keys["few_shot.comparisons"]!)
                let p = try s.principle(comparisons.count, what: "comparisons")
                guard let options = try s.strings("options"), options.count == 2, options.allSatisfy({ !$0.isEmpty }) else {
                    throw s.error("options", "must be a list of two non-empty strings")
                }
                guard let choice = try s.int("choice", min: 1), choice <= 2 else { throw s.error("choice", "is required: 1 or 2, the option preferred") }
                return ComparisonExample(prompt: try s.text("prompt"), options: options, question: comparisons[p].question, choice: choice - 1)
            }
        }
        return c
    }

    /// The principles whose tags include `tag` (all of them when none has tags).
    public func critiques(tagged tag: String) -> [Int] {
        if critiques.allSatisfy({ $0.tags.isEmpty }) { return Array(critiques.indices) }
        return critiques.indices.filter { critiques[$0].tags.contains(tag) }
    }
}

extension Section {
    /// A required, non-empty string.
    func text(_ key: String) throws -> String {
        guard let s = try string(key), !s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw error(key, "is required: a non-empty string")
        }
        return s
    }

    /// A 1-based `principle` into a list of `count`, returned 0-based.
    func principle(_ count: Int, what: String) throws -> Int {
        guard let p = try int("principle", min: 1) else { throw error("principle", "is required: the number of one of the \(what), from 1") }
        guard p <= count else { throw error("principle", "is \(p), but there \(count == 1 ? "is 1" : "are \(count)") \(what)") }
        return p - 1
    }
}
