import Cluster
import Foundation
import Logging
import XCTest

final class LineLogHandlerTests: XCTestCase {
    /// The line: UTC time with milliseconds, level, role, run first then other metadata by key, message.
    func testALineCarriesTimeLevelRoleAndRun() {
        let time = Date(timeIntervalSince1970: 1_796_461_862.0456) // 2026-12-05T09:11:02.0456Z (Python: datetime.utcfromtimestamp)
        XCTAssertEqual(LineLogHandler.line(time: time, level: .warning, label: "worker w1", metadata: ["task": "t-3", "run": "run-1-2-3"],
                                           message: "lost the connection"),
                       "2026-12-05T09:11:02.045Z warning worker w1 run=run-1-2-3 task=t-3: lost the connection")
        XCTAssertEqual(LineLogHandler.line(time: time, level: .info, label: "rl", metadata: [:], message: "m"), "2026-12-05T09:11:02.045Z info rl: m")
    }

    /// Levels below the handler's are dropped; the logger's run id reaches every line.
    func testTheLevelFiltersAndMetadataTravels() {
        final class Lines: @unchecked Sendable { var all: [String] = []; let lock = NSLock() }
        let lines = Lines()
        var logger = Logger(label: "coordinator") { label in
            LineLogHandler(label: label, level: .notice) { line in lines.lock.withLock { lines.all.append(line) } }
        }
        logger[metadataKey: "run"] = "r9"
        logger.info("dropped")
        logger.notice("kept")
        logger.error("also kept")
        XCTAssertEqual(lines.all.map { $0.split(separator: " ", maxSplits: 1)[1] }, ["notice coordinator run=r9: kept", "error coordinator run=r9: also kept"])
    }
}
