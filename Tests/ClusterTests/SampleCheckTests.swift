@testable import Alignment
import Cluster
import Wire
import XCTest

/// The samples a coordinator takes from workers: an honest one passes, each kind of forgery is named.
final class SampleCheckTests: XCTestCase {
    func testAnHonestSamplePassesAndEachForgeryIsNamed() throws {
        var c = RLConfig()
        c.safetyModel = "rm"
        c.rules = [RLConfig.Rule(kind: "keyword", value: "a", weight: 2, caseSensitive: false), RLConfig.Rule(kind: "length", value: "4", weight: -0.5, caseSensitive: false)]
        let check = SampleCheck(c)
        var rollout = RolloutSettings()
        rollout.maxNewTokens = 4
        rollout.stopTokens = [2]
        var honest = Charter_V1_SampleRecord()
        honest.response = [7, 9, 2]; honest.logprobs = [-0.5, -1, 0]; honest.referenceLogprobs = [-0.7, -2, -0.1]
        honest.safetyScore = -3.5; honest.ruleReward = 2.5
        XCTAssertNil(check.problem(honest, vocab: 16, rollout: rollout))
        var valued = honest
        valued.values = [0.25, -3, 7]
        XCTAssertNil(check.problem(valued, vocab: 16, rollout: rollout), "a value per token, from a worker holding the value head")

        let cases: [(String, (inout Charter_V1_SampleRecord) -> Void)] = [
            ("0 response tokens", { $0.response = []; $0.logprobs = []; $0.referenceLogprobs = [] }),
            ("5 response tokens (1 to max_new_tokens 4)", { $0.response = [7, 7, 7, 7, 2]; $0.logprobs += [-1, -1]; $0.referenceLogprobs += [-1, -1] }),
            ("token id 16 outside the vocabulary of 16", { $0.response[0] = 16 }),
            ("token id -1 outside the vocabulary", { $0.response[1] = -1 }),
            ("a stop token before its last token", { $0.response[0] = 2 }),
            ("not truncated, yet it does not end with a stop token", { $0.response[2] = 5 }),
            ("2 log-probs for 3 tokens", { $0.logprobs = [-1, -1] }),
            ("reference log-probs must be finite and at most 0", { $0.referenceLogprobs[1] = .nan }),
            ("log-probs must be finite and at most 0", { $0.logprobs[1] = 0.5 }),
            ("no safety score", { $0.clearSafetyScore() }),
            ("a helpfulness score the run has no model for", { $0.helpfulnessScore = 1 }),
            ("safety score 1e+30 is not within +-10000", { $0.safetyScore = 1e30 }),
            ("safety score inf", { $0.safetyScore = .infinity }),
            ("a judge rating the run has no judge for", { $0.judgeRating = 5 }),
            ("rule reward 2.6 is beyond the rules' weights (+-2.5)", { $0.ruleReward = 2.6 }),
            ("rule reward nan", { $0.ruleReward = .nan }),
            ("2 values for 3 tokens", { $0.values = [0.5, 1] }),
            ("value inf is not within +-10000", { $0.values = [0.5, .infinity, 1] }),
            ("value 20000.0 is not within +-10000", { $0.values = [0.5, 2e4, 1] }),
        ]
        for (message, forge) in cases {
            var s = honest
            forge(&s)
            let problem = check.problem(s, vocab: 16, rollout: rollout)
            XCTAssertTrue(problem?.contains(message) == true, "\(message): \(problem ?? "passed")")
        }
        // A cut-off answer need not end with a stop token; the judge's rating lies within 1 to 10.
        var judged = c
        judged.judgePrinciple = "Which is kinder?"
        var cut = honest
        cut.response = [7, 9, 9, 9]; cut.logprobs = [-1, -1, -1, -1]; cut.referenceLogprobs = [-1, -1, -1, -1]; cut.truncated = true
        cut.judgeRating = 10
        XCTAssertNil(SampleCheck(judged).problem(cut, vocab: 16, rollout: rollout))
        cut.judgeRating = 11
        XCTAssertEqual(SampleCheck(judged).problem(cut, vocab: 16, rollout: rollout), "judge rating 11.0 is not within 1 to 10")
    }
}
