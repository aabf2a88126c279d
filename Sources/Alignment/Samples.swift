import Engine

/// A prompt of the run: its text, its tokens (chat template applied), and whether the data tags it
/// unsafe (which makes the safety reward model decide its reward).
public struct Prompt: Sendable, Equatable {
    public var id: Int
    public var text: String
    public var tokens: [Int32]
    public var unsafe: Bool

    public init(id: Int, text: String, tokens: [Int32], unsafe: Bool = false) {
        self.id = id; self.text = text; self.tokens = tokens; self.unsafe = unsafe
    }
}

/// What a sample's reward is made of, before anything is combined across samples: the reward
/// models' raw head outputs (nil without that model), the judge's expected rating from 1 to 10
/// (nil without `reward.judge`) and the sum of the weighted rule rewards.
public struct RawScores: Sendable, Equatable {
    public var helpfulness: Float?
    public var safety: Float?
    public var judgeRating: Float?
    public var rules: Float
    public init(helpfulness: Float? = nil, safety: Float? = nil, judgeRating: Float? = nil, rules: Float = 0) {
        self.helpfulness = helpfulness; self.safety = safety; self.judgeRating = judgeRating; self.rules = rules
    }
}

/// One generated response, with what PPO needs from the moment it was generated.
public struct Sample: Sendable, Equatable {
    public var promptId: Int
    public var index: Int              // which of the prompt's samples
    public var prompt: [Int32]
    public var response: [Int32]       // a stop token, if generated, is the last one
    /// Per response token, under the distribution sampled from (the policy's logits / temperature).
    public var logprobs: [Float]
    public var policyVersion: Int
    public var seed: UInt64
    /// `.length`: cut off at max_new_tokens (or the context) before a stop token.
    public var finishReason: FinishReason = .stop
    /// Set by whoever scored the sample (a worker, or the run itself); combined into `reward`.
    public var scores: RawScores?
    public var reward: Float = 0
    /// Log-probs of the response under the frozen reference (same temperature), when the rollout source computed them.
    public var referenceLogprobs: [Float]?
    /// Per response token, the value head's score of the hidden state that predicted it, when the
    /// rollout source scored its rows with the run's value head (PPO's old values, at no extra pass).
    public var values: [Float]?
    /// nil: generated this iteration. Otherwise an answer rejection sampling kept in an earlier run,
    /// a candidate again (RejectionPool), and the file it came from.
    public var pooledFrom: String?

    public init(promptId: Int, index: Int, prompt: [Int32], response: [Int32], logprobs: [Float], policyVersion: Int, seed: UInt64,
                finishReason: FinishReason = .stop) {
        self.promptId = promptId; self.index = index; self.prompt = prompt; self.response = response
        self.logprobs = logprobs; self.policyVersion = policyVersion; self.seed = seed; self.finishReason = finishReason
    }

    /// prompt + response as a training sequence whose targets are the response tokens.
    public func trainingSequence() -> TrainingSequence {
        TrainingSequence(tokens: prompt + response,
                         lossMask: [Float](repeating: 0, count: prompt.count) + [Float](repeating: 1, count: response.count))
    }
}

/// Where an iteration's samples come from: generated here, or gathered from workers.
public protocol RolloutSource {
    /// `valueHead`: a value head on the policy's trunk; a source that generates with the policy
    /// itself scores the rows that sample with it, into `Sample.values`.
    func rollouts(iteration: Int, prompts: [Prompt], policy: ModelWeights, valueHead: ScalarHead?, policyVersion: Int) throws -> [Sample]
    /// True when the samples come back with their raw scores (workers score them).
    var scoresSamples: Bool { get }
}

extension RolloutSource {
    public var scoresSamples: Bool { false }

    public func rollouts(iteration: Int, prompts: [Prompt], policy: ModelWeights, policyVersion: Int) throws -> [Sample] {
        try rollouts(iteration: iteration, prompts: prompts, policy: policy, valueHead: nil, policyVersion: policyVersion)
    }
}

/// Sampling settings of a rollout.
public struct RolloutSettings: Sendable, Codable, Equatable {
    public var samplesPerPrompt = 2
    public var maxNewTokens = 48
    public var temperature: Float = 1
    public var topK = 0
    public var topP: Float = 1
    public var stopTokens: [Int32] = []
    public init() {}
}

/// Generation in this process with the engine. Each sample's seed derives from (run seed,
/// iteration, prompt id, sample index), so the samples do not depend on how prompts are batched.
public struct InProcessRollouts: RolloutSource {
    public var settings: RolloutSettings
    public var runSeed: UInt64

    public init(settings: RolloutSettings, runSeed: UInt64) { self.settings = settings; self.runSeed = runSeed }

    public static func seed(run: UInt64, iteration: Int, prompt: Int, sample: Int) -> UInt64 {
        SplitMix64.derive(run, UInt64(iteration), UInt64(prompt), UInt64(sample))
    }

    public func rollouts(iteration: Int, prompts: [Prompt], policy: ModelWeights, valueHead: ScalarHead?, policyVersion: Int) throws -> [Sample] {
        try rollouts(iteration: iteration, prompts: prompts, policy: policy, valueHead: valueHead, policyVersion: policyVersion, tick: {})
    }

    /// `tick` runs after every forward pass (a worker sends heartbeats from it).
    public func rollouts(iteration: Int, prompts: [Prompt], policy: ModelWeights, valueHead: ScalarHead? = nil, policyVersion: Int,
                         tick: () -> Void) throws -> [Sample] {
        let generator = Generator(model: try Transformer(weights: policy))
        var requests: [GenerationRequest] = [], keys: [(Prompt, Int, UInt64)] = []
        for p in prompts {
            for k in 0..<settings.samplesPerPrompt {
                let seed = Self.seed(run: runSeed, iteration: iteration, prompt: p.id, sample: k)
                requests.append(GenerationRequest(prompt: p.tokens, params: SamplingParams(
                    temperature: settings.temperature, topK: settings.topK, topP: settings.topP,
                    maxNewTokens: settings.maxNewTokens, stopTokens: Set(settings.stopTokens), seed: seed)))
                keys.append((p, k, seed))
            }
        }
        let results = try generator.generate(requests, valueHead: valueHead, between: tick)
        return zip(keys, results).map { key, r in
            var s = Sample(promptId: key.0.id, index: key.1, prompt: key.0.tokens, response: r.tokens, logprobs: r.logprobs,
                           policyVersion: policyVersion, seed: key.2, finishReason: r.finishReason)
            if valueHead != nil { s.values = r.values }
            return s
        }
    }
}
