import Engine
import Foundation

/// LoRA adapters in the layout Hugging Face PEFT saves and loads: adapter_model.safetensors with
/// one lora_A (r, in) and lora_B (out, r) weight per adapted projection, named after the module,
/// and adapter_config.json. PEFT's scale is lora_alpha / r, as ours.
public enum PEFTAdapters {
    static let modules: [LoRAConfig.Target: String] = [
        .q: "self_attn.q_proj", .k: "self_attn.k_proj", .v: "self_attn.v_proj", .o: "self_attn.o_proj",
        .gate: "mlp.gate_proj", .up: "mlp.up_proj", .down: "mlp.down_proj",
    ]

    /// The tensor name PEFT gives one half (A or B) of an adapter.
    public static func name(layer: Int, _ target: LoRAConfig.Target, _ half: String) -> String {
        "base_model.model.model.layers.\(layer).\(modules[target]!).lora_\(half).weight"
    }

    /// Writes adapter_model.safetensors and adapter_config.json into `folder`. `base`: the base
    /// model's path or name, which PEFT's loader is pointed at.
    public static func write(_ lora: LoRAAdapters, base: String, into folder: URL) throws {
        let p = UnsafeBufferPointer(lora.storage), r = lora.config.rank
        let tensors = lora.slots.flatMap { s in [
            (name: name(layer: s.layer, s.target, "A"), shape: [r, s.inDim], values: UnsafeBufferPointer(rebasing: p[s.a ..< s.a + r * s.inDim])),
            (name: name(layer: s.layer, s.target, "B"), shape: [s.outDim, r], values: UnsafeBufferPointer(rebasing: p[s.b ..< s.b + s.outDim * r])),
        ] }
        try SafetensorsFile.encode(tensors, metadata: ["format": "pt"]).write(to: folder.appendingPathComponent("adapter_model.safetensors"))
        let config: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base,
            "r": r, "lora_alpha": Double(lora.config.alpha), "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": false,
            "target_modules": lora.config.targets.map { String(modules[$0]!.split(separator: ".").last!) },
            "inference_mode": true, "init_lora_weights": true, "use_rslora": false, "use_dora": false,
            "modules_to_save": NSNull(), "layers_to_transform": NSNull(), "layers_pattern": NSNull(), "rank_pattern": [String: Any](),
            "alpha_pattern": [String: Any](), "revision": NSNull(),
        ]
        try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
            .write(to: folder.appendingPathComponent("adapter_config.json"))
    }

    /// Reads adapter_model.safetensors of `folder` into `lora`, which must have the same shape.
    public static func read(_ folder: URL, into lora: LoRAAdapters) throws {
        let file = try SafetensorsFile(url: folder.appendingPathComponent("adapter_model.safetensors"))
        let r = lora.config.rank
        for s in lora.slots {
            for (half, offset, shape) in [("A", s.a, [r, s.inDim]), ("B", s.b, [s.outDim, r])] {
                let key = name(layer: s.layer, s.target, half)
                guard let t = file.tensors[key], t.shape == shape else {
                    throw FormatError("adapter_model.safetensors: \(key) is missing or not of shape \(shape)")
                }
                file.read(t, into: lora.storage.baseAddress! + offset)
            }
        }
        guard file.tensors.count == 2 * lora.slots.count else {
            throw FormatError("adapter_model.safetensors holds \(file.tensors.count) tensors; these adapters have \(2 * lora.slots.count)")
        }
    }
}
