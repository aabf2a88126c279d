import Engine
import Tokenizer

/// Checks a model file's tensors against the config its metadata gives, before any weight is
/// allocated: the engine sizes everything from the config, so the config must describe the tensors
/// that exist, and the readers have already checked those against the bytes of the file.
struct TensorCheck {
    /// Engine tensor name -> file tensor name, for a config.
    let names: (ModelConfig) -> [(String, String)]
    /// The block a file tensor belongs to ("blk.3.attn_q.weight" -> 3), nil for others.
    let block: (String) -> Int?
    /// The metadata key that gives the block count, for messages.
    let blockKey: String

    /// The weights within the machine's memory, no tensor of a block the config does not have, and
    /// every expected tensor present with the shape the config implies. `shape`: a file tensor's
    /// shape (outermost first), nil when absent.
    func check(_ config: ModelConfig, tensorNames: [String], shape: (String) -> [Int]?) throws(FormatError) {
        // 9 tensors per block (12 with biases): a block count beyond the tensors present is refused
        // before a layout of that many blocks is built.
        let perBlock = config.attentionBias ? 12 : 9
        guard config.layers <= tensorNames.count / perBlock else {
            throw FormatError("\(blockKey) is \(config.layers), but the file has only \(tensorNames.count) tensors (\(perBlock) per block)")
        }
        for name in tensorNames.sorted() { // sorted: the same tensor is named whatever the file's order
            if let b = block(name), b >= config.layers {
                throw FormatError("tensor \(shown(name)) belongs to block \(b), but \(blockKey) is \(config.layers)")
            }
        }
        // Before the layout, whose sizes are products of these numbers.
        do { try config.checkFitsInMemory() } catch { throw FormatError(error.description) }
        let layout = ParameterLayout(config: config)
        for (engineName, fileName) in names(config) {
            guard let found = shape(fileName) else { throw FormatError("tensor \(shown(fileName)) is missing from the file") }
            let wanted = layout.slot(engineName)!.shape
            guard found == wanted else {
                throw FormatError("tensor \(shown(fileName)) has shape \(found), the metadata implies \(wanted)")
            }
        }
    }

    /// The number after `prefix` in a tensor name such as "blk.12.ffn_up.weight".
    static func blockNumber(_ name: String, after prefix: String) -> Int? {
        guard name.hasPrefix(prefix) else { return nil }
        return Int(name.dropFirst(prefix.count).prefix { $0.isNumber })
    }
}
