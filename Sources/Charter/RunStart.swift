import ArgumentParser
import Foundation

/// How a command treats a run folder that already holds something: a fresh start refuses it, so a
/// finished or crashed run is never wiped by accident; `--resume` continues it; `--overwrite`
/// empties it first.
enum RunStart: Equatable {
    case fresh, resume, overwrite

    init(resume: Bool, overwrite: Bool) throws {
        if resume && overwrite { throw ValidationError("--resume and --overwrite exclude each other") }
        self = resume ? .resume : overwrite ? .overwrite : .fresh
    }

    /// Checks (or, to overwrite, empties) the folder at `path` before anything is written to it;
    /// files named in `keeping` are neither counted nor removed.
    func claim(_ path: String, keeping: Set<String> = []) throws {
        let contents = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { !keeping.contains($0) }
        guard !contents.isEmpty else { return }
        switch self {
        case .resume: return
        case .fresh: throw CLIError("\(path) already holds a run: pass --resume to continue it, or --overwrite to start it again")
        case .overwrite: for item in contents { try FileManager.default.removeItem(atPath: (path as NSString).appendingPathComponent(item)) }
        }
    }
}
