import Foundation
import XCTest

extension CLITests {
    /// Every `charter` command shown in README.md's code blocks names a command that exists and
    /// only options that command takes (as its --help lists them), so the README cannot drift from
    /// the program. The commands of the first hour are also run for real by other tests
    /// (examples/tiny.yaml under `local`, `tokenize`, `generate`, `rm`, `sft`, `revise`, `label`).
    func testEveryReadmeCommandNamesOptionsThatExist() throws {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        var inBlock = false, lines: [String] = [], pending = ""
        for line in readme.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("```") { inBlock.toggle(); continue }
            guard inBlock else { continue }
            pending += line
            if pending.hasSuffix("\\") { pending.removeLast(); continue }
            lines.append(pending); pending = ""
        }
        var helps: [String: String] = [:]
        func help(_ path: [String]) throws -> String {
            if let h = helps[path.joined(separator: " ")] { return h }
            let r = try charter(path + ["--help"])
            XCTAssertEqual(r.status, 0, "charter \(path.joined(separator: " ")) --help: \(r.err)")
            helps[path.joined(separator: " ")] = r.out
            return r.out
        }
        var commands = 0
        for line in lines {
            for part in line.components(separatedBy: "charter ").dropFirst() {
                // The command ends at a comment, at a description after two spaces, or at a shell operator.
                var command = part.components(separatedBy: "  ")[0].components(separatedBy: " #")[0]
                for end in ["&&", "'", ";"] { command = command.components(separatedBy: end)[0] }
                let words = command.split(separator: " ").map(String.init)
                var path: [String] = []
                if let first = words.first, !first.hasPrefix("-") {
                    path = [first]
                    if words.count > 1, !words[1].hasPrefix("-"), try help(path).contains("SUBCOMMANDS:") {
                        path.append(String(words[1].split(separator: "|")[0]))
                    }
                }
                let text = try help(path)
                let options = words.flatMap { $0.split(whereSeparator: { "[]|=".contains($0) }) }.filter { $0.hasPrefix("--") }
                for option in options {
                    XCTAssertTrue(text.contains(option + " ") || text.contains(option + "\n") || text.contains(option + ","),
                                  "README: `charter \(command)` uses \(option), which `charter \(path.joined(separator: " ")) --help` does not list")
                }
                commands += 1
            }
        }
        XCTAssertGreaterThan(commands, 30, "the README's commands were not found")
    }
}
