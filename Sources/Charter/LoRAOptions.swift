import ArgumentParser
import Foundation
import Engine

/// `--lora-rank`, `--lora-alpha`, `--lora-targets`: shared by the commands that fine-tune.
struct LoRAOptions: ParsableArguments {
    @Option(help: "Train rank-r LoRA adapters instead of every weight (the saved model is merged).") var loraRank: Int?
    @Option(help: "LoRA alpha (default 2 x rank); adapters are scaled by alpha / rank.") var loraAlpha: Float?
    @Option(help: "Comma-separated projections to adapt: q,k,v,o,gate,up,down.") var loraTargets = "q,k,v,o,gate,up,down"

    func validate() throws {
        if let r = loraRank, r < 1 { throw ValidationError("--lora-rank must be at least 1, found \(r)") }
        _ = try config()
    }

    /// nil without --lora-rank.
    func config() throws -> LoRAConfig? {
        guard let rank = loraRank else { return nil }
        let targets = try loraTargets.split(separator: ",").map { name -> LoRAConfig.Target in
            guard let t = LoRAConfig.Target(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--lora-targets: \"\(name)\" is not one of q, k, v, o, gate, up, down")
            }
            return t
        }
        return LoRAConfig(rank: rank, alpha: loraAlpha, targets: targets)
    }
}
