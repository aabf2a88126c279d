import Foundation

/// How well the labeler agrees with pairs whose better answer is known (`charter label --eval`):
/// agreement asked in one order, in both, with one principle and with the ensemble; the judge's
/// position preference; and calibration.
public struct LabelEval {
    public struct Row: Equatable {
        public var name: String
        public var agreed: Int
        public var pairs: Int
        public var share: Double { pairs == 0 ? .nan : Double(agreed) / Double(pairs) }
    }

    public private(set) var rows: [Row] = []
    public private(set) var meanPFirstShown: Double
    /// Expected calibration error of p_a against the known answer, over 10 equal bins of p_a.
    public private(set) var calibrationError: Double
    /// Pairs with a `better` field and no error.
    public private(set) var pairs = 0

    /// A label agrees when it puts more than half its probability on the known better answer.
    public init(plan: LabelPlan, outcome: LabelOutcome) {
        meanPFirstShown = outcome.meanPFirstShown
        var known: [(better: Int, perPrinciple: [[Double]], pa: Double)] = []
        for (p, pair) in plan.pairs.enumerated() {
            guard let better = pair.better, let per = outcome.perPrinciple[p], let pa = outcome.lines[p]["p_a"] as? Double else { continue }
            known.append((better, per, pa))
        }
        pairs = known.count
        func row(_ name: String, _ p: (_ perPrinciple: [[Double]], _ pa: Double) -> Double) -> Row {
            Row(name: name, agreed: known.filter { k in
                let x = p(k.perPrinciple, k.pa)
                return k.better == 0 ? x > 0.5 : x < 0.5
            }.count, pairs: known.count)
        }
        let both = plan.settings.orders == .both, ensemble = plan.settings.principles > 1
        rows.append(row("a shown first, one principle") { per, _ in per[0][0] })
        if both {
            rows.append(row("b shown first, one principle") { per, _ in per[0][1] })
            rows.append(row("both orders, one principle") { per, _ in PairwiseLabel.mean(per[0]) })
        }
        if ensemble {
            rows.append(row("\(both ? "both orders" : "a shown first"), \(plan.settings.principles) principles") { _, pa in pa })
        }
        // Per bin of p_a: how many pairs, the sum of their p_a, and how many of them a is better in.
        var count = [Double](repeating: 0, count: 10), sum = count, aBetter = count
        for k in known {
            let b = min(Int(k.pa * 10), 9)
            count[b] += 1
            sum[b] += k.pa
            if k.better == 0 { aBetter[b] += 1 }
        }
        var error = 0.0
        for b in 0..<10 where count[b] > 0 { error += count[b] / Double(known.count) * abs(sum[b] - aBetter[b]) / count[b] }
        calibrationError = known.isEmpty ? .nan : error
    }

    /// The report as lines of text.
    public var report: [String] {
        ["label eval: \(pairs) pairs with a known better answer"]
            + rows.map { String(format: "  agreement, %@: %d/%d (%.1f%%)", $0.name, $0.agreed, $0.pairs, 100 * $0.share) }
            + [String(format: "  mean P(first shown): %.3f", meanPFirstShown),
               String(format: "  expected calibration error of p_a (10 bins): %.3f", calibrationError)]
    }
}
