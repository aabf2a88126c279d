@testable import Alignment
import XCTest

/// The recipe section of `charter train` and the evaluation's arithmetic.
final class RecipeTests: XCTestCase {
    func parse(_ recipe: String) throws -> RLConfig {
        try RLConfig.parse("data: {prompts: p.jsonl}\nrecipe:\n" + recipe, name: "r.yaml", forRun: false)
    }

    func testRecipeReadsStagesRoundsAndSettings() throws {
        let r = try XCTUnwrap(try parse("""
              stages: [pairs, label, dpo, eval]
              rounds: 3
              pairs: {per_round: 4}
              label: {principles: 2}
              dpo: {beta: 0.2, label_smoothing: 0.1, epochs: 2, learning_rate: 0.001, batch_size: 4}
              eval: {prompts: e.jsonl}
            """).recipe)
        XCTAssertEqual(r.stages, [.pairs, .label, .dpo, .eval])
        XCTAssertEqual(r.rounds, 3)
        XCTAssertEqual(r.pairsPerRound, 4)
        XCTAssertEqual(r.principles, 2)
        XCTAssertEqual(r.dpo, Recipe.Training(epochs: 2, learningRate: 0.001, batchSize: 4))
        XCTAssertEqual(r.dpoBeta, 0.2)
        XCTAssertEqual(r.dpoLabelSmoothing, 0.1)
        XCTAssertEqual(r.evalPrompts, "e.jsonl")
        XCTAssertNil(try parse("  stages: [pairs]\n").recipe?.evalPrompts)
        XCTAssertEqual(try parse("  stages: [pairs, label, reward_models, rejection]\n  rejection: {pool: true}\n").recipe?.poolRejection, true)
        XCTAssertEqual(try parse("  stages: [pairs]\n").recipe?.poolRejection, false)
    }

    func testBadRecipesAreOneLineNamingTheProblem() {
        let cases: [(String, String)] = [
            ("  stages: [pairs, sleep]\n", "\"recipe.stages\" has \"sleep\" (known: sl_cai, pairs, label, reward_models, rejection, ppo, dpo, eval)"),
            ("  stages: [label, pairs]\n", "\"recipe.stages\" must name each stage once, in the recipe's order"),
            ("  stages: [pairs, pairs]\n", "must name each stage once"),
            ("  stages: []\n", "\"recipe.stages\" is required"),
            ("  rounds: 2\n", "\"recipe.stages\" is required"),
            ("  stages: [label]\n", "has label without pairs, which makes its input"),
            ("  stages: [pairs, label, ppo, dpo]\n", "has dpo with ppo: DPO replaces reward models + RL; choose one"),
            ("  stages: [pairs, eval]\n", "\"recipe.eval\" needs \"prompts\""),
            ("  stages: [pairs]\n  rounds: 0\n", "\"recipe.rounds\" must be at least 1, found 0"),
            ("  stages: [pairs]\n  dpo: {label_smoothing: 0.5}\n", "\"recipe.dpo.label_smoothing\" must be in [0, 0.5), found 0.5"),
            ("  stages: [pairs]\n  sft: {lr: 1}\n", "unknown key \"recipe.sft.lr\""),
            ("  stages: [pairs, label, reward_models, ppo]\n  rejection: {pool: true}\n", "\"recipe.rejection.pool\" needs the rejection stage in stages"),
        ]
        for (text, message) in cases {
            XCTAssertThrowsError(try parse(text), text) { error in
                XCTAssertTrue("\(error)".contains(message), "\(text): \(error)")
                XCTAssertFalse("\(error)".contains("\n"), "one line: \(error)")
            }
        }
    }

    /// Wins 2, losses 1, ties 1 over 4 prompts: rate (2 + 0.5) / 4; the interval by hand.
    func testWinRateAndIntervalByHand() {
        let w = WinRate(probabilities: [0.9, 0.6, 0.2, 0.5])
        XCTAssertEqual(w.rate, 0.625, accuracy: 1e-12)
        XCTAssertEqual(w.meanProbability, 0.55, accuracy: 1e-12)
        // Scores 1, 1, 0, 0.5: squared deviations 0.140625 x 2 + 0.390625 + 0.015625 = 0.6875;
        // sample variance 0.6875 / 3; half width 1.96 x sqrt(0.6875 / 3 / 4) = 0.469140.
        XCTAssertEqual(w.low, 0.625 - 0.469140, accuracy: 1e-6)
        XCTAssertEqual(w.high, 1, "clamped")
        XCTAssertEqual(w.prompts, 4)
        let even = WinRate(probabilities: [0.5, 0.5])
        XCTAssertEqual([even.rate, even.low, even.high], [0.5, 0.5, 0.5], "all ties: no spread")
        XCTAssertEqual(WinRate(probabilities: [1, 0.7, 0.8]).rate, 1)
    }

    func testRefusalsAreAnswersThatDecline() {
        XCTAssertTrue(Refusal.isRefusal("I can\u{2019}t help with that."))
        XCTAssertTrue(Refusal.isRefusal("  Sorry, but I won't write that."))
        XCTAssertTrue(Refusal.isRefusal("As an AI, I do not insult people."))
        XCTAssertFalse(Refusal.isRefusal("Basil keeps best in a glass of water on the counter."))
        XCTAssertFalse(Refusal.isRefusal(""))
    }
}
