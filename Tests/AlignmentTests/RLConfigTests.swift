import Alignment
import Engine
import Foundation
import Formats
import Tokenizer
import XCTest

final class RLConfigTests: XCTestCase {
    let valid = """
        run:
          dir: runs/x
          iterations: 3
          seed: 7
        model:
          policy: models/tiny
          lora: {rank: 4, targets: [q, v]}
        data:
          prompts: examples/prompts.jsonl
          prompts_per_iteration: 4
        reward:
          rules:
            - {type: keyword, value: "Paris", weight: 2}
            - {type: regex, value: "[0-9]+"}
            - {type: length, value: 20, weight: 0.5}
        algorithm:
          name: rejection
          rejection: {keep: top_k, k: 2, epochs: 1}
        rollout:
          samples_per_prompt: 4
          max_new_tokens: 16
          temperature: 0.8
        """

    func testAValidConfigReadsEveryField() throws {
        let c = try RLConfig.parse(valid, name: "c.yaml")
        XCTAssertEqual(c.runDir, "runs/x"); XCTAssertEqual(c.iterations, 3); XCTAssertEqual(c.seed, 7)
        XCTAssertEqual(c.lora, LoRAConfig(rank: 4, targets: [.q, .v]))
        XCTAssertEqual(c.promptsPerIteration, 4)
        XCTAssertEqual(c.rules.map(\.kind), ["keyword", "regex", "length"])
        XCTAssertEqual(c.rules.map(\.weight), [2, 1, 0.5])
        XCTAssertEqual(c.rejection.keep, .topK(2))
        XCTAssertEqual(c.rollout.samplesPerPrompt, 4); XCTAssertEqual(c.rollout.temperature, 0.8)
        XCTAssertEqual(try c.rewardRules().count, 3)
    }

    func testUnknownAndIllTypedKeysNameTheKeyAndLine() {
        let cases: [(String, String, String)] = [
            ("  iterations: 3", "  iteratons: 3", "c.yaml line 3: unknown key \"run.iteratons\""),
            ("  max_new_tokens: 16", "  max_new_tokens: many", "c.yaml line 21: \"rollout.max_new_tokens\" must be an integer, found \"many\""),
            ("  temperature: 0.8", "  temperature: hot", "c.yaml line 22: \"rollout.temperature\" must be a number, found \"hot\""),
            ("  lora: {rank: 4, targets: [q, v]}", "  lora: {rank: 4, targets: [q, w]}", "c.yaml line 7: \"model.lora.targets\" has \"w\""),
            ("  name: rejection", "  name: dpo", "c.yaml line 17: \"algorithm.name\" must be ppo or rejection"),
            ("    - {type: regex, value: \"[0-9]+\"}", "    - {type: regex, value: \"[0-9\"}", "reward regex \"[0-9\" does not compile"),
            ("    - {type: length, value: 20, weight: 0.5}", "    - {type: length, value: long}", "\"reward.rules[2].value\" must be an integer"),
            ("  seed: 7", "  seed: -1", "c.yaml line 4: \"run.seed\" must be at least 0"),
            ("  samples_per_prompt: 4", "  samples_per_prompt: 1e9", "\"rollout.samples_per_prompt\" must be an integer, found \"1e9\""),
            ("  samples_per_prompt: 4", "  samples_per_prompt: 3000000000", "\"rollout.samples_per_prompt\" must be at most 2147483647, found 3000000000"),
            ("run:", "runn:", "c.yaml line 1: unknown key \"runn\""),
        ]
        // PPO refuses sampling it cannot take ratios over: truncation and greedy decoding.
        let ppo = valid.replacingOccurrences(of: "  name: rejection\n  rejection: {keep: top_k, k: 2, epochs: 1}", with: "  name: ppo")
        XCTAssertEqual(try RLConfig.parse(ppo, name: "c.yaml").ppo.temperature, 0.8, "PPO's training passes use the sampling temperature")
        for (from, to, message) in [("  temperature: 0.8", "  temperature: 0.8\n  top_k: 40", "\"rollout.top_k\" cannot be used with PPO"),
                                    ("  temperature: 0.8", "  temperature: 0.8\n  top_p: 0.9", "\"rollout.top_p\" cannot be used with PPO"),
                                    ("  temperature: 0.8", "  temperature: 0", "\"rollout.temperature\" must be above 0 with PPO")] {
            XCTAssertThrowsError(try RLConfig.parse(ppo.replacingOccurrences(of: from, with: to), name: "c.yaml")) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
        XCTAssertNoThrow(try RLConfig.parse(valid.replacingOccurrences(of: "  temperature: 0.8", with: "  temperature: 0.8\n  top_k: 40"), name: "c.yaml"))
        for (from, to, message) in cases {
            let text = valid.replacingOccurrences(of: from, with: to)
            XCTAssertNotEqual(text, valid, "fixture did not change for \(to)")
            XCTAssertThrowsError(try RLConfig.parse(text, name: "c.yaml")) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
        XCTAssertThrowsError(try RLConfig.parse("data: [1, 2", name: "c.yaml")) { XCTAssertTrue("\($0)".contains("not valid YAML"), "\($0)") }
        XCTAssertThrowsError(try RLConfig.parse("run: {iterations: 2}", name: "c.yaml")) { XCTAssertTrue("\($0)".contains("section \"data\""), "\($0)") }
        XCTAssertThrowsError(try RLConfig.parse("data: {prompts: p.jsonl}", name: "c.yaml")) { XCTAssertTrue("\($0)".contains("needs a reward model, a judge or at least one rule"), "\($0)") }
    }

    /// Values outside what the algorithms can use are refused at load, each with its file, line,
    /// key and the allowed range (the hostile-input probe's cases).
    func testValuesOutOfRangeAreRefusedWithTheRange() {
        let ppo = """
            run: {dir: runs/x}
            data: {prompts: p.jsonl}
            reward:
              rules: [{type: keyword, value: a}]
            algorithm:
              name: ppo
              ppo: {epochs: 1}
            rollout: {samples_per_prompt: 2, temperature: 0.8}
            """
        let cases: [(String, String, String)] = [
            ("ppo: {epochs: 1}", "ppo: {clip: -1}", "line 7: \"algorithm.ppo.clip\" must be above 0, found -1.0"),
            ("ppo: {epochs: 1}", "ppo: {gamma: 2}", "\"algorithm.ppo.gamma\" must be in [0, 1], found 2.0"),
            ("ppo: {epochs: 1}", "ppo: {lambda: -1}", "\"algorithm.ppo.lambda\" must be in [0, 1], found -1.0"),
            ("ppo: {epochs: 1}", "ppo: {learning_rate: -0.001}", "\"algorithm.ppo.learning_rate\" must be above 0"),
            ("ppo: {epochs: 1}", "ppo: {critic_learning_rate: 0}", "\"algorithm.ppo.critic_learning_rate\" must be above 0"),
            ("ppo: {epochs: 1}", "ppo: {beta: -0.1}", "\"algorithm.ppo.beta\" must be at least 0"),
            ("ppo: {epochs: 1}", "ppo: {target_kl: -1}", "\"algorithm.ppo.target_kl\" must be above 0"),
            ("ppo: {epochs: 1}", "ppo: {kl_horizon: 0}", "\"algorithm.ppo.kl_horizon\" must be above 0"),
            ("ppo: {epochs: 1}", "ppo: {value_coefficient: -1}", "\"algorithm.ppo.value_coefficient\" must be at least 0"),
            ("temperature: 0.8", "temperature: 1e30", "\"rollout.temperature\" must be in [0, 10], found 1e+30"),
            ("value: a}", "value: \"\"}", "\"reward.rules[0].value\" must not be empty"),
            ("rules: [", "safety_threshold: 0.2\n  rules: [", "\"reward.safety_threshold\" needs \"safety_model\""),
            ("rules: [", "helpfulness_model: rm\n  missing_eos_penalty: -1\n  rules: [", "\"reward.missing_eos_penalty\" must be at least 0"),
            ("dir: runs/x", "dir: \"\"", "line 1: \"run.dir\" must not be empty"),
            ("name: ppo\n  ppo: {epochs: 1}", "name: rejection\n  rejection: {keep: top_k, k: 3}", "\"algorithm.rejection.k\" must be at most rollout.samples_per_prompt (2), found 3"),
            ("name: ppo\n  ppo: {epochs: 1}", "name: rejection\n  rejection: {learning_rate: -1}", "\"algorithm.rejection.learning_rate\" must be above 0"),
        ]
        XCTAssertNoThrow(try RLConfig.parse(ppo, name: "c.yaml"))
        for (from, to, message) in cases {
            let text = ppo.replacingOccurrences(of: from, with: to)
            XCTAssertNotEqual(text, ppo, "fixture did not change for \(to)")
            XCTAssertThrowsError(try RLConfig.parse(text, name: "c.yaml")) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
    }

    /// Relative paths in a configuration file mean the file's folder, wherever the command runs;
    /// absolute ones, `~`, and the defaults (not written in the file) are left alone.
    func testRelativePathsAreReadAgainstTheFilesFolder() throws {
        let text = """
            run: {dir: ../runs/x}
            model: {policy: "tiny:layers=1,tokenizer=tok/m.gguf,seed=2", feedback: /abs/judge, reference: ~/ref}
            data: {prompts: p.jsonl}
            reward: {helpfulness_model: rm/h, safety_model: ./rm/s, rules: [{type: keyword, value: a}]}
            revise: {prompts: red.jsonl, helpful: h.jsonl, constitution: ../constitutions/polite.yaml}
            """
        let c = try RLConfig.parse(text, name: "c.yaml", folder: "/work/cfg")
        XCTAssertEqual(c.runDir, "/work/runs/x")
        XCTAssertEqual(c.policy, "tiny:layers=1,tokenizer=/work/cfg/tok/m.gguf,seed=2")
        XCTAssertEqual(c.feedback, "/abs/judge")
        XCTAssertEqual(c.reference, NSHomeDirectory() + "/ref")
        XCTAssertEqual(c.prompts, "/work/cfg/p.jsonl")
        XCTAssertEqual(c.helpfulnessModel, "/work/cfg/rm/h"); XCTAssertEqual(c.safetyModel, "/work/cfg/rm/s")
        XCTAssertEqual(c.revisePrompts, "/work/cfg/red.jsonl"); XCTAssertEqual(c.reviseHelpful, "/work/cfg/h.jsonl")
        XCTAssertEqual(c.constitution, "/work/constitutions/polite.yaml")
        let defaults = try RLConfig.parse("model: {policy: \"tiny:layers=1\"}\ndata: {prompts: p.jsonl}\nreward: {rules: [{type: keyword, value: a}]}", name: "c.yaml", folder: "/work/cfg")
        XCTAssertEqual(defaults.runDir, "runs/rl", "the default run folder is under the working folder")
        XCTAssertEqual(defaults.policy, "tiny:layers=1", "a spec without tokenizer= uses the default model, found where it was fetched")
        XCTAssertEqual(try RLConfig.parse(text, name: "c.yaml").prompts, "p.jsonl", "without a folder paths stay as written")
        XCTAssertEqual(RLConfig.folder(of: "/work/cfg/../cfg/c.yaml"), "/work/cfg")
        XCTAssertEqual(RLConfig.folder(of: "../c.yaml"), URL(fileURLWithPath: FileManager.default.currentDirectoryPath).deletingLastPathComponent().path)
    }

    /// What workers of a `charter train` RL stage load: the file with some keys set or removed,
    /// everything else as written; a file that is not a mapping is refused by name.
    func testRewriteSetsAndRemovesKeysAndKeepsTheRest() throws {
        let text = try RLConfig.rewrite(valid, name: "c.yaml", setting: ["model.policy": "/runs/r/policy", "model.lora": nil,
                                                                      "reward.safety_model": "/runs/r/rm", "data.prompts": nil])
        let c = try RLConfig.parse(text, name: "rewritten", forRun: false)
        XCTAssertEqual(c.policy, "/runs/r/policy"); XCTAssertNil(c.lora)
        XCTAssertEqual(c.safetyModel, "/runs/r/rm"); XCTAssertEqual(c.prompts, "")
        let before = try RLConfig.parse(valid, name: "c.yaml")
        XCTAssertEqual(c.rules.map(\.kind), before.rules.map(\.kind)); XCTAssertEqual(c.rollout, before.rollout); XCTAssertEqual(c.seed, 7)
        let added = try RLConfig.parse(try RLConfig.rewrite("model: {policy: m}\n", name: "c.yaml", setting: ["reward.helpfulness_model": "/rm"]), name: "r", forRun: false)
        XCTAssertEqual(added.helpfulnessModel, "/rm", "a missing section is created")
        XCTAssertThrowsError(try RLConfig.rewrite("- a\n- b\n", name: "list.yaml", setting: [:])) { e in
            XCTAssertEqual("\(e)", "list.yaml: the configuration is not a mapping of sections")
        }
        XCTAssertThrowsError(try RLConfig.rewrite("model: [a]\n", name: "c.yaml", setting: ["model.policy": "p"])) { e in
            XCTAssertEqual("\(e)", "c.yaml: section model is not a mapping")
        }
    }
}

final class ConfigReferenceTests: XCTestCase {
    /// docs/config.md lists exactly the keys the parser takes, section by section.
    func testTheReferencePageNamesEveryKeyAndNoOther() throws {
        let page = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/config.md")
        var documented: [String: [String]] = [:], section: String?
        for line in try String(contentsOf: page, encoding: .utf8).split(separator: "\n") {
            if line.hasPrefix("### `") { section = String(line.dropFirst(5).prefix { $0 != "`" }); documented[section!] = [] }
            else if let section, line.hasPrefix("| `") { documented[section]!.append(String(line.dropFirst(3).prefix { $0 != "`" })) }
        }
        let topLevel = Set(documented.keys.filter { !$0.contains(".") })
        XCTAssertEqual(topLevel, Set(RLConfig.keys[""]!), "top-level sections")
        XCTAssertEqual(Set(documented.keys), Set(RLConfig.keys.keys.filter { !$0.isEmpty }), "sections")
        for (name, keys) in RLConfig.keys where !name.isEmpty {
            XCTAssertEqual(documented[name], keys, "keys of \(name), in the parser's order")
        }
    }
}

final class RewardTests: XCTestCase {
    func sample(_ response: [Int32], prompt: Int = 0) -> Sample {
        Sample(promptId: prompt, index: 0, prompt: [1], response: response, logprobs: response.map { _ in 0 }, policyVersion: 0, seed: 0)
    }

    func testRulesScoreTheResponse() throws {
        let texts: [Int32: String] = [1: "The answer is 42!", 2: "no numbers here"]
        let scorer = RewardScorer(models: nil, rules: [(.keyword("ANSWER", caseSensitive: false), 1), (try .regex("[0-9]+"), 10),
                                                       (.length(target: 4), 100), (.containsToken(7), 1000)],
                                  decode: { texts[$0.first!]! })
        // sample 1: keyword 1 + regex 10 + length |2 - 4| / 4 -> 0.5 * 100 + token 7 -> 1000
        // sample 2: keyword 0, regex 0, length 4 of 4 -> 100, no token 7
        XCTAssertEqual(try scorer.score([sample([1, 7]), sample([2, 3, 3, 3])], prompts: [:]), [1061, 100])
        XCTAssertEqual(try RewardScorer(models: nil, rules: [(.keyword("Answer", caseSensitive: true), 1)], decode: { texts[$0.first!]! })
            .score([sample([1])], prompts: [:]), [0])
    }
}

final class CombinedRewardTests: XCTestCase {
    /// Two constant-score "reward models" (a zero trunk, so the head's bias is the score).
    func constantRM(_ score: Float) throws -> RewardModel {
        let config = ModelConfig(layers: 1, width: 8, heads: 2, kvHeads: 1, ffnWidth: 8, vocab: 8, contextLength: 16)
        let head = ScalarHead(width: 8)
        head.storage[8] = score
        let tok = try BPETokenizer(tokens: (0..<8).map { "t\($0)" }, merges: [])
        return try RewardModel(model: LoadedModel(weights: ModelWeights(config: config), tokenizer: tok, source: URL(fileURLWithPath: "/")), head: head)
    }

    /// sigmoid(2) = 0.8808 (helpful), sigmoid(-3) = 0.0474 (safety, below 0.15) and sigmoid(1) = 0.7311.
    func testSafetyDecidesOnUnsafePromptsAndLowSafetyScores() throws {
        var rewards = ModelRewards(helpfulness: try constantRM(2), safety: try constantRM(1))
        rewards.logit = false; rewards.whiten = false
        let samples = [0, 1].map { Sample(promptId: $0, index: 0, prompt: [1, 2], response: [3], logprobs: [0], policyVersion: 0, seed: 0) }
        let prompts = [0: Prompt(id: 0, text: "", tokens: [1, 2]), 1: Prompt(id: 1, text: "", tokens: [1, 2], unsafe: true)]
        func scores(_ r: ModelRewards) throws -> [Float] { try RewardScorer(models: r, rules: [], decode: { _ in "" }).score(samples, prompts: prompts) }
        let s = try scores(rewards)
        XCTAssertEqual(s[0], 0.8807971, accuracy: 1e-5) // safe prompt, safety 0.73 above threshold: helpfulness
        XCTAssertEqual(s[1], 0.7310586, accuracy: 1e-5) // tagged unsafe: safety
        rewards.safety = try constantRM(-3)
        XCTAssertEqual(try scores(rewards)[0], 0.0474259, accuracy: 1e-5) // safety below 0.15 wins
        rewards.logit = true
        XCTAssertEqual(try scores(rewards)[0], -3, accuracy: 1e-4) // logit undoes the sigmoid
        rewards.whiten = true
        let w = try scores(rewards)
        XCTAssertEqual(w.reduce(0, +), 0, accuracy: 1e-5) // whitened over the batch
        // The raw scores are the heads' outputs, before sigmoid, logit and whitening.
        XCTAssertEqual(try rewards.raw(samples).helpfulness?.map { ($0 * 1e4).rounded() / 1e4 }, [2, 2])
        XCTAssertEqual(try rewards.raw(samples).safety?.map { ($0 * 1e4).rounded() / 1e4 }, [-3, -3])
    }

    /// A response cut off at the length limit loses the penalty; one that stopped keeps its reward.
    func testMissingStopTokenIsPenalised() throws {
        var scorer = RewardScorer(models: nil, rules: [(.containsToken(3), 1)], decode: { _ in "" })
        scorer.missingEOSPenalty = 0.25
        let stopped = Sample(promptId: 0, index: 0, prompt: [1], response: [3, 2], logprobs: [0, 0], policyVersion: 0, seed: 0)
        var cut = stopped
        cut.finishReason = .length
        XCTAssertEqual(try scorer.score([stopped, cut], prompts: [:]), [1, 0.75])
    }
}

final class SnakeCaseTests: XCTestCase {
    /// Metrics keys: camelCase Swift names become snake_case, acronyms kept together.
    func testKeysBecomeSnakeCase() {
        for (camel, snake) in [("approxKL", "approx_kl"), ("itemsPerSecond", "items_per_second"), ("kl", "kl"), ("grad_norm", "grad_norm"),
                               ("ppoEpochs", "ppo_epochs"), ("bytesBroadcast", "bytes_broadcast"), ("KLValue", "kl_value"), ("top5Tokens", "top5_tokens")] {
            XCTAssertEqual(SnakeCase.key(camel), snake)
        }
        XCTAssertEqual(SnakeCase.keys(["rewardMean": 1, "iteration": 2]).keys.sorted(), ["iteration", "reward_mean"])
    }
}
