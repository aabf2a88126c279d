import Foundation
import Logging
import Synchronization

/// The one log handler of every Charter process: a line per event on standard error, written with
/// one unbuffered write as it happens (so a log file under Slurm or Kubernetes, or one cut short by
/// a kill, holds every line up to that moment), carrying the time, the level, the process's role
/// (its logger's label: `coordinator`, `worker ID`, `rl`, `stage NAME`) and the run id:
///
///     2026-12-05T07:31:02.123Z info coordinator run=run-1-4242-1796461862: control tcp://127.0.0.1:5555, ...
public struct LineLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String
    let write: @Sendable (String) -> Void

    public init(label: String, level: Logger.Level = .info, write: @escaping @Sendable (String) -> Void = LineLogHandler.standardError) {
        self.label = label; self.logLevel = level; self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        write(Self.line(time: Date(), level: event.level, label: label, metadata: metadata.merging(event.metadata ?? [:]) { $1 },
                        message: "\(event.message)"))
    }

    /// The line without its newline. Metadata comes sorted by key, `run` first.
    public static func line(time: Date, level: Logger.Level, label: String, metadata: Logger.Metadata, message: String) -> String {
        let keys = metadata.keys.sorted { ($0 == "run" ? "" : $0) < ($1 == "run" ? "" : $1) }
        let fields = keys.map { " \($0)=\(metadata[$0]!)" }.joined()
        return "\(timestamp(time)) \(level) \(label)\(fields): \(message)"
    }

    /// ISO 8601 in UTC with milliseconds.
    static func timestamp(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let millis = Int((date.timeIntervalSince1970 - Double(seconds)) * 1000)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), millis)
    }

    /// One write(2) per line: lines of processes sharing a log file do not interleave mid-line.
    public static let standardError: @Sendable (String) -> Void = { line in
        let bytes = Array((line + "\n").utf8)
        bytes.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = Foundation.write(2, raw.baseAddress! + done, raw.count - done)
                if n <= 0 { if errno == EINTR { continue } else { return } }
                done += n
            }
        }
    }

    /// Makes every Logger of this process a LineLogHandler at `level`. The first call decides:
    /// `charter train` runs other commands in its process, and each of them calls this.
    public static func bootstrap(level: Logger.Level) {
        bootstrapped.withLock { done in
            if done { return }
            done = true
            LoggingSystem.bootstrap { label in LineLogHandler(label: label, level: level) }
        }
    }

    static let bootstrapped = Mutex(false)
}

extension Logger {
    /// A logger that drops everything (benchmarks, unit tests of a coordinator).
    public static let silent = Logger(label: "silent", factory: { _ in SwiftLogNoOpLogHandler() })
}
