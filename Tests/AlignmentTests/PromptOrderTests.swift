@testable import Alignment
import Engine
import XCTest

/// How a run hands out its prompts: seeded passes over the data, an iteration never holding a
/// prompt twice (a duplicate would double that prompt's weight, and hang a distributed run).
final class PromptOrderTests: XCTestCase {
    func run(prompts count: Int, perIteration: Int, seed: UInt64 = 4) throws -> RLRun {
        let config = ModelConfig(layers: 1, width: 16, heads: 2, kvHeads: 1, ffnWidth: 16, vocab: 16, contextLength: 16)
        let prompts = (0..<count).map { Prompt(id: $0, text: "", tokens: [1]) }
        let scorer = RewardScorer(models: nil, rules: [(.containsToken(5), 1)], decode: { _ in "" })
        return try RLRun(prompts: prompts, promptsPerIteration: perIteration, rollouts: InProcessRollouts(settings: RolloutSettings(), runSeed: 1),
                         scorer: scorer, learner: try RejectionSampler(policy: .random(config: config, seed: 1), settings: .init()),
                         seed: seed)
    }

    func testNoIterationHoldsAPromptTwiceAndEveryPassCoversEveryPrompt() throws {
        for (count, perIteration) in [(10, 4), (10, 3), (10, 7), (10, 9), (10, 10), (7, 1), (5, 2)] {
            let r = try run(prompts: count, perIteration: perIteration)
            var handedOut: [Int] = []
            for _ in 0..<(6 * count / perIteration + 3) {
                let ids = r.nextPrompts().map(\.id)
                XCTAssertEqual(Set(ids).count, ids.count, "\(count) prompts, \(perIteration) per iteration: \(ids)")
                handedOut += ids
                r.cursor += perIteration
            }
            for pass in 0..<(handedOut.count / count) {
                XCTAssertEqual(Set(handedOut[pass * count ..< (pass + 1) * count]).count, count, "pass \(pass) of \(count) / \(perIteration)")
            }
        }
    }

    /// The order is a function of the seed and the cursor: a resumed run (a new RLRun moved to the
    /// saved cursor) draws what the uninterrupted one drew.
    func testTheOrderDependsOnlyOnSeedAndCursor() throws {
        let whole = try run(prompts: 10, perIteration: 4), resumed = try run(prompts: 10, perIteration: 4)
        var expected: [[Int]] = []
        for _ in 0..<9 { expected.append(whole.nextPrompts().map(\.id)); whole.cursor += 4 }
        resumed.cursor = 5 * 4
        XCTAssertEqual((5..<9).map { _ in defer { resumed.cursor += 4 }; return resumed.nextPrompts().map(\.id) }, Array(expected[5...]))
        XCTAssertNotEqual(expected, try {
            let other = try run(prompts: 10, perIteration: 4, seed: 5)
            return (0..<9).map { _ in defer { other.cursor += 4 }; return other.nextPrompts().map(\.id) }
        }())
    }

    func testMorePromptsPerIterationThanPromptsIsRefused() {
        XCTAssertThrowsError(try run(prompts: 10, perIteration: 12)) {
            XCTAssertTrue("\($0)".contains("prompts_per_iteration (12) is more than the 10 prompts"), "\($0)")
        }
    }
}
