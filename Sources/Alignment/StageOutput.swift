import Foundation

/// A stage's output file: JSONL, one line per finished item, appended as results are accepted.
/// Lines reach the file (write) at once and the disk (fsync) in batches, so a killed process
/// loses none it accepted and a power cut at most the last batch. Opened for resume, it reads the
/// ids already done (dropping a last line cut off mid-write), so only the others are run again
/// and the finished file holds every item once.
public final class StageOutput {
    public let path: String
    /// Ids of the items in the file.
    public private(set) var done: Set<String> = []
    /// Lines appended by this process.
    public private(set) var appended = 0
    let handle: FileHandle
    let syncEvery: Int, syncSeconds: Double
    var unsynced = 0
    var lastSync = Date()

    /// `resume`: keep the lines there and read their ids; otherwise start the file empty.
    public init(path: String, resume: Bool, syncEvery: Int = 256, syncSeconds: Double = 1) throws {
        self.path = path; self.syncEvery = syncEvery; self.syncSeconds = syncSeconds
        let fm = FileManager.default
        if !resume || !fm.fileExists(atPath: path) {
            guard fm.createFile(atPath: path, contents: nil) else { throw DataError("\(path): cannot create") }
        } else {
            try Self.dropCutLine(path)
            for (n, o) in try JSONLines.read(path) {
                guard let id = o["id"] as? String else { throw JSONLines.error(path, n, "a stage output line needs a string \"id\"") }
                guard done.insert(id).inserted else { throw JSONLines.error(path, n, "id \"\(id)\" is in the file twice") }
            }
        }
        guard let h = FileHandle(forUpdatingAtPath: path) else { throw DataError("\(path): cannot open for writing") }
        handle = h
        handle.seekToEndOfFile()
    }

    deinit { try? sync() }

    /// A process killed mid-write leaves a last line without its newline: it was never accepted.
    static func dropCutLine(_ path: String) throws {
        guard let data = FileManager.default.contents(atPath: path), let last = data.last, last != UInt8(ascii: "\n") else { return }
        let keep = data.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0
        guard let h = FileHandle(forWritingAtPath: path) else { throw DataError("\(path): cannot open for writing") }
        defer { try? h.close() }
        try h.truncate(atOffset: UInt64(keep))
    }

    /// Appends one line per object (each has a string "id" not yet in the file); returns how many
    /// were new. An id already done is skipped: the file never holds an item twice.
    @discardableResult
    public func append(_ objects: [[String: Any]]) throws -> Int {
        var bytes = Data(), added = 0
        for o in objects {
            guard let id = o["id"] as? String, done.insert(id).inserted else { continue }
            bytes += JSONLine.encode(o)
            bytes.append(UInt8(ascii: "\n"))
            added += 1
        }
        guard added > 0 else { return 0 }
        try handle.write(contentsOf: bytes)
        appended += added; unsynced += added
        if unsynced >= syncEvery || Date().timeIntervalSince(lastSync) >= syncSeconds { try sync() }
        return added
    }

    /// Everything appended so far onto the disk.
    public func sync() throws {
        guard unsynced > 0 else { return }
        try handle.synchronize()
        unsynced = 0
        lastSync = Date()
    }
}
