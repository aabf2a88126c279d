import Foundation

/// SmolLM2-135M-Instruct, the model a command uses when none is named. `charter model fetch` puts
/// it into models/ of the Charter source folder; a command run from another folder still finds it
/// there, through the folder the binary was built in.
public enum DefaultModel {
    public static let path = "models/SmolLM2-135M-Instruct.Q4_1.gguf"

    /// The folders searched, in order: the working folder, then the source folder of this binary
    /// (.build/<triple>/release/charter sits three folders below it).
    public static var searched: [String] {
        let cwd = FileManager.default.currentDirectoryPath
        let source = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("../../..").standardized.path
        return cwd == source ? [cwd] : [cwd, source]
    }

    /// `path` itself unless it is the default's path and nothing is there; then the first searched
    /// folder that holds the default, or an error that says where it looked.
    public static func locate(_ path: String) throws -> String {
        guard path == Self.path, !FileManager.default.fileExists(atPath: path) else { return path }
        let found = searched.map { "\($0)/\(Self.path)" }
        if let hit = found.first(where: { FileManager.default.fileExists(atPath: $0) }) { return hit }
        throw FormatError("the default model \(Self.path) is not in \(searched.joined(separator: " or ")); run `charter model fetch` (or scripts/fetch-model.sh) first")
    }
}
