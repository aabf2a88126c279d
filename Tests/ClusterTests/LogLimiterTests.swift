@testable import Cluster
import XCTest

final class LogLimiterTests: XCTestCase {
    func testABurstPerPeerAndKindThenACountWhenTheWindowCloses() {
        var limiter = LogLimiter(burst: 3, window: 60, maxKeys: 100)
        let allowed = (0..<10).map { _ in limiter.allow(peer: "p", kind: "bad message", now: 1) }
        XCTAssertEqual(allowed, [true, true, true] + [Bool](repeating: false, count: 7))
        XCTAssertTrue(limiter.allow(peer: "p", kind: "invalid result", now: 2), "another kind has its own burst")
        XCTAssertTrue(limiter.allow(peer: "q", kind: "bad message", now: 2), "another peer has its own burst")
        XCTAssertEqual(limiter.suppressed, 7)
        XCTAssertTrue(limiter.closed(now: 60).isEmpty, "the window is still open")
        let closed = limiter.closed(now: 61)
        XCTAssertEqual(closed.map(\.peer), ["p"], "windows that held nothing back close silently")
        XCTAssertEqual(closed.map(\.held), [7])
        XCTAssertTrue(limiter.allow(peer: "p", kind: "bad message", now: 61), "a new window starts afresh")
    }

    /// A peer with a new routing id per message cannot grow the table: past the limit, new peers share one key.
    func testManyPeersShareOneKeyPastTheLimit() {
        var limiter = LogLimiter(burst: 2, window: 60, maxKeys: 4)
        let allowed = (0..<100).filter { limiter.allow(peer: "peer-\($0)", kind: "bad message", now: 0) }.count
        XCTAssertEqual(allowed, 4 + 2)
        XCTAssertEqual(limiter.suppressed, 94)
        XCTAssertEqual(limiter.closed(now: 60).map(\.peer), ["(many peers)"])
    }
}
