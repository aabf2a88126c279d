import Alignment
import Foundation
import XCTest

/// The labeler's statistics in `charter report`, against values worked out by hand.
final class LabelStatsTests: XCTestCase {
    func testPositionBiasDisagreementAndEntropyByHand() {
        let lines: [[String: Any]] = [
            // a first: P(a) 0.9; b first: P(a) 0.7, so P(first shown) 0.3. Both orders pick a.
            ["id": "1", "p_a": 0.8, "p_a_orders": [0.9, 0.7], "chosen": "x"],
            // P(first shown) 0.8 in both orders: pure position preference, the orders disagree.
            ["id": "2", "p_a": 0.5, "p_a_orders": [0.8, 0.2], "chosen": "y"],
            ["id": "3", "error": "judge failed"],
        ]
        let s = LabelStats(lines: lines)
        XCTAssertEqual(s.pairs, 3)
        XCTAssertEqual(s.errors, 1)
        XCTAssertEqual(s.meanPFirstShown, (0.9 + 0.3 + 0.8 + 0.8) / 4, accuracy: 1e-12)
        XCTAssertEqual(s.orderDisagreement, 0.5, accuracy: 1e-12)
        // H(0.8) = -(0.8 log2 0.8 + 0.2 log2 0.2) = 0.7219280948873623; H(0.5) = 1.
        XCTAssertEqual(s.meanEntropyBits, (0.7219280948873623 + 1) / 2, accuracy: 1e-12)
        XCTAssertEqual(LabelStats.entropyBits(1), 0)

        // One order only: no disagreement to measure.
        let one = LabelStats(lines: [["id": "1", "p_a": 0.6, "p_a_orders": [0.6]]])
        XCTAssertEqual(one.meanPFirstShown, 0.6, accuracy: 1e-12)
        XCTAssertTrue(one.orderDisagreement.isNaN)
    }

    /// Principles of one pair: three give three combinations; a tie agrees only with a tie.
    func testAgreementBetweenPrinciplesByHand() {
        let s = LabelStats(lines: [
            ["id": "1", "p_a": 0.6, "p_a_orders": [0.6], "p_a_principles": [0.7, 0.9, 0.2]], // 1 of 3 agree
            ["id": "2", "p_a": 0.5, "p_a_orders": [0.5], "p_a_principles": [0.5, 0.5]],      // 1 of 1
            ["id": "3", "p_a": 0.5, "p_a_orders": [0.5], "p_a_principles": [0.5, 0.6]],      // 0 of 1
            ["id": "4", "p_a": 0.8, "p_a_orders": [0.8], "p_a_principles": [0.8]],           // none
        ])
        XCTAssertEqual(s.principleAgreement, 2.0 / 5, accuracy: 1e-12)
        XCTAssertTrue(LabelStats(lines: [["id": "4", "p_a": 0.8, "p_a_orders": [0.8], "p_a_principles": [0.8]]]).principleAgreement.isNaN)
    }

    func testAgreementCountsPairsBothSetsLabelled() {
        let helpful: [[String: Any]] = [["id": "1", "chosen": "x"], ["id": "2", "chosen": "y"], ["id": "3", "error": "e"]]
        let harmless: [[String: Any]] = [["id": "1", "chosen": "x"], ["id": "2", "chosen": "z"], ["id": "3", "chosen": "w"], ["id": "4", "chosen": "v"]]
        let (pairs, share) = LabelStats.agreement(helpful, harmless)
        XCTAssertEqual(pairs, 2)
        XCTAssertEqual(share, 0.5, accuracy: 1e-12)
        XCTAssertTrue(LabelStats.agreement([], harmless).share.isNaN)
    }
}
