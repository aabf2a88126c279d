import Engine
import Tokenizer

/// Computes stage items with the inference engine, the same way in process and on a worker. Every
/// item's result depends only on the item (its seed, its prompt) and the models, never on the
/// other items of the batch (the kernels are batch invariant), so how a stage's items were cut
/// into tasks does not change a bit of the output.
public struct StageWork {
    public var policy: Transformer
    public var tokenizer: BPETokenizer
    /// Sampling settings for generate and revise (the seed comes from each item).
    public var sampling: RolloutSettings
    /// The judge for options (nil: the policy).
    public var feedback: Transformer?
    /// The reward models and rules for score.
    public var scorer: RewardScorer?
    /// Runs between decode steps and passes (a worker heartbeats there).
    public var tick: () -> Void = {}

    public init(policy: Transformer, tokenizer: BPETokenizer, sampling: RolloutSettings, feedback: Transformer? = nil, scorer: RewardScorer? = nil) {
        self.policy = policy; self.tokenizer = tokenizer; self.sampling = sampling; self.feedback = feedback; self.scorer = scorer
    }

    public func run(_ kind: StageKind, _ items: [StageItem]) throws -> [StageItemResult] {
        switch kind {
        case .generate: return try revise(items, steps: 0)
        case .revise: return try revise(items, steps: nil)
        case .options: return try options(items)
        case .score: return try score(items)
        }
    }

    /// The prompt: the conversation with the chat template (ready for the assistant's turn), or
    /// the raw text.
    func promptText(_ item: StageItem) throws -> String {
        item.messages.isEmpty ? item.prompt : try ChatTemplate.render(item.messages)
    }

    func promptTokens(_ item: StageItem) throws -> [Int32] { try tokenizer.encode(try promptText(item)) }

    /// What the answer to a revise item's step `step` continues: the item's conversation, then each
    /// earlier answer followed by its step's user turn (step 0: the item's conversation alone).
    public static func conversation(_ item: StageItem, answers: [String], step: Int) -> [ChatMessage] {
        item.messages + (0..<step).flatMap { k in
            [ChatMessage(role: "assistant", content: answers[k]), ChatMessage(role: "user", content: item.steps[k])]
        }
    }

    /// A problem with one item becomes that item's error; the others go on.
    func checked(_ tokens: () throws -> [Int32], room: Int) -> Result<[Int32], StageItemError> {
        do {
            let t = try tokens()
            if t.isEmpty { return .failure(StageItemError("the prompt has no tokens")) }
            if t.count + room > policy.config.contextLength {
                return .failure(StageItemError("the prompt has \(t.count) tokens; with \(room) more it does not fit the context of \(policy.config.contextLength)"))
            }
            return .success(t)
        } catch {
            return .failure(StageItemError("\(error)"))
        }
    }

    /// generate (steps: 0) and revise (steps: nil, each item's own): step 0 answers the prompt,
    /// step k answers the item's k-th step after the conversation so far. One batch per step. An
    /// item keeps its KV cache from step to step, so a step prefills only what the chat template
    /// adds after the last answer (the step's user turn), not the whole conversation again.
    func revise(_ items: [StageItem], steps fixed: Int?) throws -> [StageItemResult] {
        var results = items.map { StageItemResult(id: $0.id) }
        let stepsOf = items.map { fixed ?? $0.steps.count }
        var dialogues = items.map { _ in Dialogue() }
        for step in 0...(stepsOf.max() ?? 0) {
            var requests: [GenerationRequest] = [], rows: [Int] = []
            for (i, item) in items.enumerated() where results[i].error == nil && step <= stepsOf[i] {
                do {
                    let tokens = step == 0 ? try dialogues[i].start(try promptText(item), room: room(item, steps: stepsOf[i]), in: self)
                        : try dialogues[i].continue(try ChatTemplate.render(Self.conversation(item, answers: results[i].texts, step: step)), in: self)
                    let seed = step == 0 ? item.seed : SplitMix64.derive(item.seed, UInt64(step))
                    requests.append(GenerationRequest(prompt: tokens, params: SamplingParams(
                        temperature: sampling.temperature, topK: sampling.topK, topP: sampling.topP,
                        maxNewTokens: sampling.maxNewTokens, stopTokens: Set(sampling.stopTokens), seed: seed)))
                    rows.append(i)
                } catch {
                    results[i].error = "\(error)"
                    dialogues[i] = Dialogue()
                }
            }
            if requests.isEmpty { continue }
            let generated = try Generator(model: policy).generate(requests, caches: rows.map { dialogues[$0].cache! }, between: tick)
            for (i, g) in zip(rows, generated) {
                let answer = g.finishReason == .stop ? Array(g.tokens.dropLast()) : g.tokens
                let text = try tokenizer.decode(answer)
                results[i].texts.append(text)
                results[i].truncated.append(g.finishReason == .length)
                results[i].textTokens.append(g.tokens.count)
                if fixed == 0 { results[i].tokens = g.tokens; results[i].logprobs = g.logprobs }
                dialogues[i].answered(text, last: g.finishReason == .length ? g.tokens.last : nil)
                if step == stepsOf[i] { dialogues[i] = Dialogue() }
            }
        }
        return results
    }

    /// Positions a revise item may need beyond its first prompt: each step's turn with the
    /// template's markers, and every answer.
    func room(_ item: StageItem, steps: Int) throws -> Int {
        let turns = try item.steps.prefix(steps).reduce(0) { $0 + (try tokenizer.encode($1)).count + 16 }
        return turns + (steps + 1) * (sampling.maxNewTokens + 1)
    }

    /// One item's conversation on its way through the steps: its KV cache, the text the cache
    /// holds (as the chat template renders it), and a cut-off answer's last token, which
    /// generation never feeds to the cache (a stopped answer's stop token is not needed: the
    /// template writes its own end of turn).
    struct Dialogue {
        var cache: SequenceCache?
        var held = ""
        var pending: Int32?

        /// A fresh cache for `text` and the `room` after it (within the context).
        mutating func start(_ text: String, room: Int, in work: StageWork) throws -> [Int32] {
            let tokens = try work.checked({ try work.tokenizer.encode(text) }, room: 1).get(), context = work.policy.config.contextLength
            cache = work.policy.makeCache(capacity: min(context, tokens.count + room))
            held = text
            pending = nil
            return tokens
        }

        /// The tokens that bring the cache to `rendered`, the whole conversation so far: only what
        /// follows the text it holds. A template that does not render the earlier text as a prefix,
        /// or a cache too small for what comes, starts again from the whole text.
        mutating func `continue`(_ rendered: String, in work: StageWork) throws -> [Int32] {
            let context = work.policy.config.contextLength
            if let cache, rendered.hasPrefix(held) {
                let new = (pending.map { [$0] } ?? []) + (try work.tokenizer.encode(String(rendered.dropFirst(held.count))))
                let length = cache.length + new.count
                if length + 1 > context { throw StageItemError("the conversation has \(length) tokens; with 1 more it does not fit the context of \(context)") }
                if !new.isEmpty && min(length + work.sampling.maxNewTokens, context) <= cache.capacity {
                    held = rendered
                    pending = nil
                    return new
                }
            }
            return try start(rendered, room: work.sampling.maxNewTokens, in: work)
        }

        /// After a step: the cache holds the answer too (but its last token, when it was cut off).
        mutating func answered(_ text: String, last: Int32?) {
            held += text
            pending = last
        }
    }

    /// The log-prob of each option's tokens right after the prompt, under the judge. An item whose
    /// options are one token each (a judge's "A" / "B") needs only its prompt's last logits: one
    /// sequence per item instead of one per option.
    func options(_ items: [StageItem]) throws -> [StageItemResult] {
        let judge = feedback ?? policy
        var results = items.map { StageItemResult(id: $0.id) }
        var samples: [Sample] = [], owners: [Int] = []
        var singles: [(item: Int, prompt: [Int32], options: [Int32])] = []
        for (i, item) in items.enumerated() {
            do {
                let prompt = try promptTokens(item)
                let options = try item.options.map { try tokenizer.encode($0, parseSpecial: false) }
                let longest = options.map(\.count).max() ?? 0
                if let empty = options.firstIndex(where: \.isEmpty) { throw StageItemError("option \(empty + 1) has no tokens") }
                if prompt.count + longest > judge.config.contextLength {
                    throw StageItemError("prompt and option take \(prompt.count + longest) tokens, more than the context of \(judge.config.contextLength)")
                }
                results[i].optionTokens = options.map(\.count)
                if longest == 1 {
                    singles.append((i, prompt, options.map { $0[0] }))
                    continue
                }
                for o in options {
                    samples.append(Sample(promptId: i, index: 0, prompt: prompt, response: o, logprobs: [], policyVersion: 0, seed: 0))
                    owners.append(i)
                }
            } catch {
                results[i].error = "\(error)"
            }
        }
        // One prompt per pass, as a generation's prefill: no pass is long.
        for s in singles {
            let logits = try judge.forward([(judge.makeCache(capacity: s.prompt.count), s.prompt)], outputs: .lastPerSequence)
            logits.withUnsafeBufferPointer { l in
                let norm = VectorMath.logSumExp(l.baseAddress!, l.count)
                results[s.item].optionLogprobs = s.options.map { l[Int($0)] - norm }
            }
            tick()
        }
        let logprobs = try ReferenceLogprobs.compute(judge, samples: samples, between: tick)
        for (i, lp) in zip(owners, logprobs) { results[i].optionLogprobs.append(lp.reduce(0, +)) }
        return results
    }

    /// The raw scores of each item's response to its prompt, as a finished answer (the stop token
    /// closes it, as a generated one is).
    func score(_ items: [StageItem]) throws -> [StageItemResult] {
        guard let scorer else { throw StageItemError("score needs reward models, a judge or rules in the configuration") }
        var results = items.map { StageItemResult(id: $0.id) }
        var samples: [Sample] = [], owners: [Int] = []
        let stop = sampling.stopTokens.first.map { [$0] } ?? []
        for (i, item) in items.enumerated() {
            let response: [Int32]
            do { response = try tokenizer.encode(item.response, parseSpecial: false) + stop } catch {
                results[i].error = "response: \(error)"
                continue
            }
            switch checked({ try promptTokens(item) }, room: response.count) {
            case .failure(let e): results[i].error = e.description
            case .success(let prompt):
                samples.append(Sample(promptId: i, index: 0, prompt: prompt, response: response, logprobs: [], policyVersion: 0, seed: 0))
                owners.append(i)
            }
        }
        let conversations = Dictionary(uniqueKeysWithValues: owners.map { i in
            (i, items[i].messages.isEmpty ? [ChatMessage(role: "user", content: items[i].prompt)] : items[i].messages)
        })
        for (i, s) in zip(owners, try scorer.raw(samples, conversations: conversations, between: tick)) { results[i].scores = s }
        tick()
        return results
    }
}

public struct StageItemError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
