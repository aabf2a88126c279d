/// Keeps a flood of bad messages from flooding the log: at most `burst` lines per (peer, kind) in
/// a window of `window` seconds. Lines held back are counted, and when the window closes one line
/// says how many there were. A peer that changes its routing id with every message cannot grow
/// the table without bound: past `maxKeys` keys, new peers share one key.
struct LogLimiter {
    struct Key: Hashable { let peer: String, kind: String }
    struct Window { var start: Double; var printed = 0, held = 0 }

    let burst: Int, window: Double, maxKeys: Int
    private var windows: [Key: Window] = [:]
    /// Every line held back since the start.
    private(set) var suppressed = 0

    init(burst: Int = 5, window: Double = 60, maxKeys: Int = 1024) {
        self.burst = burst; self.window = window; self.maxKeys = maxKeys
    }

    /// Whether a line of `kind` about `peer` may be logged now; if not, it is counted.
    mutating func allow(peer: String, kind: String, now: Double) -> Bool {
        var key = Key(peer: peer, kind: kind)
        if windows[key] == nil && windows.count >= maxKeys { key = Key(peer: "(many peers)", kind: kind) }
        var w = windows[key] ?? Window(start: now)
        defer { windows[key] = w }
        if w.printed < burst { w.printed += 1; return true }
        w.held += 1
        suppressed += 1
        return false
    }

    /// The windows that have closed, with how many lines each held back (those with none are
    /// dropped silently); their peers start afresh.
    mutating func closed(now: Double) -> [(peer: String, kind: String, held: Int)] {
        let done = windows.filter { now - $0.value.start >= window }
        for key in done.keys { windows[key] = nil }
        return done.filter { $0.value.held > 0 }.sorted { ($0.key.peer, $0.key.kind) < ($1.key.peer, $1.key.kind) }
            .map { ($0.key.peer, $0.key.kind, $0.value.held) }
    }
}
