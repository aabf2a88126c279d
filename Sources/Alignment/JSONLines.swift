import Foundation

/// JSONL files: one JSON object per line; blank lines are skipped. Errors name the file and line.
public enum JSONLines {
    /// (line number, object) per non-blank line.
    public static func read(_ path: String) throws -> [(line: Int, object: [String: Any])] {
        guard let data = FileManager.default.contents(atPath: path) else { throw DataError("\(path): cannot read") }
        let name = (path as NSString).lastPathComponent
        var out: [(line: Int, object: [String: Any])] = []
        for (i, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            if line.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 13 }) { continue }
            guard let json = try? JSONSerialization.jsonObject(with: Data(line)) else { throw DataError("\(name) line \(i + 1): not valid JSON") }
            guard let object = json as? [String: Any] else { throw DataError("\(name) line \(i + 1): expected a JSON object") }
            out.append((i + 1, object))
        }
        return out
    }

    /// An error about one line of a file.
    public static func error(_ path: String, _ line: Int, _ problem: String) -> DataError {
        DataError("\((path as NSString).lastPathComponent) line \(line): \(problem)")
    }
}
