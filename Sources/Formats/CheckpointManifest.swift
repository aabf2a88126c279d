import CCRC32C
import Foundation

/// manifest.json in every folder `Checkpoint.atomically` writes: each file's size and CRC-32C, so
/// a resumed run refuses a checkpoint whose bytes changed after it was written (a flipped bit in
/// the optimizer moments would otherwise resume and end in NaN many steps later).
public enum CheckpointManifest {
    public static let name = "manifest.json"

    struct Entry: Codable, Equatable {
        var bytes: Int
        var crc32c: String
    }

    /// Records every file under `folder` (subfolders included).
    public static func write(in folder: URL) throws {
        var files: [String: Entry] = [:]
        for path in try filePaths(in: folder) where path != name {
            files[path] = try entry(folder.appendingPathComponent(path))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(["files": files]).write(to: folder.appendingPathComponent(name))
    }

    /// Checks every file the manifest lists: present, of its size and checksum.
    public static func verify(_ folder: URL) throws(FormatError) {
        let url = folder.appendingPathComponent(name)
        guard let data = try? Data(contentsOf: url) else {
            throw FormatError("\(folder.path) has no \(name): not a checkpoint Charter finished writing (or one written before checkpoints had manifests; start again with --overwrite)")
        }
        guard let files = (try? JSONDecoder().decode([String: [String: Entry]].self, from: data))?["files"] else {
            throw FormatError("\(url.path): not a checkpoint manifest; the checkpoint is damaged")
        }
        for (path, expected) in files.sorted(by: { $0.key < $1.key }) {
            let file = folder.appendingPathComponent(path)
            guard let found = try? entry(file) else { throw FormatError("\(file.path): missing; the checkpoint is damaged") }
            guard found == expected else {
                throw FormatError("\(file.path): \(found.bytes == expected.bytes ? "checksum \(found.crc32c), the manifest says \(expected.crc32c)" : "\(found.bytes) bytes, the manifest says \(expected.bytes)"); the checkpoint is damaged")
            }
        }
    }

    static func entry(_ file: URL) throws -> Entry {
        let data = try Data(contentsOf: file, options: .alwaysMapped)
        let crc = data.withUnsafeBytes { charter_crc32c(0, $0.baseAddress, $0.count) }
        return Entry(bytes: data.count, crc32c: String(format: "%08x", crc))
    }

    /// Paths of regular files under `folder`, relative to it.
    static func filePaths(in folder: URL) throws -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: folder.path) else { return [] }
        var paths: [String] = []
        while let path = walker.nextObject() as? String {
            if (walker.fileAttributes?[.type] as? FileAttributeType) == .typeRegular { paths.append(path) }
        }
        return paths.sorted()
    }
}
