/// The coordinator's bookkeeping of one iteration's work, free of sockets and clocks: tasks are
/// pulled by workers, leased to them, returned to the queue when a worker goes silent, and
/// accepted once each. Time comes in as seconds from the caller, so tests drive it directly.
///
/// A worker that heartbeats but never answers (a slow machine, or a peer hoarding tasks) would
/// hold its task for ever. So once the queue is empty, a worker that asks and holds no unfinished
/// task gets a copy of the task leased longest, if that lease has run past the straggler limit:
/// twice the median time recent tasks took from lease to result, at least `stragglerFloor`
/// seconds. Another copy follows only when the last one has run that long too (so a hoarder cannot
/// sit on the copy either). The first result is taken, the others dropped as duplicates.
public final class Scheduler {
    public struct TaskSpec: Sendable, Equatable {
        public let id: String
        public let iteration: Int
        public let policyVersion: Int
        public let promptIds: [Int]
        /// A stage task's items (a rollout task has none).
        public var itemIds: [String] = []
    }

    public enum Outcome: Sendable, Equatable { case accepted, duplicate, stale, unknown, quarantined }

    public struct Counters: Sendable, Equatable {
        public var redispatched = 0, duplicates = 0, stale = 0, unknown = 0
        /// Copies of straggling tasks given to idle workers.
        public var speculative = 0
        /// Results from quarantined workers, dropped whatever they hold.
        public var fromQuarantined = 0
        /// Stage items handed to workers, re-dispatches included.
        public var itemsDispatched = 0
        public init(redispatched: Int = 0, duplicates: Int = 0, stale: Int = 0, unknown: Int = 0) {
            self.redispatched = redispatched; self.duplicates = duplicates; self.stale = stale; self.unknown = unknown
        }
    }

    struct Worker { var lastSeen: Double; var leases: Set<String> }

    public let heartbeatTimeout: Double
    public let stragglerFloor: Double
    public private(set) var iteration = -1
    public private(set) var policyVersion = 0
    public private(set) var counters = Counters()
    private var workers: [String: Worker] = [:]
    private var tasks: [String: TaskSpec] = [:]
    private var queue = TaskQueue()                  // task ids waiting, front first
    private var leasedTo: [String: String] = [:]     // task id -> worker id
    private var leasedAt: [String: Double] = [:]     // task id -> when its lease began
    private var copies: [String: [String: Double]] = [:] // task id -> worker with a copy -> when it got it
    private var durations: [Double] = []             // seconds from lease to result, of recent accepted tasks
    private var limit: Double                        // the straggler limit those durations give
    private var clock = 0.0                          // the latest time a caller gave
    private var done: Set<String> = []
    /// Workers that sent an invalid result: still registered, never given a task again.
    public private(set) var quarantined: Set<String> = []

    public init(heartbeatTimeout: Double, stragglerFloor: Double = ProtocolTiming.stragglerFloorSeconds) {
        self.heartbeatTimeout = heartbeatTimeout; self.stragglerFloor = stragglerFloor
        limit = stragglerFloor
    }

    /// How long a lease may run before its task is copied to an idle worker.
    public var stragglerLimit: Double { limit }

    /// The last 64 tasks' times set the limit (tasks of a stage or of RL iterations are alike in size).
    private func measured(_ seconds: Double) {
        durations.append(seconds)
        if durations.count > 64 { durations.removeFirst() }
        limit = max(stragglerFloor, 2 * durations.sorted()[durations.count / 2])
    }

    public var aliveWorkers: [String] { workers.keys.sorted() }
    public func isAlive(_ worker: String) -> Bool { workers[worker] != nil }
    public var isIterationComplete: Bool { !tasks.isEmpty && done.count == tasks.count }
    public var pendingTasks: Int { tasks.count - done.count }
    /// The current iteration's (or stage's) tasks by state; a task leased and copied counts once.
    public var taskCounts: (queued: Int, leased: Int, done: Int) { (queue.count, leasedTo.count, done.count) }
    public func task(_ id: String) -> TaskSpec? { tasks[id] }

    /// A worker (re)joins. A reconnecting worker keeps its leases: its results are still welcome.
    public func register(_ worker: String, now: Double) {
        clock = now
        workers[worker, default: Worker(lastSeen: now, leases: [])].lastSeen = now
    }

    public func heartbeat(_ worker: String, now: Double) {
        clock = now
        workers[worker]?.lastSeen = now
    }

    /// Forgets a worker at once (it said goodbye or its connection died); its leases go back.
    public func remove(_ worker: String) {
        guard let w = workers.removeValue(forKey: worker) else { return }
        for id in w.leases { release(id, from: worker) }
    }

    /// `worker` no longer works on `id`: a copy is dropped; the lease itself passes to the oldest
    /// copy, or the task goes back to the front of the queue.
    private func release(_ id: String, from worker: String) {
        workers[worker]?.leases.remove(id)
        guard !done.contains(id) else { return }
        if copies[id]?.removeValue(forKey: worker) != nil { return }
        guard leasedTo[id] == worker else { return }
        if let (copy, at) = copies[id]?.min(by: { ($0.value, $0.key) < ($1.value, $1.key) }) {
            copies[id]![copy] = nil
            leasedTo[id] = copy; leasedAt[id] = at // the copy carries on
            return
        }
        leasedTo[id] = nil
        queue.pushFront(id)
        counters.redispatched += 1
    }

    /// A result for this task was refused (it did not match the task): unless the task is done or
    /// already waiting, it goes back to the front of the queue, so the iteration cannot stall on it.
    public func requeue(_ taskId: String) {
        guard tasks[taskId] != nil, !done.contains(taskId), !queue.contains(taskId) else { return }
        if let holder = leasedTo.removeValue(forKey: taskId) { workers[holder]?.leases.remove(taskId) }
        for copy in (copies.removeValue(forKey: taskId) ?? [:]).keys { workers[copy]?.leases.remove(taskId) }
        queue.pushFront(taskId)
        counters.redispatched += 1
    }

    /// A worker sent what no honest worker sends: it gets no more tasks (it could otherwise take the
    /// same task again and again), and its leases go as if it had left (to a copy, or the queue).
    public func quarantine(_ worker: String) {
        quarantined.insert(worker)
        for id in workers[worker]?.leases ?? [] { release(id, from: worker) }
    }

    /// Workers silent for longer than the timeout are removed; returns them.
    @discardableResult
    public func expire(now: Double) -> [String] {
        clock = now
        let dead = workers.filter { now - $0.value.lastSeen > heartbeatTimeout }.keys.sorted()
        dead.forEach(remove)
        return dead
    }

    /// Forgets the previous work: no tasks, no leases.
    private func begin(iteration: Int, policyVersion: Int) {
        self.iteration = iteration
        self.policyVersion = policyVersion
        tasks = [:]; queue = TaskQueue(); leasedTo = [:]; leasedAt = [:]; copies = [:]; done = []
        workers = workers.mapValues { Worker(lastSeen: $0.lastSeen, leases: []) }
    }

    /// Cuts an iteration's prompts into tasks of at most `promptsPerTask`, in order.
    public func startIteration(_ iteration: Int, policyVersion: Int, promptIds: [Int], promptsPerTask: Int) {
        precondition(promptsPerTask >= 1, "tasks need at least one prompt")
        begin(iteration: iteration, policyVersion: policyVersion)
        for (n, start) in stride(from: 0, to: promptIds.count, by: promptsPerTask).enumerated() {
            let spec = TaskSpec(id: "\(iteration)-\(n)", iteration: iteration, policyVersion: policyVersion,
                                promptIds: Array(promptIds[start ..< min(start + promptsPerTask, promptIds.count)]))
            tasks[spec.id] = spec
            queue.append(spec.id)
        }
    }

    /// Cuts a stage's items into tasks of at most `itemsPerTask`, in order. Task ids carry `prefix`
    /// (the coordinator process's run id), so a result computed for an earlier process is unknown
    /// here, never taken for a task that holds other items.
    public func startStage(_ name: String, prefix: String, itemIds: [String], itemsPerTask: Int) {
        precondition(itemsPerTask >= 1, "tasks need at least one item")
        begin(iteration: 0, policyVersion: 0)
        durations = []; limit = stragglerFloor // another stage's tasks may be another size
        for (n, start) in stride(from: 0, to: itemIds.count, by: itemsPerTask).enumerated() {
            var spec = TaskSpec(id: "\(prefix)/\(name)-\(n)", iteration: 0, policyVersion: 0, promptIds: [])
            spec.itemIds = Array(itemIds[start ..< min(start + itemsPerTask, itemIds.count)])
            tasks[spec.id] = spec
            queue.append(spec.id)
        }
    }

    /// The next task for a worker that asked for one, or nil when nothing waits.
    public func nextTask(for worker: String, now: Double) -> TaskSpec? {
        clock = now
        guard workers[worker] != nil, !quarantined.contains(worker) else { return nil }
        workers[worker]!.lastSeen = now
        let id: String
        if let next = queue.popFront() {
            id = next
            leasedTo[id] = worker
            leasedAt[id] = now
        } else if workers[worker]!.leases.isEmpty, let late = straggler(for: worker, now: now) {
            id = late
            copies[id, default: [:]][worker] = now
            counters.speculative += 1
        } else {
            return nil
        }
        workers[worker]!.leases.insert(id)
        counters.itemsDispatched += tasks[id]!.itemIds.count
        return tasks[id]
    }

    /// The task whose lease began earliest among those past the straggler limit whose last copy
    /// (if any) is past it too.
    private func straggler(for worker: String, now: Double) -> String? {
        leasedTo.filter { id, _ in now - leasedAt[id]! >= limit && now - (copies[id]?.values.max() ?? -.infinity) >= limit }
            .min { (leasedAt[$0.key]!, $0.key) < (leasedAt[$1.key]!, $1.key) }?.key
    }

    /// A result arrived for `taskId`, produced with `policyVersion`. Each task is accepted once.
    public func complete(_ taskId: String, from worker: String, policyVersion: Int) -> Outcome {
        workers[worker]?.leases.remove(taskId)
        // A worker caught sending what no honest worker sends is not believed again.
        if quarantined.contains(worker) { counters.fromQuarantined += 1; return .quarantined }
        guard let spec = tasks[taskId] else {
            // A task of an earlier iteration: stale if its version is old, otherwise unknown.
            if policyVersion < self.policyVersion { counters.stale += 1; return .stale }
            counters.unknown += 1
            return .unknown
        }
        if policyVersion != spec.policyVersion { counters.stale += 1; return .stale }
        if done.contains(taskId) { counters.duplicates += 1; return .duplicate }
        done.insert(taskId)
        // The time of the lease whose result this is: a straggler's would say nothing of the work.
        if let began = leasedTo[taskId] == worker ? leasedAt[taskId] : copies[taskId]?[worker] { measured(max(0, clock - began)) }
        for holder in [leasedTo[taskId]].compactMap({ $0 }) + (copies[taskId]?.keys.map { $0 } ?? []) { workers[holder]?.leases.remove(taskId) }
        leasedTo[taskId] = nil
        copies[taskId] = nil
        queue.remove(taskId) // a re-queued task finished by its first holder after all
        return .accepted
    }
}

/// Task ids waiting, front first, with every operation in constant time (amortized): a queue of
/// 20,000 tasks is common in a stage, and an array's removeFirst or removeAll would cost O(n) a result.
struct TaskQueue {
    private var ids: [String] = []
    private var head = 0
    private var waiting: Set<String> = []

    var isEmpty: Bool { waiting.isEmpty }
    var count: Int { waiting.count }
    func contains(_ id: String) -> Bool { waiting.contains(id) }

    mutating func append(_ id: String) {
        if waiting.insert(id).inserted { ids.append(id) }
    }

    mutating func pushFront(_ id: String) {
        guard waiting.insert(id).inserted else { return }
        if head > 0 { head -= 1; ids[head] = id } else { ids.insert(id, at: 0) }
    }

    /// Forgets an id; its slot is skipped when reached.
    mutating func remove(_ id: String) { waiting.remove(id) }

    mutating func popFront() -> String? {
        while head < ids.count {
            let id = ids[head]
            head += 1
            if head > 1024 && head * 2 > ids.count { ids.removeFirst(head); head = 0 }
            if waiting.remove(id) != nil { return id }
        }
        return nil
    }
}
