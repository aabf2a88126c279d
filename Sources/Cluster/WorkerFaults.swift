import Foundation

/// Faults a test asks a worker to show (hidden `worker` flags), kept out of the work loop. Each
/// acts when the task after the first `n` arrives: the worker asks for a task only after sending
/// its last result on the same connection, so by then the coordinator has every earlier result.
public struct WorkerFaults: Sendable {
    /// Take task n+1 and never answer (the coordinator must give it to someone else).
    public var stallAfterTasks: Int?
    /// Stop this process (SIGSTOP) on task n+1 until a SIGCONT, then drop that task: a test acts
    /// at a known point, typically killing the coordinator that handed it out. Once only.
    public var pauseAfterTasks: Int?
    public init() {}

    /// Whether the worker should do `task` after `tasksDone` answered ones.
    mutating func allows(_ taskId: String, tasksDone: Int, log: (String) -> Void) -> Bool {
        if let n = stallAfterTasks, tasksDone >= n {
            log("stalling on task \(taskId) (--stall-after-tasks)")
            while true { sleep(60) }
        }
        if tasksDone == pauseAfterTasks {
            log("pausing after \(tasksDone) tasks (--pause-after-tasks), holding task \(taskId)")
            pauseAfterTasks = nil // the dropped task leaves tasksDone as it was
            raise(SIGSTOP)
            log("continued; task \(taskId) dropped")
            return false
        }
        return true
    }
}
