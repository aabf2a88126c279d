import Foundation

/// How a run treats a folder that already holds something: a fresh start refuses it, so a
/// finished or crashed run is never wiped by accident; `resume` continues it; `overwrite`
/// empties it first.
public enum RunStart: Equatable, Sendable {
    case fresh, resume, overwrite

    /// Checks (or, to overwrite, empties) the folder at `path` before anything is written to it;
    /// files named in `keeping` are neither counted nor removed.
    public func claim(_ path: String, keeping: Set<String> = []) throws {
        let contents = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { !keeping.contains($0) }
        guard !contents.isEmpty else { return }
        switch self {
        case .resume: return
        case .fresh: throw DataError("\(path) already holds a run: pass --resume to continue it, or --overwrite to start it again")
        case .overwrite: for item in contents { try FileManager.default.removeItem(atPath: (path as NSString).appendingPathComponent(item)) }
        }
    }
}

/// Where a run reports its steps: a progress bar on a terminal, log lines without one.
public protocol RunProgress: AnyObject {
    /// Called once, before the first step: `done` of `total` steps are behind (a resumed run).
    func begin(total: Int, done: Int)
    func update(step: Int, text: String)
    /// A line between updates (an epoch's evaluation, say).
    func note(_ text: String)
    func finish()
}
