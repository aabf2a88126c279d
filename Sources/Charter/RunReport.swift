import Alignment
import Foundation

/// The page `charter report` writes for a `charter train` run folder: stage times, win rates and
/// evaluation per round, the curves of every training stage, the labeler's statistics and sample
/// answers, read from the files the stages left (a run still going or stopped shows what is done).
/// Every number cell has an id (and its exact value) so the page can be checked against its sources.
struct RunReport {
    let folder: String

    /// A training stage's metrics file, relative to its folder (GROUP: each label group's), and its charts.
    static let curves: [Recipe.Stage: (file: String, charts: [[String]])] = [
        .slCAI: ("policy/metrics.jsonl", [["loss", "eval_loss"]]),
        .rewardModels: ("GROUP/metrics.jsonl", [["loss", "eval_loss"], ["eval_accuracy"]]),
        // RL's reward_mean is whitened (about 0); the reward models' raw scores show the progress.
        .rejection: ("metrics.jsonl", [["helpfulness_score_mean", "safety_score_mean", "rule_reward_mean"]]),
        .ppo: ("metrics.jsonl", [["helpfulness_score_mean", "safety_score_mean", "rule_reward_mean"], ["kl"], ["beta"], ["policy_loss"]]),
        .dpo: ("policy/metrics.jsonl", [["loss", "eval_loss"], ["margin", "eval_margin"]]),
    ]
    static let groups = ["helpful", "harmless"]

    init(folder: String) throws {
        guard FileManager.default.fileExists(atPath: "\(folder)/config.yaml") else {
            throw CLIError("\(folder): not a charter train run folder (it has no config.yaml)")
        }
        self.folder = folder
    }

    /// The finished stages, in the order they ran: each one's done.json marker.
    func markers() throws -> [[String: Any]] {
        let rounds = try FileManager.default.contentsOfDirectory(atPath: folder)
            .compactMap { $0.hasPrefix("round-") ? Int($0.dropFirst(6)) : nil }.sorted()
        return try rounds.flatMap { k in
            try Recipe.Stage.allCases.compactMap { stage in
                let path = "\(folder)/round-\(k)/\(stage.rawValue)/done.json"
                return FileManager.default.fileExists(atPath: path) ? try lines(path).first : nil
            }
        }
    }

    func html() throws -> String {
        let done = try markers()
        let final = FileManager.default.fileExists(atPath: "\(folder)/final.json") ? try lines("\(folder)/final.json").first : nil
        var body = "<p>Run folder <code>\(HTML.escape(folder))</code>: \(done.count) stage\(done.count == 1 ? "" : "s") finished; "
        body += final.map { "the trained policy is <code>\(HTML.escape($0["policy"] as? String ?? ""))</code>.</p>\n" } ?? "the run has not finished.</p>\n"
        body += stageTimes(done)
        let evals = try done.filter { $0["stage"] as? String == Recipe.Stage.eval.rawValue }
            .map { m -> (round: Int, summary: [String: Any]) in
                let k = m["round"] as? Int ?? 0
                return (k, try lines("\(folder)/round-\(k)/eval/summary.json").first ?? [:])
            }
        body += winRates(evals) + evaluation(evals)
        body += try trainingCurves(done) + labeler(done) + samples(evals.last)
        return HTML.page(title: "Charter run: \((folder as NSString).lastPathComponent)", body: body)
    }

    // MARK: sections

    func stageTimes(_ done: [[String: Any]]) -> String {
        let rows = done.map { m -> [String] in
            let (k, stage) = (m["round"] as? Int ?? 0, m["stage"] as? String ?? "")
            let notes = m.filter { !["round", "stage", "seconds", "win_rates"].contains($0.key) }.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
            return [HTML.number(Double(k), digits: 0), HTML.text(stage), HTML.number(number(m["seconds"]), digits: 1, id: "time-r\(k)-\(stage)"),
                    HTML.text(notes.joined(separator: ", "))]
        }
        let total = done.compactMap { number($0["seconds"]) }.reduce(0, +)
        return "<h2>Stage times</h2>\n" + HTML.table(["round", "stage", "seconds", "notes"], rows + [[HTML.text(""), HTML.text("all"), HTML.number(total, digits: 1, id: "time-total"), HTML.text("")]])
    }

    func winRates(_ evals: [(round: Int, summary: [String: Any])]) -> String {
        guard !evals.isEmpty else { return "" }
        var rows: [[String]] = [], series: [String: [(x: Double, y: Double)]] = [:]
        for (k, summary) in evals {
            let wins = summary["win_rates"] as? [String: [String: [String: Any]]] ?? [:]
            for against in ["start", "previous"] { for group in Self.groups {
                guard let w = wins[against]?[group] else { continue }
                let id = "r\(k)-\(against)-\(group)"
                rows.append([HTML.number(Double(k), digits: 0), HTML.text(against), HTML.text(group), HTML.number(number(w["win_rate"]), id: "win-\(id)"),
                             HTML.number(number(w["low"]), id: "low-\(id)"), HTML.number(number(w["high"]), id: "high-\(id)"),
                             HTML.number(number(w["mean_p_better"]), id: "meanp-\(id)"), HTML.number(number(w["prompts"]), digits: 0)])
                if let rate = number(w["win_rate"]) { series["\(group) vs \(against)", default: []].append((Double(k), rate)) }
            } }
        }
        let chart = LineChart(title: "win rate of the round's policy", xLabel: "round", series: series.keys.sorted().map { .init(name: $0, points: series[$0]!) })
        return "<h2>Win rates on the held-out prompts</h2>\n<p class=\"note\">Judged by the run's labeler in both orders; a tie counts half; "
            + "the interval is the 95% normal approximation over prompts.</p>\n"
            + HTML.table(["round", "against", "group", "win rate", "95% low", "95% high", "mean P(better)", "prompts"], rows)
            + figure(chart, id: "chart-win-rates")
    }

    func evaluation(_ evals: [(round: Int, summary: [String: Any])]) -> String {
        guard !evals.isEmpty else { return "" }
        let keys = ["mean_tokens", "refusals", "truncated", "reward_helpful", "reward_harmless", "kl_to_reference"]
        var rows: [[String]] = []
        for (k, summary) in evals {
            let policies = summary["policies"] as? [String: [String: Any]] ?? [:]
            for name in ["start", "previous", "policy"] {
                guard let p = policies[name] else { continue }
                rows.append([HTML.number(Double(k), digits: 0), HTML.text(name), HTML.text("\(p["model"] ?? "")")]
                    + keys.map { HTML.number(number(p[$0]), digits: $0 == "mean_tokens" ? 1 : 3, id: "eval-r\(k)-\(name)-\($0)") })
            }
        }
        return "<h2>Answers on the held-out prompts</h2>\n<p class=\"note\">Mean response tokens, share of refusals and of answers cut off "
            + "at max_new_tokens (checks on evasiveness and reward hacking), mean reward-model scores, and KL to the reference "
            + "(per answer, the sum over its tokens of log p_policy - log p_reference, as PPO measures it).</p>\n"
            + HTML.table(["round", "policy", "model", "mean tokens", "refusals", "truncated", "reward helpful", "reward harmless", "KL to reference"], rows)
    }

    func trainingCurves(_ done: [[String: Any]]) throws -> String {
        var figures: [String] = []
        for m in done {
            guard let stage = Recipe.Stage(rawValue: m["stage"] as? String ?? ""), let spec = Self.curves[stage] else { continue }
            let k = m["round"] as? Int ?? 0
            let groups = spec.file.contains("GROUP") ? Self.groups : [""]
            for group in groups {
                let path = "\(folder)/round-\(k)/\(stage.rawValue)/\(spec.file.replacingOccurrences(of: "GROUP", with: group))"
                guard FileManager.default.fileExists(atPath: path) else { continue }
                let metrics = try lines(path)
                for keys in spec.charts {
                    let name = "round \(k) \(stage.rawValue)\(group.isEmpty ? "" : " (\(group))"): \(keys.joined(separator: ", "))"
                    let chart = LineChart(title: name, xLabel: stage == .rejection || stage == .ppo ? "iteration" : "step",
                                          series: keys.map { .init(name: $0, points: Self.points(metrics, key: $0)) })
                    figures.append(figure(chart, id: "chart-r\(k)-\(stage.rawValue)\(group.isEmpty ? "" : "-\(group)")-\(keys[0])"))
                }
            }
        }
        guard !figures.isEmpty else { return "" }
        return "<h2>Training curves</h2>\n<div class=\"charts\">\n" + figures.joined(separator: "\n") + "\n</div>\n"
    }

    func labeler(_ done: [[String: Any]]) throws -> String {
        var rows: [[String]] = [], agreement: [[String]] = []
        for m in done where m["stage"] as? String == Recipe.Stage.label.rawValue {
            let k = m["round"] as? Int ?? 0
            var sets: [String: [[String: Any]]] = [:]
            for group in Self.groups {
                let path = "\(folder)/round-\(k)/label/\(group).jsonl"
                guard FileManager.default.fileExists(atPath: path) else { continue }
                let labels = try lines(path)
                sets[group] = labels
                let s = LabelStats(lines: labels), id = "label-r\(k)-\(group)"
                rows.append([HTML.number(Double(k), digits: 0), HTML.text(group), HTML.number(Double(s.pairs), digits: 0), HTML.number(Double(s.errors), digits: 0),
                             HTML.number(s.meanPFirstShown, id: "\(id)-first"), HTML.number(s.orderDisagreement.isNaN ? s.meanPFirstShown : 0.5),
                             HTML.number(s.orderDisagreement, id: "\(id)-disagree"), HTML.number(s.meanEntropyBits, id: "\(id)-entropy"),
                             HTML.number(s.principleAgreement, id: "\(id)-principles")])
            }
            if let a = sets["helpful"], let b = sets["harmless"] {
                let (pairs, share) = LabelStats.agreement(a, b)
                agreement.append([HTML.number(Double(k), digits: 0), HTML.number(Double(pairs), digits: 0), HTML.number(share, id: "agree-r\(k)")])
            }
        }
        guard !rows.isEmpty else { return "" }
        return "<h2>The labeler</h2>\n<p class=\"note\">P(first shown): how much the judge prefers whichever answer it sees first, as asked "
            + "and after averaging the two orders (0.5 is no position bias); orders disagree: pairs whose two orders pick different answers; "
            + "entropy: of each label's P(a), in bits (1 is a coin flip); principles agree: of two principles asked about one pair, "
            + "how often they pick the same answer (with recipe.label.principles of 2 or more).</p>\n"
            + HTML.table(["round", "group", "pairs", "errors", "P(first shown), asked", "after averaging orders", "orders disagree", "entropy (bits)", "principles agree"], rows)
            + (agreement.isEmpty ? "" : "<p>Agreement between the helpful and the harmless principles (same answer chosen):</p>\n"
                + HTML.table(["round", "pairs", "agreement"], agreement))
    }

    func samples(_ eval: (round: Int, summary: [String: Any])?) -> String {
        guard let eval, let samples = eval.summary["samples"] as? [[String: Any]], !samples.isEmpty else { return "" }
        let columns = ["start", "previous", "policy"].filter { c in samples.contains { $0[c] != nil } }
        let rows = samples.map { s in
            ["<td class=\"sample\">\(HTML.escape(s["prompt"] as? String ?? ""))</td>"] + columns.map { "<td class=\"sample\">\(HTML.escape(s[$0] as? String ?? ""))</td>" }
        }
        return "<h2>Sample answers, round \(eval.round)</h2>\n" + HTML.table(["prompt"] + columns, rows)
    }

    // MARK: helpers

    func figure(_ chart: LineChart, id: String) -> String {
        let svg = chart.svg()
        return svg.isEmpty ? "" : "<figure id=\"\(HTML.escape(id))\">\(svg)</figure>"
    }

    /// The lines of a JSON-lines file, a bad one named by its path.
    func lines(_ path: String) throws -> [[String: Any]] {
        do { return try JSONLines.read(path).map(\.object) } catch let e as DataError {
            // JSONLines names the file only; the report names which stage's file it is.
            throw CLIError(e.description.hasPrefix(path) ? e.description : "\((path as NSString).deletingLastPathComponent)/\(e.description)")
        }
    }

    func number(_ value: Any?) -> Double? { (value as? NSNumber)?.doubleValue }

    /// (x, y) for each metrics line that has `key`: x is the line's iteration or step, else its index.
    static func points(_ metrics: [[String: Any]], key: String) -> [(x: Double, y: Double)] {
        metrics.enumerated().compactMap { i, line in
            guard let y = (line[key] as? NSNumber)?.doubleValue, y.isFinite else { return nil }
            let x = (line["iteration"] as? NSNumber ?? line["step"] as? NSNumber)?.doubleValue ?? Double(i)
            return (x, y)
        }
    }
}
