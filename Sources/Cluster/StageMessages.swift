import Alignment
import Tokenizer
import Wire

/// Stage items and their results to and from the wire: the one place that maps them.
extension StageKind {
    init?(wire: Charter_V1_TaskKind) {
        switch wire {
        case .generate: self = .generate
        case .revise: self = .revise
        case .options: self = .options
        case .score: self = .score
        default: return nil
        }
    }

    var wire: Charter_V1_TaskKind {
        switch self {
        case .generate: return .generate
        case .revise: return .revise
        case .options: return .options
        case .score: return .score
        }
    }
}

extension StageItem {
    init(wire i: Charter_V1_Item) {
        self.init(id: i.itemID)
        prompt = i.prompt
        messages = i.messages.map { ChatMessage(role: $0.role, content: $0.content) }
        seed = i.seed; steps = i.steps; options = i.options; response = i.response
    }

    var wire: Charter_V1_Item {
        var i = Charter_V1_Item()
        i.itemID = id; i.prompt = prompt; i.seed = seed; i.steps = steps; i.options = options; i.response = response
        i.messages = messages.map { m in
            var t = Charter_V1_ChatTurn()
            t.role = m.role; t.content = m.content
            return t
        }
        return i
    }
}

extension StageItemResult {
    init(wire r: Charter_V1_ItemResult) {
        self.init(id: r.itemID)
        texts = r.texts; tokens = r.tokens; logprobs = r.logprobs; truncated = r.truncated; textTokens = r.textTokens.map(Int.init)
        optionLogprobs = r.optionLogprobs; optionTokens = r.optionTokens.map(Int.init)
        if r.hasHelpfulnessScore || r.hasSafetyScore || r.hasJudgeRating || r.ruleReward != 0 {
            scores = RawScores(helpfulness: r.hasHelpfulnessScore ? r.helpfulnessScore : nil,
                               safety: r.hasSafetyScore ? r.safetyScore : nil,
                               judgeRating: r.hasJudgeRating ? r.judgeRating : nil, rules: r.ruleReward)
        }
        error = r.error.isEmpty ? nil : r.error
    }

    var wire: Charter_V1_ItemResult {
        var r = Charter_V1_ItemResult()
        r.itemID = id; r.texts = texts; r.tokens = tokens; r.logprobs = logprobs; r.truncated = truncated; r.textTokens = textTokens.map(UInt32.init)
        r.optionLogprobs = optionLogprobs; r.optionTokens = optionTokens.map(UInt32.init)
        if let h = scores?.helpfulness { r.helpfulnessScore = h }
        if let s = scores?.safety { r.safetyScore = s }
        if let j = scores?.judgeRating { r.judgeRating = j }
        r.ruleReward = scores?.rules ?? 0
        r.error = error ?? ""
        return r
    }
}

extension Charter_V1_SamplingParams {
    /// A stage's sampling settings; stop tokens stay empty: each worker uses its model's own.
    init(stage s: RolloutSettings) {
        self.init()
        temperature = s.temperature; topK = UInt32(s.topK); topP = s.topP; maxNewTokens = UInt32(s.maxNewTokens)
    }
}
