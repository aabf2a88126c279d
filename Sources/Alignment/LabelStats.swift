import Foundation

/// What a label file (the labeler's output, docs/labeler.md) says about the judge: how much it
/// prefers whichever answer is shown first, how often the two orders disagree, and how sure its
/// labels are. Read by `charter report`.
public struct LabelStats {
    /// Pairs in the file, and those the judge could not answer.
    public var pairs = 0, errors = 0
    /// Mean P(the answer shown first is better), over every order asked: 0.5 for a judge without
    /// position bias. Averaging the two orders makes each label's own position bias exactly 0.
    public var meanPFirstShown = Double.nan
    /// Share of pairs whose two orders pick different answers (labels asked in both orders only).
    public var orderDisagreement = Double.nan
    /// Mean binary entropy of the labels' p_a, in bits: 1 is a coin flip, 0 a sure label.
    public var meanEntropyBits = Double.nan
    /// Over the pairs asked under several principles: the share of two-principle combinations
    /// that pick the same answer (a tie is a side of its own). NaN when no pair had two.
    public var principleAgreement = Double.nan

    public init(lines: [[String: Any]]) {
        var firstShown: [Double] = [], disagree = 0, bothOrders = 0, entropy: [Double] = [], combinations = 0, agreeing = 0
        for line in lines {
            pairs += 1
            guard line["error"] == nil, let pa = (line["p_a"] as? NSNumber)?.doubleValue,
                  let orders = (line["p_a_orders"] as? [NSNumber])?.map(\.doubleValue), !orders.isEmpty else { errors += 1; continue }
            // Order 0 shows a first, order 1 shows b first.
            firstShown.append(orders[0])
            if orders.count > 1 {
                firstShown.append(1 - orders[1])
                bothOrders += 1
                if (orders[0] > 0.5) != (orders[1] > 0.5) { disagree += 1 }
            }
            entropy.append(Self.entropyBits(pa))
            let sides = ((line["p_a_principles"] as? [NSNumber]) ?? []).map { p in p.doubleValue > 0.5 ? 1 : p.doubleValue < 0.5 ? -1 : 0 }
            for i in sides.indices { for j in sides.indices where j > i { combinations += 1; agreeing += sides[i] == sides[j] ? 1 : 0 } }
        }
        if combinations > 0 { principleAgreement = Double(agreeing) / Double(combinations) }
        if !firstShown.isEmpty { meanPFirstShown = PairwiseLabel.mean(firstShown) }
        if bothOrders > 0 { orderDisagreement = Double(disagree) / Double(bothOrders) }
        if !entropy.isEmpty { meanEntropyBits = PairwiseLabel.mean(entropy) }
    }

    public static func entropyBits(_ p: Double) -> Double {
        p <= 0 || p >= 1 ? 0 : -(p * log2(p) + (1 - p) * log2(1 - p))
    }

    /// Two label sets over the same pairs (matched by id): how many pairs both labelled, and the
    /// share of them where both chose the same answer.
    public static func agreement(_ a: [[String: Any]], _ b: [[String: Any]]) -> (pairs: Int, share: Double) {
        func chosen(_ lines: [[String: Any]]) -> [String: String] {
            Dictionary(lines.compactMap { l in
                guard l["error"] == nil, let id = l["id"] as? String, let c = l["chosen"] as? String else { return nil }
                return (id, c)
            }) { first, _ in first }
        }
        let x = chosen(a), y = chosen(b)
        let both = x.keys.filter { y[$0] != nil }
        guard !both.isEmpty else { return (0, .nan) }
        return (both.count, Double(both.filter { x[$0] == y[$0] }.count) / Double(both.count))
    }
}
