import Foundation
import XCTest

/// A process a test starts, spawned and reaped here with posix_spawn and waitpid. Foundation's
/// Process learns of every exit through one shared thread and a socket the child inherits; once
/// that went wrong a whole CI run waited for a test that never ended (stop 34). Here every wait
/// has a deadline, and a process kept past it is killed with everything it started.
final class Child: @unchecked Sendable {
    let processIdentifier: pid_t
    let arguments: [String]
    private let lock = NSLock()
    private var status: Int32?

    /// Starts `executable args` in `folder`; stdout and stderr go to the files given (nil: /dev/null).
    init(_ executable: String, _ arguments: [String], in folder: String, environment: [String: String] = [:],
         stdout: String?, stderr: String?) throws {
        self.arguments = arguments
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        if let stderr, stderr == stdout {
            posix_spawn_file_actions_adddup2(&actions, 1, 2) // one file, one offset: the streams cannot overwrite each other
        } else {
            posix_spawn_file_actions_addopen(&actions, 2, stderr ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        }
        // glibc has these, but Swift's Glibc module does not show them (they need _GNU_SOURCE).
        _ = Self.closeFrom(&actions, 3) // nothing else of the test process leaks into the child
        guard Self.changeDirectory(&actions, folder) == 0 else { throw CocoaError(.fileNoSuchFile) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none); sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let env = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { "\($0)=\($1)" }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil], envp = env.map { strdup($0) } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard rc == 0 else { throw CocoaError(.executableLoad, userInfo: [NSFilePathErrorKey: executable, NSUnderlyingErrorKey: POSIXError(POSIXErrorCode(rawValue: rc) ?? .EINVAL)]) }
        processIdentifier = pid
    }

    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
    static let closeFrom = unsafeBitCast(dlsym(nil, "posix_spawn_file_actions_addclosefrom_np"), to: AddCloseFrom.self)
    static let changeDirectory = unsafeBitCast(dlsym(nil, "posix_spawn_file_actions_addchdir_np"), to: AddChdir.self)

    /// Reaps the process if it has ended; true while it runs.
    var isRunning: Bool {
        lock.withLock {
            guard status == nil else { return false }
            var raw: Int32 = 0
            if waitpid(processIdentifier, &raw, WNOHANG) == processIdentifier { status = raw }
            return status == nil
        }
    }

    /// The exit code, or the number of the signal that ended it (as Foundation's Process gives it).
    var terminationStatus: Int32 {
        guard let raw = lock.withLock({ status }) else { preconditionFailure("\(arguments.first ?? "process") is still running") }
        return raw & 0x7f == 0 ? (raw >> 8) & 0xff : raw & 0x7f
    }

    var endedBySignal: Bool { lock.withLock { status.map { $0 & 0x7f != 0 } ?? false } }

    func terminate() { if isRunning { kill(processIdentifier, SIGTERM) } }

    /// Waits at most `seconds` for the end; true if it ended.
    @discardableResult
    func wait(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while isRunning && Date() < deadline { usleep(10_000) }
        return !isRunning
    }

    /// Waits for the end, at most `seconds`; past that the process and all it started are killed.
    /// True if it ended by itself.
    @discardableResult
    func waitUntilExit(seconds: Double = 300) -> Bool {
        if wait(seconds: seconds) { return true }
        killTree()
        return false
    }

    /// SIGKILL to this process and every descendant (found before any dies, so none is missed by
    /// being handed to init), then waits for this one's end.
    func killTree() {
        for pid in Self.descendants(of: processIdentifier) + [processIdentifier] { kill(pid, SIGKILL) }
        wait(seconds: 30)
    }

    /// Every process under `root`, from /proc.
    static func descendants(of root: pid_t) -> [pid_t] {
        var children: [pid_t: [pid_t]] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(name), let stat = try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8),
                  let fields = stat.split(separator: ")").last?.split(separator: " "), fields.count > 1, let parent = pid_t(fields[1]) else { continue }
            children[parent, default: []].append(pid)
        }
        var found: [pid_t] = [], queue = [root]
        while let p = queue.popLast() {
            let next = children[p] ?? []
            found += next; queue += next
        }
        return found
    }
}
